package bridge

// What a line asks of its gateway. The requested events, signals and
// digit map (RFC 3435 §2.3.3) are derived from the line's state in one
// place, desired; after every input the line goroutine calls sync, which
// sends an RQNT when the gateway's request differs from the desired one or
// when the gateway notified under its current request and so waits in
// lock-step for a new one (RFC 3435 §4.4.1, Q: step). Commands that may
// carry a request (CRCX, MDCX, DLCX; §2.3.5-2.3.8) embed it instead when
// the gateway's quirk profile allows, which saves the separate RQNT. No
// handler sends a request of its own, so none can forget one.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
)

// errNoConnection: the call has no connection on the gateway (any more).
var errNoConnection = errors.New("bridge: no connection")

// gwRequest is one notification request: R:, S: and D:.
type gwRequest struct {
	events   []mgcp.RequestedEvent
	signals  []mgcp.Event
	digitMap string
	// brief is how many of the last signals are played once (l.oneShot,
	// l.playing): left out of the key, so that once such a signal went
	// out no later command asks again only to leave it out, which would
	// stop it (RFC 3435 §2.3.3: a time-out signal stops when a new
	// signal list does not name it).
	brief int
}

// key identifies a request for comparison. Brief signals of the D package
// (a DTMF digit played once) and the brief CAS signals (cas.go) are left
// out: nothing needs stopping after them, so they never call for a
// request of their own.
func (r gwRequest) key() string { return string(r.appendKey(nil)) }

// appendKey appends the request's key to b.
func (r gwRequest) appendKey(b []byte) []byte {
	for _, e := range r.events {
		b = e.AppendTo(b)
		b = append(b, ',')
	}
	b = append(b, '|')
	for _, s := range r.signals[:len(r.signals)-r.brief] {
		if strings.EqualFold(s.Package, "D") || casBrief(s) {
			continue
		}
		b = s.AppendTo(b)
		b = append(b, ',')
	}
	b = append(b, '|')
	return append(b, r.digitMap...)
}

// isArmed reports whether want is the request the gateway holds, without
// building its key as a string (this runs after every input of a line).
func (l *line) isArmed(want gwRequest) bool {
	bp := keyBufs.Get().(*[]byte)
	k := want.appendKey((*bp)[:0])
	same := string(k) == l.armed
	*bp = k[:0]
	keyBufs.Put(bp)
	return same
}

// keyBufs recycles the scratch buffers of isArmed (byte slices only, so
// nothing of a synctest bubble is shared through it).
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// dialTone is the request that gives dial tone and collects digits
// against the line's digit map.
func (l *line) dialTone(withFlash bool) gwRequest {
	evs := []mgcp.RequestedEvent{evOnHook}
	if withFlash {
		evs = append(evs, evFlash)
	}
	evs = append(evs, evDigits)
	return gwRequest{events: evs, signals: []mgcp.Event{signal("L/dl")}, digitMap: l.digitMap()}
}

func (l *line) digitMap() string {
	if l.rule.DialPlan != nil && l.rule.DialPlan.DigitMap != "" {
		return l.rule.DialPlan.DigitMap
	}
	return mapping.BuiltinDigitMap
}

// dialsByItself reports whether an idle line's request lets the gateway
// give dial tone and collect the number on its own (an embedded request
// in the off-hook event, RFC 3435 §2.3.3 action E), so that the off-hook
// and the number arrive in one NTFY.
func (l *line) dialsByItself() bool {
	return l.rule.Gateway.Quirks.EmbeddedRequests && l.rule.Features.Hotline == "" && l.b.accepting(l.rule.Gateway) &&
		l.other == nil // a held call waits for its transfer: off-hook takes it back
}

