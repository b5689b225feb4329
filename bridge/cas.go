package bridge

// Trunk channels that speak an RFC 3064 CAS package (a trunk group with
// signaling: ms or dt). The gateway runs the trunk's line signalling
// (seizure, wink or immediate start, MF or DTMF address) and reports it
// at the level of the call; the channel is driven by the same line state
// machine as a phone, with the package's events in place of the hook:
//
//	state      requested (R:)                signals (S:)
//	idle       sup                           rlc after a far-end release, until taken
//	  held     sup, rel                      -   (our sup refused 530: the far end's comes)
//	ringing    oc, of, ans, rel, sup (glare) sup(addr(DID)) once
//	calling    rel                           -
//	connected  rel                           ans once (trunk-originated)
//	tone       rel                           ro or bz (the far end hangs up)
//	releasing  rlc, rel                      rel once
//
// The names are those of RFC 3064's MS and DT packages (sup setup, ans
// answer, rel release, rlc release complete, oc/of operation complete/
// failure, ro reorder, bz busy); docs/bridge.md has the ladders and says
// which of them could be checked against the RFC's text. sup is a TO
// signal (RFC 3064 package tables, read for MO): the gateway ends it with oc or of,
// and a requested event detected meanwhile stops it (RFC 3435 §2.3.3),
// which is why keeping a channel in glare sends sup again. ans is a
// persistent event (RFC 3064 §2.7, "P + BR"): it can arrive unrequested
// and is acted on only while the line waits for it.

