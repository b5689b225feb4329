package bridge

// Calls on a line: placing and routing them, taking incoming ones,
// translating the SIP side's events, and releasing them.

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// dial routes a collected number (RFC 3435 digit map already matched).
func (l *line) dial(number string) {
	rules := l.b.cfg.Rules.Load()
	dialled := number
	number = l.rule.ToSIP.Apply(number)
	rt := rules.RouteOutbound(number)
	c := &call{id: l.b.newCallID(), number: number, dialled: dialled, start: time.Now(), origin: newOrigin()}
	switch {
	case rt == nil:
		l.log.WithField("number", number).Info("no route")
		l.playTone("L/ro")
	case rt.Local:
		c.direction = "local"
		l.localCall(c, number)
	case rt.Peer != nil:
		c.direction = "outgoing"
		c.fallback = rt.LocalFallback
		if l.b.peerDown(rt.Peer, l) {
			// Known unreachable (OPTIONS probes, registrations, the last
			// calls): do not leave the caller in silence for Timer B.
			if c.fallback && l.b.lineByUser(c.number) != nil {
				l.log.WithFields(logrus.Fields{"number": c.number, "peer": rt.Peer.Name}).Warn("SIP peer down, switching locally")
				c.direction = "local"
				l.localCall(c, number)
				return
			}
			l.log.WithFields(logrus.Fields{"number": c.number, "peer": rt.Peer.Name}).Warn("SIP peer down, congestion tone")
			l.playTone("G/cg")
			return
		}
		l.sipCall(c, rt.Peer)
	case rt.Trunk != nil:
		c.direction = "local"
		l.trunkCall(c, rt.Trunk) // linetrunk.go
	default:
		l.playTone("L/ro")
	}
}