// desired is the request the line's state calls for (the state table of
// docs/bridge.md).
func (l *line) desired() gwRequest {
	if l.cas() != "" {
		return l.casDesired()
	}
	var r gwRequest
	switch l.state {
	case stIdle:
		hd := evOffHook
		if l.dialsByItself() {
			dt := l.dialTone(false)
			hd = mgcp.RequestedEvent{Event: evOffHook.Event, Actions: []mgcp.Action{{Code: mgcp.ActionEmbedded,
				Embedded: &mgcp.EmbeddedRequest{RequestedEvents: dt.events, Signals: dt.signals, DigitMap: dt.digitMap}}}}
		}
		r = gwRequest{events: []mgcp.RequestedEvent{hd}, signals: l.mwiSignal()}
	case stDialing:
		switch {
		case l.transfer.active && l.transfer.to != "":
			r.events = []mgcp.RequestedEvent{evOnHook, evFlash} // number taken: silence until hang-up
		case l.transfer.active:
			r = l.dialTone(true)
		default:
			r = l.dialTone(false)
		}
	case stRinging:
		r.events = []mgcp.RequestedEvent{evOffHook}
		if c := l.call; c != nil {
			r.signals = c.ring
		}
	case stCalling:
		r.events = l.offHookEvents()
		if c := l.call; c != nil && c.ringback {
			r.signals = []mgcp.Event{signal(l.ringback())}
		}
	case stConnected:
		r.events = l.offHookEvents()
	case stTone:
		r.events = []mgcp.RequestedEvent{evOnHook}
		if l.tone != "" {
			r.signals = []mgcp.Event{signal(l.tone)}
		}
	}
	if len(l.oneShot) > 0 || len(l.playing) > 0 {
		// The signals played once: the new ones, and those an earlier
		// command of the same input carried, which a later command of it
		// (the DLCX after the MDCX that started L/e) must keep naming.
		r.brief = len(l.playing) + len(l.oneShot)
		r.signals = append(append(append([]mgcp.Event(nil), r.signals...), l.playing...), l.oneShot...)
	}
	if r.signals == nil {
		r.signals = []mgcp.Event{} // an empty S: stops what plays
	}
	return r
}

// needsRequest reports whether the gateway must be sent the desired
// request: it holds another one, or it notified and waits for a new one.
func (l *line) needsRequest(want gwRequest) bool {
	return (l.trunk == nil || l.cas() != "") && l.state != stRestarting && (l.owesRLC || l.notified || len(l.oneShot) > 0 || !l.isArmed(want))
}

// gatewayGone reports a gateway marked down: the line sends it nothing
// (each command would only wait out its retransmissions); when it comes
// back the line is audited and its stale connections deleted.
func (l *line) gatewayGone() bool { return l.b.gatewayDown(l.rule.Gateway) }

// sync sends the desired request when needed (see the top of this file).
// A 401 or 402 answer means the phone's hook is not where the line
// thought: the line takes the hook change as if notified, and tries
// again with the request for its new state.
func (l *line) sync() {
	for range 4 {
		l.applyHook()
		l.flush() // calls the hook change ended
		if l.quit {
			return
		}
		want := l.desired()
		if !l.needsRequest(want) || l.gatewayGone() {
			return
		}
		err := l.rqnt(want)
		if err == nil {
			l.retries = 0
			return
		}
		if l.hookFromError(err) || l.casRefused(err) {
			continue
		}
		l.armed = "" // unknown: try again
		if !errors.Is(err, mgcp.ErrTimeout) {
			// A refusal: the line tries again after a pause (1, 2, 4 ...
			// 30 s); the gateway would otherwise wait for a request for
			// ever. A timeout marked the gateway down instead: it is
			// re-audited when it answers again.
			l.after(l.backoff(), func() {})
		}
		return
	}
}

// backoff is the next pause before the line tries again what its gateway
// refused: 1 s doubling up to 30 s, reset by a success.
func (l *line) backoff() time.Duration {
	d := time.Second << min(l.retries, 5)
	l.retries++
	return min(d, 30*time.Second)
}

// rqnt sends RQNT (RFC 3435 §2.3.3).
func (l *line) rqnt(want gwRequest) error {
	ctx, cancel := l.opCtx()
	defer cancel()
	id := l.nextRequestID()
	_, err := l.b.cfg.CallAgent.NotificationRequest(ctx, l.gw(), l.ep, mgcp.Parameters{NotifiedEntity: l.b.cfg.NotifiedEntity,
		RequestID: id, RequestedEvents: want.events, Signals: want.signals, DigitMap: want.digitMap})
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		if hookCode(err) == 0 {
			l.mgcpFailed(err, "RQNT failed")
		}
		return err
	}
	l.accepted(want, id)
	return nil
}

// accepted records that the gateway took a request.
func (l *line) accepted(want gwRequest, id string) {
	if l.armedID != "" {
		// Remember the ids this request supersedes: an NTFY under one of
		// them needs no new request (noteNotify).
		copy(l.pastIDs[1:], l.pastIDs[:len(l.pastIDs)-1])
		l.pastIDs[0] = l.armedID
	}
	l.armed = want.key()
	l.armedID = id
	l.casAccepted(want)
	l.issued.accepted()
	l.notified = false
	if l.cas() == "" {
		l.playing = append(l.playing, l.oneShot...)
	}
	l.oneShot = nil
	l.armedE = len(want.events) == 1 && want.events[0].HasAction(mgcp.ActionEmbedded)
}