import (
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// Seizure of a CAS channel as the line knows it (line.seized).
const (
	seizedIn  = "in"  // the far end seized it (trunk-originated call)
	seizedOut = "out" // mgsip seized it (SIP-originated call)
)

// cas is the channel's CAS package ("MS", "DT"), "" for a line or a
// trunk without one.
func (l *line) cas() string {
	if l.trunk == nil {
		return ""
	}
	return l.trunk.Signaling
}

func (l *line) casEvent(name string) mgcp.RequestedEvent {
	return mgcp.RequestedEvent{Event: mgcp.Event{Package: l.cas(), Name: name}}
}

func (l *line) casSignal(name string, params ...string) mgcp.Event {
	e := mgcp.Event{Package: l.cas(), Name: name}
	if len(params) > 0 {
		e.Params = params
	}
	return e
}

// casDesired is desired for a CAS channel (the table at the top).
func (l *line) casDesired() gwRequest {
	var r gwRequest
	switch l.state {
	case stIdle:
		r.events = []mgcp.RequestedEvent{l.casEvent("sup")}
		if l.awaitingSeizure() {
			// The far end may give up before its address is reported.
			r.events = append(r.events, l.casEvent("rel"))
		}
		if l.owesRLC {
			r.signals = []mgcp.Event{l.casSignal("rlc")}
		}
	case stRinging:
		r.events = []mgcp.RequestedEvent{l.casEvent("oc"), l.casEvent("of"), l.casEvent("ans"), l.casEvent("rel"), l.casEvent("sup")}
	case stCalling, stConnected:
		r.events = []mgcp.RequestedEvent{l.casEvent("rel")}
	case stTone:
		if l.tone == "rel" {
			// rel too: the far end may release at the same moment, and
			// then completes nothing (its release needs our rlc).
			r.events = []mgcp.RequestedEvent{l.casEvent("rlc"), l.casEvent("rel")}
		} else {
			r.events = []mgcp.RequestedEvent{l.casEvent("rel")}
			if l.tone != "" {
				r.signals = []mgcp.Event{l.casSignal(l.tone)}
			}
		}
	}
	if len(l.oneShot) > 0 {
		r.signals = append(append([]mgcp.Event(nil), r.signals...), l.oneShot...)
	}
	if r.signals == nil {
		r.signals = []mgcp.Event{}
	}
	return r
}

// casBrief reports the CAS signals sent once (sup, ans, rel, rlc of MS
// or DT) that no later request has to stop: ans, rel and rlc are brief
// (BR); sup is a TO signal (RFC 3064 package tables, read for MO) that the gateway
// itself ends with oc or of, and the NTFY carrying them is followed by
// a new request anyway.
func casBrief(s mgcp.Event) bool {
	if !strings.EqualFold(s.Package, "MS") && !strings.EqualFold(s.Package, "DT") {
		return false
	}
	switch strings.ToLower(s.Name) {
	case "sup", "ans", "rel", "rlc":
		return true
	}
	return false
}

// casParam reads a parameter such as addr(5551234) of an observed event.
func casParam(e mgcp.Event, name string) string {
	for _, p := range e.Params {
		p = strings.TrimSpace(p)
		if len(p) > len(name)+1 && strings.EqualFold(p[:len(name)+1], name+"(") && strings.HasSuffix(p, ")") {
			return p[len(name)+1 : len(p)-1]
		}
	}
	return ""
}

// onCAS handles the observed events of a CAS channel's NTFY.
func (l *line) onCAS(evs []mgcp.Event) {
	l.log.WithFields(logrus.Fields{"observed": evs, "state": l.state, "tone": l.tone, "seized": l.seized}).Debug("CAS events")
	for _, e := range evs {
		if !strings.EqualFold(e.Package, l.cas()) {
			continue
		}
		c := l.call
		switch strings.ToLower(e.Name) {
		case "sup":
			addr, ani := casParam(e, "addr"), casParam(e, "ani")
			switch {
			case c != nil && c.seizing:
				l.onGlare(c, addr, ani)
			case l.free() || l.awaitingSeizure():
				l.onSeizure(addr, ani)
			default:
				l.log.WithField("addr", addr).Warn("seizure of a busy trunk channel ignored")
			}
		case "oc":
			if c != nil && c.seizing {
				// The address is out: the far end alerts.
				c.seizing = false
				l.takenBy(c, true)
				if c.dialog == nil {
					l.lineSeized(c) // a line's call (linetrunk.go)
					break
				}
				l.forward(c)
				_ = c.dialog.Ring()
			}
		case "of":
			if c != nil && c.seizing {
				l.yieldCall(c, "trunk seizure failed")
				l.seized = ""
				l.arm()
			}
		case "ans":
			if c != nil && l.state == stRinging && !c.seizing {
				l.casUp = true
				l.answer()
			}
		case "rel":
			l.onTrunkRelease()
		case "rlc":
			if l.state == stTone && l.tone == "rel" {
				l.seized = ""
				l.arm()
			}
		}
	}
}

// takenBy reports the hunt's answer for a SIP call seizing this channel.
func (l *line) takenBy(c *call, ok bool) {
	if c.taken != nil {
		c.taken <- ok
		c.taken = nil
	}
}

// yieldCall gives a SIP call that was seizing this channel back to its
// trunk group's hunt, which offers it to the next channel (or answers
// 503 when none is free); its connection here is deleted.
func (l *line) yieldCall(c *call, why string) {
	taken := c.taken
	c.taken = nil
	c.seizing = false
	c.result = why
	if taken == nil {
		// No hunt waits for it (it has its channel already): refused.
		c.status, c.reason = 503, "Service Unavailable"
		l.endCallOf(c, why, false)
		return
	}
	c.dialog, c.done = nil, nil // the hunt's now, not this channel's
	c.peer = nil                // a line's call: its hunt goes on (linetrunk.go)
	l.endCallOf(c, why, false)
	taken <- false
}

// onGlare: the far end seized the channel while mgsip seized it for a
// SIP call. The trunk group's rule decides: yield takes the trunk's call
// and hunts the SIP call on; keep repeats the seizure (the far end backs
// off) and the trunk's attempt is refused.
func (l *line) onGlare(c *call, addr, ani string) {
	log := l.log.WithFields(logrus.Fields{"addr": addr, "rule": l.trunk.Glare})
	if l.trunk.Glare == "keep" {
		log.Info("glare: keeping the channel for the SIP call")
		c.glareAddr, c.glareANI = addr, ani // in case the trunk's seizure came first (casRefused)
		l.oneShot = append(l.oneShot, l.supSignal(c))
		return
	}
	log.Info("glare: yielding the channel to the trunk's call")
	l.yieldCall(c, "glare: channel yielded to the trunk")
	l.gen++
	l.state = stIdle
	l.deleteYielded()
	l.onSeizure(addr, ani)
}

// deleteYielded deletes at once the connection of the call that has just
// yielded the channel, before the trunk's own call creates its
// connection: a channel is one DS0, and a T1 CAS gateway holds one
// connection on it, refusing a second CRCX (540, per-endpoint connection
// limit exceeded, RFC 3435 §2.4). The DLCX carries no request: the CRCX
// that follows carries the trunk call's (RFC 3435 §2.3.5), which settles
// the glare at the gateway, and should no CRCX follow (the trunk's call
// is refused) the line's settling sends one as after any input.
func (l *line) deleteYielded() {
	for len(l.doomed) > 0 {
		c := l.doomed[0]
		l.doomed = l.doomed[1:]
		l.finish(c, l.deleteConnection(c, false))
	}
}

// casSeize starts a SIP call's seizure of the channel: sup with the
// DID (rewritten toward MGCP) as its address. The hunt learns whether
// the channel is its (taken) once the gateway reports oc, of or glare.
func (l *line) casSeize(c *call, taken chan<- bool) {
	l.casSeizeFor(c, taken, c.dialog.RequestUser(), "")
}

// casSeizeFor is casSeize for the called number (rewritten toward MGCP
// here) and, when known, the calling number sent as ani.
func (l *line) casSeizeFor(c *call, taken chan<- bool, number, ani string) {
	c.taken = taken
	c.seizing = true
	l.seized = seizedOut
	c.outAddr = l.trunk.ToMGCP.Apply(number)
	if ani != "" {
		c.outANI = l.trunk.ToMGCP.Apply(ani)
	}
	l.oneShot = append(l.oneShot, l.supSignal(c))
	l.after(l.b.cfg.RingTimeout, func() {
		if l.call == c && l.state == stRinging {
			c.status, c.reason = 480, "Temporarily Unavailable"
			if c.seizing {
				l.yieldCall(c, "trunk seizure not completed")
				l.settle("")
				return
			}
			l.failCall(c, "no answer", "")
		}
	})
}

// supSignal is the seizure signal of c: sup(addr(...)), with
// ani(...) when the calling number is sent.
func (l *line) supSignal(c *call) mgcp.Event {
	if c.outANI != "" {
		return l.casSignal("sup", "addr("+c.outAddr+")", "ani("+c.outANI+")")
	}
	return l.casSignal("sup", "addr("+c.outAddr+")")
}

// onSeizure: the far end seized an idle channel and sent addr (and ani):
// the call goes to the trunk group's peer with the number rewritten and the caller presented as
// the trunk group says.
func (l *line) onSeizure(addr, ani string) {
	l.seized = seizedIn
	l.casUp = false
	number := l.trunk.ToSIP.Apply(addr)
	c := &call{id: l.b.newCallID(), number: number, dialled: addr, start: time.Now(), origin: newOrigin(), direction: "outgoing"}
	log := l.log.WithFields(logrus.Fields{"addr": addr, "number": number})
	if !l.b.accepting(l.rule.Gateway) {
		log.Info("trunk seizure refused: draining or disabled")
		l.casSettle("L/ro")
		return
	}
	if callee, ok := l.localTarget(number); ok {
		if callee == nil {
			log.Info("trunk call: no local line with that number")
			l.casSettle("L/ro")
			return
		}
		l.trunkToLine(c, callee, ani)
		return
	}
	peer := l.trunk.Peer // the configuration gives every trunk group one
	if peer == nil || number == "" {
		log.Info("trunk call: no route")
		l.casSettle("L/ro")
		return
	}
	if l.b.peerDown(peer, l) {
		log.WithField("peer", peer.Name).Warn("SIP peer down, trunk call refused")
		l.casSettle("G/cg")
		return
	}
	from, headers, fromHost := l.trunkCaller(peer, ani)
	c.from, c.headers, c.fromHost = &from, headers, fromHost
	c.name = ani
	l.sipCall(c, peer)
}

// anonymousHost is the host of an anonymous From (RFC 3323 §4.1.1.3:
// "Anonymous" <sip:anonymous@anonymous.invalid>).
const anonymousHost = "anonymous.invalid"

// trunkCallerID is the caller a trunk call presents before privacy: the
// group's caller_id when it has one (its number in place of the ANI),
// else the ANI, the number rewritten by the group's to_sip rule.
func (l *line) trunkCallerID(ani string) (number, name string) {
	number = ani
	if cid := l.trunk.CallerID; cid.Number != "" || cid.Name != "" {
		if cid.Number != "" {
			number = cid.Number
		}
		name = cid.Name
	}
	if number != "" {
		number = l.trunk.ToSIP.Apply(number)
	}
	return number, name
}

// trunkCaller is the identity a trunk-originated call is placed with:
// the trunk account at its peer (digest credentials, RFC 3261 §22), the
// calling number (the trunk group's caller_id.number, which replaces the
// ANI, else the ANI) as From, and an anonymous From (RFC 3323 §4.1.1.3)
// when the number is withheld or unknown: with caller_id.presentation
// restricted with Privacy: id and the real number in P-Asserted-Identity
// (RFC 3323 §4.2, RFC 3325 §9.1); without any number (no ANI, no
// caller_id.number) with neither, as there is no identity to withhold or
// assert. fromHost is the From URI's host when it is not the peer's
// domain.
func (l *line) trunkCaller(peer *mapping.PeerRule, ani string) (a sip.Account, headers map[string]string, fromHost string) {
	a = sip.Account{ID: l.rule.ID, Registrar: peer.Registrar, Transport: peer.Transport, Domain: peer.Realm}
	if acc := peer.Account; acc != nil {
		a.User, a.AuthUser, a.Password = acc.User, acc.AuthUser, acc.Password.Reveal()
	}
	number, name := l.trunkCallerID(ani)
	anonymous := func() {
		if a.AuthUser == "" {
			a.AuthUser = a.User // the account still authenticates
		}
		a.User, a.DisplayName = "anonymous", "Anonymous"
		fromHost = anonymousHost
	}
	switch {
	case l.trunk.CallerID.Presentation == "restricted":
		headers = map[string]string{"Privacy": "id"}
		if number != "" {
			headers["P-Asserted-Identity"] = "<sip:" + number + "@" + peer.Host + ">"
		}
		anonymous()
	case number == "":
		// No calling number: a user-less From would read as the
		// gateway's own address; anonymous says "unknown". A configured
		// caller_id.name is still shown.
		anonymous()
		if name != "" {
			a.DisplayName = name
		}
	default:
		if a.AuthUser == "" {
			a.AuthUser = a.User
		}
		a.User = number
		a.DisplayName = name
	}
	return a, headers, fromHost
}

// onTrunkRelease: the far end released the channel (rel). Its call ends
// on the SIP side (BYE, CANCEL or a final answer) and the release is
// completed with rlc in the idle channel's request.
func (l *line) onTrunkRelease() {
	if c := l.call; c != nil {
		if c.seizing {
			l.yieldCall(c, "trunk released during seizure")
		} else {
			c.result = "trunk released"
			if c.dialog != nil && c.dialog.Inbound && c.answered.IsZero() {
				c.status, c.reason = 480, "Temporarily Unavailable"
			}
			l.endCall(c.result, false)
		}
	}
	l.seized = ""
	l.arm()
	l.owesRLC = true // in the idle request until the gateway took it
}

// casSettle is settle for a CAS channel: an idle channel is armed; a
// channel mgsip seized, or whose call was answered, is released (rel,
// then rlc from the far end); a trunk-originated call that failed before
// its answer gives the far end busy or reorder until it releases.
func (l *line) casSettle(tone string) {
	l.stopTone()
	switch {
	case l.seized == "":
		l.arm()
		return
	case l.seized == seizedOut || l.casUp:
		l.gen++
		l.state = stTone
		l.tone = "rel"
		l.oneShot = append(l.oneShot[:0], l.casSignal("rel"))
	default:
		l.gen++
		l.state = stTone
		l.tone = "ro"
		if tone == "L/bz" {
			l.tone = "bz"
		}
	}
}

// casAnswered sends the answer signal to the trunk when the SIP side
// answered a trunk-originated call.
func (l *line) casAnswered() {
	if l.cas() != "" && l.seized == seizedIn && !l.casUp {
		l.casUp = true
		l.oneShot = append(l.oneShot, l.casSignal("ans"))
	}
}

// casRefused handles a CAS channel's 530 (CAS signaling protocol error,
// RFC 3435 §2.4): a one-shot signal met a channel in another state than
// the line thought, typically the far end releasing at the moment mgsip
// releases or answers. The signal is dropped and the request sent again
// without it, so that the gateway reports what happened (its quarantined
// rel, say) and the line follows. True: try again now.
func (l *line) casRefused(err error) bool {
	if l.supWithoutANI(err) {
		return true
	}
	// Reorder or busy refused on a channel with no call: the gateway has
	// it idle (the far end's seizure mgsip waited for never came, or the
	// far end is gone), so there is nobody to play it to.
	lone := l.cas() != "" && l.state == stTone && (l.tone == "ro" || l.tone == "bz") && l.call == nil && l.other == nil
	if l.cas() == "" || (len(l.oneShot) == 0 && !l.owesRLC && !lone) || mgcpCodeOf(err) != int(mgcp.CodeCASError) {
		return false
	}
	if lone && len(l.oneShot) == 0 && !l.owesRLC {
		l.log.WithError(err).Info("CAS tone refused: the channel is idle at the gateway; armed")
		l.seized = ""
		l.arm()
		return true
	}
	l.log.WithError(err).WithField("signals", l.oneShot).Info("CAS signal refused: asking again without it")
	l.owesRLC = false
	seize := false
	for _, s := range l.oneShot {
		seize = seize || strings.EqualFold(s.Name, "sup")
	}
	l.oneShot = nil
	if c := l.call; seize && c != nil && c.seizing {
		// Our seizure met a channel the far end holds: its seizure came
		// first (reported before ours went out, or held in quarantine
		// while the gateway waits for a request), so neither yield nor
		// keep can win it. The SIP call hunts on; the trunk's call is
		// taken: now when its address is known, else when the gateway
		// reports it under the request sent next, which asks for sup
		// without the refused signal (RFC 3435 §4.4.1: a new request
		// releases the quarantined events).
		addr, ani := c.glareAddr, c.glareANI
		l.yieldCall(c, "glare: the trunk seized first")
		l.gen++
		l.state = stIdle
		if addr != "" {
			l.deleteYielded()
			l.onSeizure(addr, ani)
		} else {
			l.awaitSeizure()
		}
	}
	return true
}

// awaitSeizure leaves the channel idle but held for the far end, whose
// seizure the gateway has not reported yet: sup and rel are requested and
// no SIP call is offered the channel (free is false). Should the report
// not come within tone_timeout, the far end hears reorder until it
// releases, as for a trunk call that cannot be placed.
func (l *line) awaitSeizure() {
	l.seized = seizedIn
	l.casUp = false
	l.after(l.b.cfg.ToneTimeout, func() {
		if l.awaitingSeizure() {
			l.log.Warn("far-end seizure not reported: reorder until it releases")
			l.casSettle("L/ro")
		}
	})
}

// awaitingSeizure reports a channel left to the far end by awaitSeizure
// and still waiting for its sup.
func (l *line) awaitingSeizure() bool {
	return l.cas() != "" && l.state == stIdle && l.call == nil && l.other == nil && l.seized == seizedIn
}

// casAccepted notes that the gateway took a request: an rlc in it
// completed the far end's release.
func (l *line) casAccepted(want gwRequest) {
	for _, s := range want.signals {
		if strings.EqualFold(s.Package, l.cas()) && strings.EqualFold(s.Name, "rlc") {
			l.owesRLC = false
		}
	}
}

// supWithoutANI: a 538 (event or signal parameter error, RFC 3435 §2.4)
// on the request carrying a line's seizure with ani(...): RFC 3064's
// parameters of the sup signal were not checked (docs/bridge.md), so a
// gateway that does not take the calling number gets the seizure again
// without it. True: try again now.
func (l *line) supWithoutANI(err error) bool {
	c := l.call
	if l.cas() == "" || c == nil || !c.seizing || c.outANI == "" || mgcpCodeOf(err) != int(mgcp.CodeEventParameterError) {
		return false
	}
	for i, s := range l.oneShot {
		if strings.EqualFold(s.Name, "sup") {
			l.log.WithError(err).Info("sup with ani refused: seizing without the calling number")
			c.outANI = ""
			l.oneShot[i] = l.supSignal(c)
			return true
		}
	}
	return false
}