func (l *line) sipCall(c *call, peer *mapping.PeerRule) {
	if l.b.cfg.SIP == nil {
		l.playTone("L/ro")
		return
	}
	l.adopt(c)
	l.state = stCalling
	// Receive-only until the answer (early media may arrive), watching
	// the hook; the dial tone stops with the empty signal list.
	if err := l.createConnection(c, mgcp.ModeRecvOnly, nil); err != nil {
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	offer, err := ToSIP(c.gwSDP, &c.origin, l.rule.Gateway.Codecs, SendRecv)
	if err != nil {
		l.failCall(c, err.Error(), "L/ro")
		return
	}
	c.codecs = offer.Codecs
	ctx, cancel := context.WithCancel(l.ctx)
	c.cancel = cancel
	from := l.account()
	if c.from != nil {
		from = *c.from // a trunk-originated call (cas.go)
	}
	d, err := l.b.cfg.SIP.Invite(ctx, sip.Call{From: from, To: c.number, Peer: net.JoinHostPort(peer.Host, strconv.Itoa(peer.Port)),
		Transport: peer.Transport, SDP: offer.SDP, Headers: c.headers, PRACK: prackMode(peer), FromHost: c.fromHost})
	if err != nil {
		l.failCall(c, err.Error(), "L/ro")
		return
	}
	c.dialog = d
	c.peerRule = peer
	l.forward(c)
	if t := l.b.cfg.NoAnswerTimeout; t > 0 {
		l.callAfter(c, t, func() {
			if l.call == c && l.state == stCalling {
				c.result = "no answer"
				l.endCall(c.result, false) // CANCEL
				l.settle("L/ro")
			}
		})
	}
}

// failCall ends the line's current call c that could not be set up and
// plays tone to the caller (or re-arms an on-hook phone).
func (l *line) failCall(c *call, why, tone string) {
	c.result = why
	l.endCallOf(c, why, false)
	l.settle(tone)
}

// forward passes a dialog's events to the line's goroutine, in order,
// through the dialog's route: a SIP leg handed over to another line
// (localxfer.go) takes its events with it.
func (l *line) forward(c *call) {
	d := c.dialog
	l.b.dialogs.Store(d, l)
	r := &dialogRoute{d: d, owner: l, c: c}
	c.route = r
	go func() {
		// A call placed again (retry.go) has a new dialog: what the old
		// one still reports is not the call's any more (drain checks
		// c.dialog).
		for e := range d.Events() {
			r.push(func(l *line, c *call) { l.onSIP(c, e) })
		}
		r.push(func(l *line, c *call) { l.onSIPEnd(c) })
	}()
}

// dialogRoute queues a dialog's events for the line that owns its call.
// Only the owning line changes the owner (handTo, on its goroutine), so
// a drain that finds itself the owner may touch the call.
type dialogRoute struct {
	d     *sip.Dialog
	mu    sync.Mutex
	owner *line
	c     *call
	q     []func(*line, *call)
}

// push queues one event and asks the owner to run it.
func (r *dialogRoute) push(f func(*line, *call)) {
	r.mu.Lock()
	r.q = append(r.q, f)
	owner := r.owner
	r.mu.Unlock()
	owner.postWait(func() { r.drain(owner) })
}

// drain runs the queued events on l's goroutine while l owns the dialog;
// once it is handed over, the new owner drains the rest (handTo posts
// that drain behind the hand-over itself).
func (r *dialogRoute) drain(l *line) {
	for range 1 << 16 {
		r.mu.Lock()
		if r.owner != l || len(r.q) == 0 {
			r.mu.Unlock()
			return
		}
		f, c := r.q[0], r.c
		r.q[0] = nil
		r.q = r.q[1:]
		r.mu.Unlock()
		if c.dialog == r.d {
			f(l, c)
		}
	}
}

// handTo makes line to and its call c the owner of the dialog's events;
// run on the current owner's goroutine after it posted to the hand-over.
func (r *dialogRoute) handTo(to *line, c *call) {
	r.mu.Lock()
	r.owner, r.c = to, c
	r.mu.Unlock()
	to.postWait(func() { r.drain(to) })
}

// ---- incoming ----

func (l *line) onInvite(d *sip.Dialog, done chan struct{}) {
	if !l.b.accepting(l.rule.Gateway) {
		_ = d.Reject(480, "Temporarily Unavailable")
		close(done)
		return
	}
	if !l.free() {
		if l.canWait() {
			l.offerWaiting(d, done)
			return
		}
		_ = d.Reject(486, "Busy Here")
		close(done)
		return
	}
	l.ringFor(d, done, nil)
}

// onHuntInvite: a hunt group (or trunk group) offers a call to this line,
// which takes it (taken <- true) when idle and its gateway creates the
// connection; otherwise (busy, or the CRCX refused: a 401 says the phone
// went off hook to dial) the group tries its next line.
func (l *line) onHuntInvite(d *sip.Dialog, done chan struct{}, taken chan<- bool) {
	if !l.free() || !l.b.accepting(l.rule.Gateway) {
		taken <- false
		return
	}
	l.ringFor(d, done, taken)
}

// free reports an idle line with no call at all (a held call waiting for
// the outcome of its transfer makes the line busy).
// A CAS channel whose far-end release is not completed yet, or that waits
// for the report of the far end's seizure (cas.go), is not free.
func (l *line) free() bool {
	return l.state == stIdle && l.call == nil && l.other == nil && !l.owesRLC && l.seized == ""
}

// ringFor rings the idle line (or, on a trunk channel, answers) for an
// incoming call. With taken, a failure before the phone rings is reported
// there and the dialog left for the next line.
func (l *line) ringFor(d *sip.Dialog, done chan struct{}, taken chan<- bool) {
	c, remote, err := l.newIncoming(d)
	if err != nil {
		if taken != nil {
			taken <- false
			return
		}
		_ = d.Reject(488, "Not Acceptable Here")
		close(done)
		return
	}
	c.done = done
	l.adopt(c)
	l.state = stRinging
	if l.trunk == nil {
		c.ring = l.ringSignals(d)
	}
	if err := l.createConnection(c, mgcp.ModeRecvOnly, remote); err != nil {
		if taken != nil {
			c.dialog, c.done = nil, nil // not this line's to answer
			taken <- false
		}
		c.status, c.reason = StatusForMGCP(err)
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	if l.cas() != "" {
		l.casSeize(c, taken)
		return
	}
	if taken != nil {
		taken <- true
	}
	if l.trunk != nil {
		l.forward(c)
		l.answer()
		return
	}
	_ = d.Ring()
	l.forward(c)
	l.callAfter(c, l.b.cfg.RingTimeout, func() {
		if l.state == stRinging && l.call == c {
			c.status, c.reason = 480, "Temporarily Unavailable"
			l.failCall(c, "no answer", "L/ro")
		}
	})
}

// newOrigin starts the o= line mgsip shows the SIP side for a call.
func newOrigin() Origin {
	return Origin{SessionID: uint64(time.Now().UnixNano() & 0x7fffffff), Version: 1}
}

// adopt makes c the line's current call.
func (l *line) adopt(c *call) {
	l.gen++
	c.gen = l.gen
	l.call = c
	l.count(c)
}

// count counts c among the active calls (once; finish uncounts it).
func (l *line) count(c *call) {
	if !c.counted {
		c.counted = true
		l.b.active.Add(1)
	}
}

// newIncoming builds this line's leg of an incoming call: the far end's
// description restricted to the gateway's codecs, the caller's number, a
// fresh origin.
func (l *line) newIncoming(d *sip.Dialog) (*call, []byte, error) {
	tr, err := ToGateway(d.RemoteSDP(), l.rule.Gateway.Codecs)
	if err != nil {
		return nil, nil, err
	}
	c := &call{id: l.b.newCallID(), direction: "incoming", dialog: d, start: time.Now(), codecs: tr.Codecs, origin: newOrigin()}
	c.number, c.name = callerOf(d)
	return c, tr.SDP, nil
}

// incomingOr488 is newIncoming refusing a description the gateway cannot
// take with 488 (and releasing ServeDialog through done).
func (l *line) incomingOr488(d *sip.Dialog, done chan struct{}) (*call, []byte, bool) {
	c, remote, err := l.newIncoming(d)
	if err != nil {
		_ = d.Reject(488, "Not Acceptable Here")
		close(done)
		return nil, nil, false
	}
	c.done = done
	return c, remote, true
}

// callerOf returns the caller's number and name: P-Asserted-Identity
// first, else From (RFC 3325).
func callerOf(d *sip.Dialog) (number, name string) {
	number, name = d.FromUser(), d.FromName()
	if pai := d.Header("P-Asserted-Identity"); pai != "" {
		if t, _, err := sip.ParseReferTo(pai); err == nil && t.User != "" {
			number = t.User
			if i := strings.Index(pai, "<"); i > 0 {
				if n := strings.Trim(strings.TrimSpace(pai[:i]), `"`); n != "" {
					name = n
				}
			}
		}
	}
	return number, name
}

// ringSignals rings the phone with caller id (RFC 3660 L/ci(time, number,
// name)) when the line has it.
func (l *line) ringSignals(d *sip.Dialog) []mgcp.Event {
	ring := signal("L/rg")
	if r := distinctiveRing(d.Header("Alert-Info")); r != "" {
		ring = signal(r)
	}
	number, name := callerOf(d)
	return append([]mgcp.Event{ring}, l.callerID(number, name)...)
}

// callerID is the caller id signal for number and name (RFC 3660 §2.4
// L/ci), or nothing when the line has caller id off or its gateway's
// quirk profile says it cannot send it (osmo-mgw, profiles with
// caller_id: false).
func (l *line) callerID(number, name string) []mgcp.Event {
	if !l.rule.Features.CallerID || !l.rule.Gateway.Quirks.CallerID {
		return nil
	}
	return []mgcp.Event{callerIDSignal(number, name)}
}

// callerIDOf is the caller id of the far party of c: the caller of an
// incoming or local call, the number dialled for an outgoing one.
func (l *line) callerIDOf(c *call) []mgcp.Event { return l.callerID(c.number, c.name) }

// distinctiveRing maps an Alert-Info naming a ring pattern (Asterisk and
// most PBXes send "info=ring2", "Bellcore-dr3" or "<urn:alert:...>;info=r4")
// to the line package's distinctive ringing r1..r7 (RFC 3660 §2.4); ""
// keeps the normal ring.
func distinctiveRing(alertInfo string) string {
	v := strings.ToLower(alertInfo)
	for _, key := range []string{"bellcore-dr", "ring", "info=r"} {
		if i := strings.LastIndex(v, key); i >= 0 && i+len(key) < len(v) {
			if c := v[i+len(key)]; c >= '1' && c <= '7' {
				return "L/r" + string(c)
			}
		}
	}
	return ""
}

// callerIDSignal is L/ci(time, number, name) (RFC 3660 §2.4): the time
// as MM/DD/HH/MM, number and name as quoted strings.
func callerIDSignal(number, name string) mgcp.Event {
	return signal("L/ci", time.Now().Format("01/02/15/04"), mgcp.Quote(number), mgcp.Quote(name))
}

// answer: the phone went off hook while ringing.
func (l *line) answer() {
	c := l.call
	if c == nil {
		l.settle("L/ro")
		return
	}
	var answer []byte
	if c.peer == nil {
		tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, SendRecv)
		if err != nil {
			c.status, c.reason = 488, "Not Acceptable Here"
			l.failCall(c, err.Error(), "L/ro")
			return
		}
		answer = tr.SDP
	}
	l.gen++
	c.gen = l.gen
	l.state = stConnected
	if err := l.modifyConnection(c, mgcp.ModeSendRecv, nil); err != nil {
		c.status, c.reason = StatusForMGCP(err)
		l.failCall(c, failedWhy("MDCX", err), "L/ro")
		return
	}
	l.markAnswered(c)
	if c.peer != nil {
		peer, id := c.peer, c.lid()
		peer.postWait(func() { peer.onLocalAnswered(id) })
		return
	}
	d := c.dialog
	// In order with what follows in the dialog: a hang-up right after the
	// answer (a trunk releasing at once) sends its BYE after the 200 was
	// acknowledged, not before.
	l.inOrder(c, func() {
		if err := d.Answer(answer); err != nil {
			l.log.WithError(err).Info("answer not acknowledged")
		}
	})
}

// ---- SIP events ----

func (l *line) onSIP(c *call, e sip.Event) {
	if c.ended {
		return
	}
	if c.xferOf != nil {
		l.onTransferLeg(c, e)
		return
	}
	if c.confFocus || c.confParty || c.confLeg {
		l.onPBXConf(c, e)
		return
	}
	if e.Kind == sip.EventAnswered && c.answerInAck {
		l.takeAckAnswer(c, e) // replaces.go
		return
	}
	if l.call != c {
		if l.other == c {
			l.onOtherSIP(c, e)
		}
		return
	}
	switch e.Kind {
	case sip.EventRinging:
		l.b.notePeer(c.peerRule, true)
		if l.state == stCalling {
			c.ringback = true
		}
	case sip.EventProgress:
		l.b.notePeer(c.peerRule, true)
		if tr, err := ToGateway(e.SDP, l.rule.Gateway.Codecs); err == nil && l.state == stCalling {
			c.ringback = false // early media: the far end plays what is heard
			_ = l.modifyConnection(c, mgcp.ModeRecvOnly, tr.SDP)
		}
	case sip.EventAnswered:
		if c.dialog.Inbound {
			return // the ACK of our 200
		}
		l.b.notePeer(c.peerRule, true)
		tr, err := ToGateway(e.SDP, l.rule.Gateway.Codecs)
		if err != nil {
			l.log.WithError(err).Warn("answer SDP unusable")
			c.answered = time.Now() // so that it gets a BYE
			l.failCall(c, "bad answer SDP", "L/ro")
			return
		}
		l.state = stConnected
		c.ringback = false
		l.markAnswered(c)
		if err := l.modifyConnection(c, tr.Mode, tr.SDP); err != nil {
			l.failCall(c, failedWhy("MDCX", err), "L/ro")
		}
	case sip.EventFailed:
		if l.retryInvite(c, e) {
			return
		}
		c.result = strconv.Itoa(e.Status) + " " + e.Reason
		c.sipStatus = e.Status
		if e.Status == 0 {
			// No answer at all: Timer B, which RFC 3261 §8.1.3.1 has the
			// user agent treat as a 408.
			c.sipStatus = 408
		}
		if !c.dialog.Inbound {
			// Only silence means the peer is gone; a 503 is an answer.
			l.b.notePeer(c.peerRule, e.Status != 0 && e.Status != 408)
		}
		if c.fallback && !c.dialog.Inbound && unreachable(e.Status) && l.b.lineByUser(c.number) != nil {
			// Survivability: the PBX is down, the number is one of ours.
			l.log.WithFields(logrus.Fields{"number": c.number, "status": e.Status}).Warn("SIP peer unreachable, switching locally")
			c.result = "peer unreachable, switched locally"
			l.endCall(c.result, true)
			lc := &call{id: l.b.newCallID(), number: c.number, direction: "local", start: time.Now()}
			l.state = stDialing
			l.localCall(lc, c.number)
			return
		}
		l.endCall(c.result, true)
		l.settle(ToneForStatus(e.Status))
	case sip.EventCancelled:
		c.result = "cancelled"
		l.endCall("cancelled", true)
		l.settle("L/ro")
	case sip.EventBye:
		if c.xfer != nil {
			// The transferor hung up after its REFER: the phone's
			// connection waits for the new call.
			c.gone = true
			return
		}
		c.result = "far end hung up"
		if c.dialog.Inbound && c.answered.IsZero() {
			// A BYE before our answer (RFC 3261 §15.1.2): the INVITE
			// still gets its final answer.
			c.status, c.reason = 487, "Request Terminated"
			l.endCall(c.result, false)
			l.settle("L/ro")
			return
		}
		l.endCall("far end hung up", true)
		if l.other != nil {
			l.afterActiveEnded(!l.offHook)
			return
		}
		l.settle("L/ro")
	case sip.EventReinvite, sip.EventUpdate:
		l.answerOffer(c, e)
	case sip.EventInfo:
		if dg := dtmfDigit(e.ContentType, e.Body); dg != "" && l.trunk == nil {
			l.oneShot = append(l.oneShot, signal("D/"+dg))
		}
	case sip.EventRefer:
		// Acted on when the gate accepted it (referGate).
	}
}

// answerOffer answers a re-INVITE or UPDATE of a talking call: the new
// media go to the gateway (MDCX with the mirrored mode; confrnce while
// the call is in a three-way call), the gateway's SDP back.
func (l *line) answerOffer(c *call, e sip.Event) {
	tr, err := ToGateway(e.SDP, l.rule.Gateway.Codecs)
	if err != nil {
		_ = c.dialog.RejectReinvite(488, "Not Acceptable Here")
		return
	}
	if err := l.modifyConnection(c, l.connMode(c, tr.Mode), tr.SDP); err != nil {
		_ = c.dialog.RejectReinvite(500, "Server Internal Error")
		return
	}
	ans, err := ToSIP(c.gwSDP, &c.origin, tr.Codecs, mirror(tr.Direction))
	if err != nil {
		_ = c.dialog.RejectReinvite(488, "Not Acceptable Here")
		return
	}
	_ = c.dialog.AcceptReinvite(ans.SDP)
}

// unreachable reports failures that mean the peer is not there: no
// answer at all (0, 408) or 503.
func unreachable(status int) bool { return status == 0 || status == 408 || status == 503 }

// mirror is the direction answering remote: what it sends we receive.
func mirror(remote Direction) Direction {
	switch remote {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	}
	return remote
}

// onSIPEnd: the dialog is over. A call still holding it (the dialog
// ended without an event this line acted on) is released.
func (l *line) onSIPEnd(c *call) {
	if c.ended {
		return
	}
	if c.confFocus || c.confParty || c.confLeg {
		l.onPBXConf(c, sip.Event{Kind: sip.EventBye})
		return
	}
	if c.xferOf != nil {
		if x := c.xferOf; x.xfer == c {
			l.transferLegFailed(x, c, 487, "Request Terminated", true)
		}
		return
	}
	switch c {
	case l.call:
		if c.fork != nil {
			return
		}
		if c.xfer != nil {
			c.gone = true // see EventBye
			return
		}
		if c.result == "" {
			c.result = "dialog ended"
		}
		l.endCall(c.result, true)
		if l.other != nil {
			l.afterActiveEnded(!l.offHook)
			return
		}
		l.settle("L/ro")
	case l.other:
		l.endCallOf(c, "dialog ended", true)
	}
}

// dtmfDigit reads a digit from an INFO body (application/dtmf-relay
// "Signal=5" or application/dtmf "5").
func dtmfDigit(contentType string, body []byte) string {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	s := strings.TrimSpace(string(body))
	if strings.HasPrefix(ct, "application/dtmf-relay") {
		for _, ln := range strings.Split(s, "\n") {
			k, v, ok := strings.Cut(ln, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "Signal") {
				s = strings.TrimSpace(v)
				break
			}
		}
	}
	if len(s) == 1 && strings.Contains("0123456789*#ABCD", strings.ToUpper(s)) {
		return strings.ToUpper(s)
	}
	return ""
}

// ---- release ----

// endCall ends the current call on both sides.
func (l *line) endCall(why string, remoteEnded bool) {
	l.endCallOf(l.call, why, remoteEnded)
}

// endCallOf is the one teardown of a call, idempotent: the SIP side (BYE,
// CANCEL, a final answer to an unanswered INVITE, or nothing when the far
// end ended it), the other line of a local call, and the MGCP connection,
// whose DLCX goes once the line has settled in its next state (flush), so
// that it can carry that state's request.
func (l *line) endCallOf(c *call, why string, remoteEnded bool) {
	if c == nil || c.ended {
		return
	}
	c.ended = true
	for _, t := range c.timers {
		t.stop()
	}
	c.timers = nil
	if c.stopOffers != nil {
		c.stopOffers() // a pending re-INVITE is abandoned: the BYE need not wait for it
	}
	switch c {
	case l.call:
		l.call = nil
	case l.other:
		l.other = nil
		if c.waiting && c.answered.IsZero() && l.trunk == nil {
			// Its waiting tone may still play: a one-shot signal is not
			// part of the state's request, so ask again (the DLCX carries
			// it) with a signal list that leaves L/wt out, which stops it
			// (RFC 3435 §2.3.3).
			l.armed, l.playing = "", nil
			l.oneShot = slices.DeleteFunc(l.oneShot, func(s mgcp.Event) bool { return s.Is("L", "wt") || s.Is("L", "ci") })
		}
	}
	if x := c.xfer; x != nil {
		// The new call of a REFER this call received goes with it. The
		// transferor, still there, hears how the transfer ended before
		// our BYE (RFC 3515 §2.4.5: the subscription ends with a final
		// status): 487, the attempt given up.
		c.xfer, x.xferOf = nil, nil
		l.endCallOf(x, why, false)
		if !remoteEnded && !c.gone {
			l.notifyRefer(c, 487, "Request Terminated")
		}
	}
	l.gen++
	if c.result == "" {
		c.result = why
	}
	if c.dialog != nil && !remoteEnded && !c.handed {
		d := c.dialog
		reason := c.byeReason
		switch {
		case d.Inbound && c.answered.IsZero():
			status, text := c.status, c.reason
			if status == 0 {
				status, text = 480, "Temporarily Unavailable"
			}
			c.sipStatus = status
			_ = d.Reject(status, text)
		case !c.answered.IsZero() || d.Inbound:
			l.inOrder(c, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if reason != "" {
					_ = d.ByeWithReason(ctx, reason)
				} else {
					_ = d.Bye(ctx)
				}
			})
		case c.cancel != nil:
			c.cancel() // CANCEL
		}
	}
	if c.sipq != nil {
		close(c.sipq) // the sender ends after the BYE
	}
	c.sipDone = true
	if c.peer != nil {
		peer, id := c.peer, c.lid()
		c.peer = nil
		peer.postWait(func() { peer.onLocalHangup(id) })
	}
	l.doomed = append(l.doomed, c)
}