// embed puts the desired request into a CRCX, MDCX or DLCX when the
// gateway takes embedded requests and one is needed; it returns the
// request to record with accepted once the command succeeds (ok false:
// nothing embedded).
func (l *line) embed(p *mgcp.Parameters) (gwRequest, bool) {
	if !l.rule.Gateway.Quirks.EmbeddedRequests {
		return gwRequest{}, false
	}
	want := l.desired()
	if !l.needsRequest(want) {
		return gwRequest{}, false
	}
	p.NotifiedEntity = l.b.cfg.NotifiedEntity
	p.RequestID = l.nextRequestID()
	p.RequestedEvents = want.events
	p.Signals = want.signals
	p.DigitMap = want.digitMap
	return want, true
}

// hookCode reads a hook-state refusal: +1 for 401 (the phone is off
// hook), -1 for 402 (on hook), 0 for anything else.
func hookCode(err error) int {
	var re *mgcp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		switch re.Response.Code {
		case mgcp.CodeOffHook:
			return 1
		case mgcp.CodeOnHook:
			return -1
		}
	}
	return 0
}

// hookFromError notes the hook state a 401/402 reveals; applyHook acts
// on it. It reports whether err was such a refusal.
func (l *line) hookFromError(err error) bool {
	h := hookCode(err)
	if h == 0 {
		return false
	}
	l.hookHint = h
	l.armed = ""
	return true
}

// applyHook acts on a hook state learnt from a refusal as if the gateway
// had notified the change (the NTFY itself may still be on its way, or
// quarantined).
func (l *line) applyHook() {
	h := l.hookHint
	l.hookHint = 0
	switch {
	case h > 0 && !l.offHook && l.state == stIdle && l.armedE && l.isArmed(l.desired()):
		// The idle request let the gateway give dial tone by itself: the
		// phone is dialling under it; its NTFY brings the number.
		l.offHook = true
		l.gen++
		l.state = stDialing
		l.armed = l.desired().key()
		l.dialBackstop()
	case h > 0 && !l.offHook:
		l.offHook = true
		l.onOffHook()
	case h < 0 && l.offHook:
		l.offHook = false
		l.onOnHook()
	case h < 0 && l.state == stRinging:
		// Asked for off-hook while ringing and told it is on hook: the
		// request for the ring failed; sync sends it again.
	}
}

// noteNotify records an NTFY's request id: one under the gateway's
// current request leaves it waiting for a new one (lock-step); one under
// an older request was overtaken by the request sent since.
func (l *line) noteNotify(x string) {
	for _, old := range l.pastIDs {
		if old != "" && strings.EqualFold(x, old) {
			return // the request sent since ended the notification state
		}
	}
	// The current request, or one we do not know: the gateway may wait
	// for a new request, and one more does no harm.
	l.notified = true
}

// ---- MGCP operations ----

func (l *line) gw() string { return l.b.gatewayAddr(l.rule.Gateway) }

func (l *line) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(l.ops, 30*time.Second)
}

// nextRequestID is a fresh X: (RFC 3435 §3.2.2.2: up to 32 hex
// characters), random so that nobody can guess the next one.
func (l *line) nextRequestID() string {
	id := randomHex()
	l.issued.add(id)
	return id
}

// requestIDs are the request ids (X:) a line issued, published for
// HandleMGCP: an NTFY carries the X: of the request that armed its events
// (RFC 3435 §2.3.5), so one under an id the line never issued did not
// come from the gateway's state for this line and is not acted on.
// "0" is what an endpoint uses for persistent events when it holds no
// request: accepted only while the line has none armed (never armed, or
// the gateway restarted since).
type requestIDs struct {
	mu     sync.Mutex
	ids    [32]string // the last ids issued, newest at next-1
	next   int
	held   bool        // the gateway accepted a request since its last restart
	resync atomic.Bool // a refused NTFY's re-synchronisation is queued
}

func (r *requestIDs) add(id string) {
	r.mu.Lock()
	r.ids[r.next%len(r.ids)] = id
	r.next++
	r.mu.Unlock()
}

// accepted notes that the gateway holds one of the line's requests.
func (r *requestIDs) accepted() {
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
}

// carry gives r the ids and state of from: a line's successor (a reload
// changed its rule) answers NTFYs under its predecessor's requests, which
// the gateway holds until the successor's first request is in place.
func (r *requestIDs) carry(from *requestIDs) {
	from.mu.Lock()
	ids, next, held := from.ids, from.next, from.held
	from.mu.Unlock()
	r.mu.Lock()
	r.ids, r.next, r.held = ids, next, held
	r.mu.Unlock()
}

