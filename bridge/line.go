package bridge

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// lineState is where a line stands. Only the line's goroutine reads or
// writes it (architecture: one owner per line, no mutex).
type lineState int

const (
	stIdle       lineState = iota // on hook, armed for off-hook
	stDialing                     // off hook, dial tone, collecting digits
	stCalling                     // outgoing call placed, not answered
	stRinging                     // incoming call, phone ringing
	stConnected                   // talking
	stTone                        // call over or failed, phone still off hook hearing a tone
	stRestarting                  // the gateway restarted; audit and re-arm pending
)

var stateNames = [...]string{"idle", "dialing", "calling", "ringing", "connected", "tone", "restarting"}

func (s lineState) String() string { return stateNames[s] }

// call is this line's leg of a call: one MGCP connection and either a SIP
// dialog or, for a locally switched call, the other line.
type call struct {
	id        string // MGCP call id (C:)
	connID    string
	gwSDP     []byte // the gateway's LocalConnectionDescriptor
	codecs    []string
	origin    Origin
	direction string
	number    string
	dialog    *sip.Dialog
	cancel    context.CancelFunc // cancels an outgoing INVITE
	done      chan struct{}      // releases ServeDialog of an incoming call
	peer      *line              // locally switched: the other line
	start     time.Time
	answered  time.Time
	result    string
	gen       int
	fallback  bool   // switch locally if the SIP peer cannot be reached
	byeReason string // Reason header of our BYE (RFC 3326), when there is one to give
	fork      *fork  // a ring-all call ringing this line, not taken yet
	recall    bool   // ringing again for a call left waiting or on hold
}

// line owns one MGCP endpoint and its SIP identity: an analog line, or
// a channel of a trunk group (trunk set).
type line struct {
	b     *Bridge
	rule  *mapping.LineRule
	trunk *mapping.TrunkRule
	ep    mgcp.EndpointName
	in    chan func()
	log   *logrus.Entry
	ctx   context.Context // the bridge's; set before any input arrives
	// running says whether the owner goroutine is up: it parks (ends)
	// when the line has no call and nothing queued, and the next input
	// starts it again, so idle lines cost no goroutine stack.
	running atomic.Bool
	status  atomic.Pointer[LineStatus] // published after every input

	// ops bounds MGCP operations; the loop replaces it at shutdown.
	ops context.Context

	// owned by the loop goroutine
	state     lineState
	retiring  bool // removed from the configuration: stop once idle
	mwi       bool // messages waiting (lamp on)
	mwiKnown  bool // an MWI NOTIFY arrived
	quit      bool
	reqID     uint64
	call      *call
	other     *call // call waiting, or the call on hold
	transfer  transferState
	gen       int
	toneTimer *time.Timer
}

func newLine(b *Bridge, lr *mapping.LineRule) *line {
	ep := mgcp.EndpointName{Local: lr.Endpoint, Domain: lr.Gateway.Domain}
	return &line{b: b, rule: lr, ep: ep, in: make(chan func(), 16), ctx: b.ctx, ops: b.ctx,
		log: b.log.WithFields(logrus.Fields{"line": lr.ID, "endpoint": ep.String()})}
}

// post queues f for the line's goroutine without blocking; false when
// the queue is full.
func (l *line) post(f func()) bool {
	select {
	case l.in <- f:
		l.kick()
		return true
	default:
		return false
	}
}

// postWait queues f, waiting for room unless the bridge stops.
func (l *line) postWait(f func()) {
	select {
	case l.in <- f:
		l.kick()
	case <-l.ctx.Done():
	}
}

// kick starts the owner goroutine unless it runs.
func (l *line) kick() {
	if l.running.Load() || !l.running.CompareAndSwap(false, true) {
		return
	}
	if !l.b.track() {
		l.running.Store(false) // the bridge is stopping
		return
	}
	go l.loop()
}