// flush deletes the connections of the calls ended by the last input and
// reports them; the last DLCX carries the line's new request.
func (l *line) flush() {
	for len(l.doomed) > 0 {
		c := l.doomed[0]
		l.doomed = l.doomed[1:]
		l.finish(c, l.deleteConnection(c, len(l.doomed) == 0))
	}
	l.doomed = nil
}

// finish reports the ended call and releases what waits for it.
func (l *line) finish(c *call, stats []mgcp.ConnParam) {
	if c.cancel != nil {
		defer c.cancel()
	}
	if c.done != nil {
		// ServeDialog returns (and the sip package ends the dialog) once
		// what was queued for it has gone out: a NOTIFY before the BYE
		// needs the dialog.
		done, drained := c.done, c.drained
		c.done = nil
		if drained == nil {
			close(done)
		} else {
			l.b.sends.Add(1)
			go func() {
				defer l.b.sends.Done()
				<-drained
				close(done)
			}()
		}
	}
	if c.counted {
		c.counted = false
		l.b.active.Add(-1)
	}
	end := time.Now()
	r := CallRecord{Line: l.rule.ID, Direction: c.direction, Number: c.number, MGCPCall: c.id, Answered: !c.answered.IsZero(),
		Result: c.result, Stats: stats, Duration: end.Sub(c.start),
		Start: c.start, Answer: c.answered, End: end, Gateway: l.rule.Gateway.Name, Endpoint: l.ep.String(),
		Calling: l.rule.User, Called: c.number, Dialled: c.dialled, ConnectionID: c.conn, GatewaySDP: c.gwSDP,
		SIPStatus: c.sipStatus, ByeReason: c.byeReason, MGCPCode: c.mgcpCode, GatewayFailed: c.gwFailed, Waiting: c.waiting, Transfer: c.transfer}
	if c.direction == "incoming" || c.callee {
		r.Calling, r.Called = c.number, l.rule.User
		if c.dialog != nil {
			r.Dialled = c.dialog.RequestUser()
		}
	}
	if c.dialog != nil && !c.dialog.Inbound {
		r.AnswerSDP = c.dialog.RemoteSDP()
	}
	if c.dialog != nil && r.SIPStatus == 0 && !c.answered.IsZero() {
		r.SIPStatus = 200
	}
	if !c.answered.IsZero() {
		r.Duration = end.Sub(c.answered)
		r.Setup = c.answered.Sub(c.start)
		if c.result == "" || c.result == "hung up" || c.result == "far end hung up" {
			r.Result = "answered, " + c.result
		}
	}
	if c.dialog != nil {
		r.SIPCallID = c.dialog.CallID
		if !c.handed {
			l.b.dialogs.Delete(c.dialog)
		}
	}
	l.b.record(r)
}