// reset forgets the requests: the gateway's endpoint was reset (RFC 3435
// §4.4.6) and holds none.
func (r *requestIDs) reset() {
	r.mu.Lock()
	r.held = false
	r.mu.Unlock()
}

// knows reports whether x may be the request id of an NTFY for the line.
func (r *requestIDs) knows(x string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if x == "0" {
		return !r.held
	}
	for _, id := range r.ids {
		if id != "" && strings.EqualFold(id, x) {
			return true
		}
	}
	return false
}

// randomHex is 16 random hex digits.
func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// lco is the LocalConnectionOptions from the gateway's codec preference.
func (l *line) lco() *mgcp.LocalConnectionOptions {
	o := &mgcp.LocalConnectionOptions{Codecs: l.rule.Gateway.Codecs}
	if p := l.rule.Gateway.Ptime; p > 0 {
		o.Packetization = mgcp.Range{Min: p, Max: p}
	}
	return o
}

// createConnection sends CRCX for c (remote may be nil), with the
// line's request embedded. A 401/402 fails the call (the phone is not
// where the call needs it) and is noted for applyHook.
func (l *line) createConnection(c *call, mode mgcp.ConnectionMode, remote []byte) error {
	ctx, cancel := l.opCtx()
	defer cancel()
	p := mgcp.Parameters{CallID: c.id, Mode: mode}
	if remote == nil {
		// Without a remote description the codec choice is ours to give;
		// with one, it already lists only codecs the gateway has (and
		// osmo-mgw 1.10 misreads a multi-codec a: list).
		p.LocalOptions = l.lco()
	}
	want, embedded := l.embed(&p)
	res, err := l.b.cfg.CallAgent.CreateConnection(ctx, l.gw(), l.ep, p, remote)
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		c.mgcpCode, c.gwFailed = mgcpCodeOf(err), true
		l.hookFromError(err)
		return err
	}
	if embedded {
		l.accepted(want, p.RequestID)
	}
	c.connID = res.ConnectionID
	c.conn = res.ConnectionID
	c.gwSDP = res.SDP
	c.mode = mode
	if c == l.call || c == l.other {
		l.publishConns() // the gateway may delete it before the input ends
	}
	return nil
}

// modifyConnection sends MDCX; a new LocalConnectionDescriptor in the
// answer replaces the old one (osmo-mgw re-binds on MDCX). An embedded
// request refused with 401/402 is noted and the MDCX sent again without
// it: the connection must change whatever the hook does.
func (l *line) modifyConnection(c *call, mode mgcp.ConnectionMode, remote []byte) error {
	if c.connID == "" {
		return errNoConnection
	}
	for try := 0; ; try++ {
		ctx, cancel := l.opCtx()
		p := mgcp.Parameters{CallID: c.id, ConnectionID: c.connID, Mode: mode}
		want, embedded := gwRequest{}, false
		if try == 0 {
			want, embedded = l.embed(&p)
		}
		res, err := l.b.cfg.CallAgent.ModifyConnection(ctx, l.gw(), l.ep, p, remote)
		cancel()
		l.b.noteMGCP(l.rule.Gateway, err)
		if err != nil && embedded && (l.hookFromError(err) || l.casRefused(err)) {
			continue
		}
		if err != nil {
			c.mgcpCode, c.gwFailed = mgcpCodeOf(err), true
			l.mgcpFailed(err, "MDCX failed")
			return err
		}
		if embedded {
			l.accepted(want, p.RequestID)
		}
		if len(res.SDP) > 0 {
			c.gwSDP = res.SDP
		}
		c.mode = mode
		c.resumeRefused = false
		return nil
	}
}

// deleteConnection sends DLCX and returns the connection statistics; it
// forgets the connection whatever the answer (515: already gone).
func (l *line) deleteConnection(c *call, last bool) []mgcp.ConnParam {
	if c.connID == "" {
		return nil
	}
	if l.gatewayGone() {
		c.connID = "" // deleted as stale once the gateway is back
		return nil
	}
	for try := 0; ; try++ {
		ctx, cancel := l.opCtx()
		p := mgcp.Parameters{CallID: c.id, ConnectionID: c.connID}
		want, embedded := gwRequest{}, false
		if try == 0 && last {
			// The last of the line's deletions: the request of the state
			// the line is now in rides along.
			want, embedded = l.embed(&p)
		}
		res, err := l.b.cfg.CallAgent.DeleteConnection(ctx, l.gw(), l.ep, p)
		cancel()
		l.b.noteMGCP(l.rule.Gateway, err)
		if err != nil && embedded && (l.hookFromError(err) || l.casRefused(err)) {
			continue
		}
		id := c.connID
		c.connID = ""
		if err != nil {
			l.deleteLater(id, err)
			return nil
		}
		if embedded {
			l.accepted(want, p.RequestID)
		}
		return res.ConnectionParams
	}
}