// loop is the owner goroutine: it runs queued inputs one at a time and
// parks when the line has no call and nothing is queued.
func (l *line) loop() {
	defer l.b.wg.Done()
	for !l.quit {
		select {
		case f := <-l.in:
			f()
			l.publish()
			continue
		case <-l.ctx.Done():
			l.shutdown()
			return
		default:
		}
		if l.call == nil {
			l.running.Store(false)
			// An input queued between the check above and the store must
			// not be stranded: whoever wins the swap runs it.
			if len(l.in) == 0 || !l.running.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		select {
		case f := <-l.in:
			f()
			l.publish()
		case <-l.ctx.Done():
			l.shutdown()
			return
		}
	}
}

// after runs f on the line's goroutine after d, unless the line moved on
// to another call or state generation meanwhile.
func (l *line) after(d time.Duration, f func()) *time.Timer {
	gen := l.gen
	return time.AfterFunc(d, func() {
		l.postWait(func() {
			if l.gen == gen {
				f()
			}
		})
	})
}

// newTrunkChannel makes a trunk group's channel: no hook, no tones, no
// registration; it only carries calls.
func newTrunkChannel(b *Bridge, tr *mapping.TrunkRule, local string) *line {
	lr := &mapping.LineRule{ID: tr.Name + "/" + local, Gateway: tr.Gateway, Endpoint: local, Peer: tr.Peer,
		ToSIP: tr.ToSIP, ToMGCP: tr.ToMGCP, Source: "trunks." + tr.Name}
	l := newLine(b, lr)
	l.trunk = tr
	l.log = l.log.WithField("trunk", tr.Name)
	return l
}

// begin audits and arms a line that was just created.
func (l *line) begin() {
	if l.trunk != nil {
		l.audit()
	} else {
		l.rearm(l.audit())
	}
}

// retire stops the line now if it has no call, else after it.
func (l *line) retire() {
	l.retiring = true
	if l.call == nil {
		l.log.Info("bridge: line removed from the configuration")
		l.quit = true
	}
}

func (l *line) account() sip.Account {
	a := sip.Account{ID: l.rule.ID, User: l.rule.User, AuthUser: l.rule.AuthUser, Password: l.rule.Password.Reveal(),
		DisplayName: l.rule.DisplayName}
	if p := l.rule.Peer; p != nil {
		a.Registrar = p.Registrar
		a.Transport = p.Transport
		a.Expiry = p.RegisterExpiry
		a.Domain = p.Realm
	}
	return a
}

// ---- MGCP helpers ----

func (l *line) gw() string { return l.b.gatewayAddr(l.rule.Gateway) }

func (l *line) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(l.ops, 30*time.Second)
}

func (l *line) nextRequestID() string {
	l.reqID++
	return strconv.FormatUint(l.reqID, 16)
}

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

// offHookEvents are the events watched while the phone is off hook.
func (l *line) offHookEvents() []mgcp.RequestedEvent {
	evs := []mgcp.RequestedEvent{evOnHook, evFlash}
	if l.rule.Features.DTMF == "info" {
		evs = append(evs, evDTMF)
	}
	return evs
}

// request sends RQNT (RFC 3435 §2.3.3) with the events, signals and digit
// map; signals nil stops any signal playing.
func (l *line) request(events []mgcp.RequestedEvent, signals []mgcp.Event, digitMap string) error {
	ctx, cancel := l.opCtx()
	defer cancel()
	if signals == nil {
		signals = []mgcp.Event{}
	}
	_, err := l.b.cfg.CallAgent.NotificationRequest(ctx, l.gw(), l.ep, mgcp.Parameters{NotifiedEntity: l.b.cfg.NotifiedEntity,
		RequestID: l.nextRequestID(), RequestedEvents: events, Signals: signals, DigitMap: digitMap})
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		l.log.WithError(err).Warn("bridge: RQNT failed")
	}
	return err
}

// audit checks the endpoint and asks its hook state (AUEP F: ES, RFC
// 3435 §2.3.10); it reports whether the phone is off hook.
func (l *line) audit() (offHook bool) {
	ctx, cancel := l.opCtx()
	defer cancel()
	res, err := l.b.cfg.CallAgent.AuditEndpoint(ctx, l.gw(), l.ep, "ES")
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		l.log.WithError(err).Warn("bridge: audit failed")
		return false
	}
	for _, e := range res.EventStates {
		if e.Is("L", "hd") {
			return true
		}
	}
	return false
}

// rearm arms an audited line: a phone found off hook is left to hang up
// first (no dial tone it did not ask for).
func (l *line) rearm(offHook bool) {
	if !offHook {
		l.arm()
		return
	}
	l.stopTone()
	l.gen++
	l.state = stTone
	_ = l.request([]mgcp.RequestedEvent{evOnHook}, nil, "")
}