// deleteLater keeps a connection whose DLCX failed, to delete it again
// after a pause: a refused DLCX (400, 403, 409...) leaves it on the
// gateway. 515 means it is gone already; after a timeout the gateway is
// marked down and the audit when it is back deletes what is stale.
func (l *line) deleteLater(id string, err error) {
	var re *mgcp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.Response.Code == mgcp.CodeIncorrectConnectionID {
		return
	}
	if errors.Is(err, mgcp.ErrTimeout) {
		return
	}
	l.log.WithError(err).WithField("connection", id).Warn("DLCX failed; trying again")
	l.leftover = append(l.leftover, id)
	if len(l.leftover) == 1 {
		l.at(l.backoff(), l.sweep)
	}
}

// sweep deletes the connections left by failed DLCXs.
func (l *line) sweep() {
	ids := l.leftover
	l.leftover = nil
	for _, id := range ids {
		if l.gatewayGone() {
			return // the audit when it is back deletes them
		}
		ctx, cancel := l.opCtx()
		_, err := l.b.cfg.CallAgent.DeleteConnection(ctx, l.gw(), l.ep, mgcp.Parameters{ConnectionID: id})
		cancel()
		l.b.noteMGCP(l.rule.Gateway, err)
		if err != nil {
			l.deleteLater(id, err)
		}
	}
}

// audit checks the endpoint, asking its connections and hook state
// (AUEP F: I, ES; RFC 3435 §2.3.10). err is errSuperseded when an RSIP
// cancelled it.
func (l *line) audit(ctx context.Context) (offHook bool, conns []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info := []string{"ES"}
	if l.rule.Gateway.Quirks.AuditConnection {
		info = []string{"I", "ES"}
	}
	res, err := l.b.cfg.CallAgent.AuditEndpoint(ctx, l.gw(), l.ep, info...)
	if ctx.Err() != nil && l.ops.Err() == nil && !errors.Is(err, mgcp.ErrTimeout) {
		return false, nil, errSuperseded // an RSIP came: it audits again
	}
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		l.mgcpFailed(err, "audit failed")
		return false, nil, err
	}
	for _, e := range res.EventStates {
		if e.Is("L", "hd") {
			offHook = true
		}
	}
	return offHook, res.ConnectionIDs(), nil
}

// errSuperseded: an RSIP cancelled the audit in progress.
var errSuperseded = errors.New("bridge: audit superseded by a restart")

var (
	evOffHook = mgcp.RequestedEvent{Event: mgcp.Event{Package: "L", Name: "hd"}, Actions: []mgcp.Action{{Code: mgcp.ActionNotify}}}
	evOnHook  = mgcp.RequestedEvent{Event: mgcp.Event{Package: "L", Name: "hu"}, Actions: []mgcp.Action{{Code: mgcp.ActionNotify}}}
	evFlash   = mgcp.RequestedEvent{Event: mgcp.Event{Package: "L", Name: "hf"}, Actions: []mgcp.Action{{Code: mgcp.ActionNotify}}}
	evDigits  = mgcp.RequestedEvent{Event: mgcp.Event{Package: "D", Name: "[0-9#*T]"}, Actions: []mgcp.Action{{Code: mgcp.ActionDigitMap}}}
	evDTMF    = mgcp.RequestedEvent{Event: mgcp.Event{Package: "D", Name: "[0-9#*]"}, Actions: []mgcp.Action{{Code: mgcp.ActionNotify}}}
)

func signal(pkgName string, params ...string) mgcp.Event {
	pkg, name, ok := strings.Cut(pkgName, "/")
	if !ok {
		pkg, name = "", pkgName
	}
	return mgcp.Event{Package: pkg, Name: name, Params: params}
}

// offHookEvents are the events watched while the phone is off hook in a
// call.
func (l *line) offHookEvents() []mgcp.RequestedEvent {
	evs := []mgcp.RequestedEvent{evOnHook, evFlash}
	if l.rule.Features.DTMF == "info" {
		evs = append(evs, evDTMF)
	}
	return evs
}

// mgcpFailed logs a failed MGCP command of the line: a refusal is a
// warning; a timeout is a debug line, because the gateway is marked down
// by it and says so once for all its lines (a dead 24-port gateway is
// one warning, not 25).
func (l *line) mgcpFailed(err error, msg string) {
	if errors.Is(err, mgcp.ErrTimeout) {
		l.log.WithError(err).Debug(msg)
		return
	}
	l.log.WithError(err).Warn(msg)
}