// arm returns the line to idle, watching for off-hook.
func (l *line) arm() {
	l.stopTone()
	l.gen++
	l.state = stIdle
	if l.trunk != nil {
		return // a trunk channel has no hook to watch
	}
	_ = l.request([]mgcp.RequestedEvent{evOffHook}, l.mwiSignal(), "")
	if l.retiring {
		l.retire()
	}
}

// setMWI sets the message-waiting indicator. An on/off signal, it stays
// on until turned off; it is sent at once on an idle line, and goes with
// the next arming otherwise.
func (l *line) setMWI(on bool) {
	l.mwi = on
	l.mwiKnown = true
	if l.state == stIdle && l.call == nil {
		l.arm()
	}
}

// mwiSignal is the indicator signal to keep with an idle line's request.
func (l *line) mwiSignal() []mgcp.Event {
	if !l.mwiKnown {
		return nil
	}
	v := "-"
	if l.mwi {
		v = "+"
	}
	return []mgcp.Event{signal("L/vmwi", v)}
}

// toneAndWait plays tone to the off-hook phone, then the off-hook warning
// after ToneTimeout, until it hangs up.
func (l *line) toneAndWait(tone string) {
	if l.trunk != nil {
		l.arm()
		return
	}
	l.gen++
	l.state = stTone
	_ = l.request([]mgcp.RequestedEvent{evOnHook}, []mgcp.Event{signal(tone)}, "")
	l.stopTone()
	l.toneTimer = l.after(l.b.cfg.ToneTimeout, func() {
		_ = l.request([]mgcp.RequestedEvent{evOnHook}, []mgcp.Event{signal("L/ot")}, "")
	})
}

func (l *line) stopTone() {
	if l.toneTimer != nil {
		l.toneTimer.Stop()
		l.toneTimer = nil
	}
}

// lco is the LocalConnectionOptions from the gateway's codec preference.
func (l *line) lco() *mgcp.LocalConnectionOptions {
	o := &mgcp.LocalConnectionOptions{Codecs: l.rule.Gateway.Codecs}
	if p := l.rule.Gateway.Ptime; p > 0 {
		o.Packetization = mgcp.Range{Min: p, Max: p}
	}
	return o
}

// createConnection sends CRCX for c; remote may be nil.
func (l *line) createConnection(c *call, mode mgcp.ConnectionMode, remote []byte, events []mgcp.RequestedEvent, signals []mgcp.Event) error {
	ctx, cancel := l.opCtx()
	defer cancel()
	p := mgcp.Parameters{CallID: c.id, Mode: mode}
	if remote == nil {
		// Without a remote description the codec choice is ours to give;
		// with one, it already lists only codecs the gateway has (and
		// osmo-mgw 1.10 misreads a multi-codec a: list).
		p.LocalOptions = l.lco()
	}
	embed := events != nil && l.rule.Gateway.Quirks.EmbeddedRequests
	if embed {
		// RFC 3435 §2.3.5: a notification request may ride on the CRCX.
		p.NotifiedEntity = l.b.cfg.NotifiedEntity
		p.RequestID = l.nextRequestID()
		p.RequestedEvents = events
		p.Signals = signals
		if p.Signals == nil {
			p.Signals = []mgcp.Event{}
		}
	}
	res, err := l.b.cfg.CallAgent.CreateConnection(ctx, l.gw(), l.ep, p, remote)
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		return err
	}
	c.connID = res.ConnectionID
	c.gwSDP = res.SDP
	if events != nil && !embed {
		// Gateways that take no embedded request (quirk) get it apart.
		_ = l.request(events, signals, "")
	}
	return nil
}

// modifyConnection sends MDCX; a new LocalConnectionDescriptor in the
// answer replaces the old one (osmo-mgw re-binds on MDCX).
func (l *line) modifyConnection(c *call, mode mgcp.ConnectionMode, remote []byte) error {
	ctx, cancel := l.opCtx()
	defer cancel()
	res, err := l.b.cfg.CallAgent.ModifyConnection(ctx, l.gw(), l.ep, mgcp.Parameters{CallID: c.id, ConnectionID: c.connID, Mode: mode}, remote)
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		l.log.WithError(err).Warn("bridge: MDCX failed")
		return err
	}
	if len(res.SDP) > 0 {
		c.gwSDP = res.SDP
	}
	return nil
}

// deleteConnection sends DLCX and returns the connection statistics.
func (l *line) deleteConnection(c *call) []mgcp.ConnParam {
	if c.connID == "" {
		return nil
	}
	ctx, cancel := l.opCtx()
	defer cancel()
	res, err := l.b.cfg.CallAgent.DeleteConnection(ctx, l.gw(), l.ep, mgcp.Parameters{CallID: c.id, ConnectionID: c.connID})
	l.b.noteMGCP(l.rule.Gateway, err)
	c.connID = ""
	if err != nil {
		var re *mgcp.ResponseError
		if !errors.As(err, &re) || re.Response == nil || re.Response.Code != mgcp.CodeIncorrectConnectionID {
			l.log.WithError(err).Warn("bridge: DLCX failed")
		}
		return nil
	}
	return res.ConnectionParams
}

// ---- events from the gateway ----

func (l *line) onCommand(cmd *mgcp.Command) {
	switch cmd.Verb {
	case mgcp.VerbDLCX:
		// The gateway deleted the connection itself (RFC 3435 §2.3.8).
		if c := l.call; c != nil && (cmd.ConnectionID == "" || cmd.ConnectionID == c.connID) {
			c.connID = ""
			l.endCall("gateway deleted the connection", true)
		}
		return
	}
	var digits strings.Builder
	for _, e := range cmd.ObservedEvents {
		switch {
		case e.Is("L", "hd"):
			l.onOffHook()
		case e.Is("L", "hu"):
			l.onOnHook()
		case e.Is("L", "hf"):
			l.onFlash()
		case strings.EqualFold(e.Package, "D") && len(e.Name) == 1:
			digits.WriteString(e.Name)
		}
	}
	if digits.Len() == 0 {
		return
	}
	switch l.state {
	case stDialing:
		if l.transfer.active {
			l.transferDialled(strings.TrimSuffix(digits.String(), "T"))
			return
		}
		l.dial(strings.TrimSuffix(digits.String(), "T"))
	case stConnected:
		if l.call != nil && l.call.dialog != nil && l.rule.Features.DTMF == "info" {
			for _, dg := range digits.String() {
				d := l.call.dialog
				body := []byte("Signal=" + string(dg) + "\r\nDuration=160\r\n")
				go func() { _ = d.Info(context.Background(), "application/dtmf-relay", body) }()
			}
		}
	}
}

func (l *line) onOffHook() {
	switch l.state {
	case stIdle:
		if !l.b.accepting(l.rule.Gateway) {
			l.toneAndWait("L/ro") // draining or disabled: no new calls
			return
		}
		if h := l.rule.Features.Hotline; h != "" {
			l.state = stDialing
			l.dial(h)
			return
		}
		l.gen++
		l.state = stDialing
		plan := l.rule.DialPlan
		dm := ""
		if plan != nil {
			dm = plan.DigitMap
		}
		events := append(l.offHookEvents()[:1:1], evDigits)
		_ = l.request(events, []mgcp.Event{signal("L/dl")}, dm)
	case stRinging:
		if l.call != nil && l.call.fork != nil {
			l.takeFork(l.call)
			return
		}
		if l.call != nil && l.call.recall {
			l.other = l.call
			l.call = nil
			l.pickUpRecall(l.other)
			return
		}
		l.answer()
	}
}

func (l *line) onOnHook() {
	switch l.state {
	case stDialing, stTone:
		if l.transfer.active {
			l.completeTransfer()
			return
		}
		l.arm()
	case stCalling, stConnected:
		l.endCall("hung up", false)
		if l.other != nil {
			l.afterActiveEnded(true)
			return
		}
		l.arm()
	}
}

// ---- outgoing ----

// onRestart: the gateway restarted the endpoint (RFC 3435 §2.3.12).
func (l *line) onRestart(method mgcp.RestartMethod, graceful bool) {
	if graceful && l.call != nil {
		return // calls finish first
	}
	if l.call != nil {
		l.call.connID = "" // gone with the restart
		// Q.850 cause 41: temporary failure.
		l.call.byeReason = `Q.850;cause=41;text="MGCP gateway restarted"`
		l.endCall("gateway restarted", false)
	}
	l.rearm(l.audit())
	if l.b.regs != nil && l.b.cfg.Register && l.rule.Peer != nil && l.rule.Peer.Register && method != mgcp.RestartDisconnected {
		l.b.regs.Remove(l.rule.ID)
		l.b.regs.Add(l.account())
	}
}

func (l *line) shutdown() {
	if l.call == nil && l.other == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.ops = ctx
	if l.other != nil {
		l.endCallOf(l.other, "shutdown", false)
	}
	l.endCall("shutdown", false)
}
