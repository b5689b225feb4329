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

// LineStates are the states a line reports (LineStatus.State), and
// "starting" before its first report.
var LineStates = append(stateNames[:], "starting")

func (s lineState) String() string { return stateNames[s] }

// call is this line's leg of a call: one MGCP connection and either a SIP
// dialog or, for a locally switched call, the other line.
type call struct {
	// timers are the call's time-outs (no answer, ring): stopped when it
	// ends (endCallOf), or each would keep the whole call, its dialog and
	// messages alive for up to 3 minutes after it is over.
	timers    []*callTimer
	id        string // MGCP call id (C:)
	connID    string
	gwSDP     []byte // the gateway's LocalConnectionDescriptor
	codecs    []string
	origin    Origin
	direction string
	number    string
	name      string // the caller's name (incoming and local calls), for caller id
	dialog    *sip.Dialog
	cancel    context.CancelFunc // cancels an outgoing INVITE
	done      chan struct{}      // releases ServeDialog of an incoming call
	peer      *line              // locally switched: the other line
	peerID    string             // locally switched: the MGCP call id of the other line's leg (its posts name it)
	peerSDP   []byte             // locally switched: the other line's connection description
	handed    bool               // its SIP leg was handed to another line (localxfer.go): no BYE, no dialog clean-up here
	route     *dialogRoute       // where its dialog's events go (forward)
	localID   string             // locally switched: the id the other line knows this leg by, when not id (localxfer.go)
	start     time.Time
	answered  time.Time
	result    string
	gen       int
	fallback  bool         // switch locally if the SIP peer cannot be reached
	byeReason string       // Reason header of our BYE (RFC 3326), when there is one to give
	fork      *fork        // a ring-all call ringing this line, not taken yet
	recall    bool         // ringing again for a call left waiting or on hold
	ring      []mgcp.Event // signals that ring the phone for it (with caller id)
	status    int          // final answer to an unanswered incoming INVITE (0: 480)
	reason    string
	counted   bool              // counted in Bridge.active
	peerRule  *mapping.PeerRule // the SIP peer of an outgoing call
	ringback  bool              // the far end rings: the phone hears ringback
	ended     bool              // released (endCallOf ran): nothing more to do
	sipq      chan func()       // in-dialog requests sent in order (INFO digits, re-INVITEs, REFER, then BYE)
	sipDone   bool              // sipq closed: nothing more is sent
	drained   chan struct{}     // closed when sipq's sender has sent everything
	// offers bounds the call's own re-INVITEs (hold, resume, a media
	// move); endCallOf cancels it, so that the BYE queued behind a
	// re-INVITE the far end leaves unanswered (or answers 491) goes at
	// once: RFC 3261 §15 lets a confirmed dialog be ended while a
	// re-INVITE is pending.
	offers     context.Context
	stopOffers context.CancelFunc
	referring  bool          // held, transferred by our REFER: waiting for its final NOTIFY
	takenBack  bool          // its transfer was pending when the phone took it back (transfer.go)
	referTo    string        // the number it is transferred to
	referN     int           // counts its transfers (a timer knows its own)
	xfer       *call         // the new call placed for a REFER this call received, not answered yet
	xferOf     *call         // (of that new call) the call it is to replace
	gone       bool          // its far end hung up while xfer was tried: the connection waits for xfer
	redirects  int           // 3xx followed (retry.go)
	minSE      time.Duration // the Min-SE of the last 422 followed (retry.go)
	retries422 int           // placed again after a 422, so many times
	// answerInAck: an offerless INVITE with Replaces got our offer in
	// the 200, the answer comes with the ACK (replaces.go).
	answerInAck bool

	// For the call's record (cdr.go).
	dialled   string // the number as dialled, before rewriting
	conn      string // the connection id the gateway gave (kept after the DLCX)
	sipStatus int    // the final SIP status of the INVITE (ours or the far end's)
	mgcpCode  int    // the return code of a failed MGCP command, or the gateway DLCX's reason
	waiting   bool   // was a waiting call (call waiting) at some point
	transfer  bool   // took part in a transfer
	callee    bool   // the called leg of a local call
	gwFailed  bool   // a CRCX or MDCX of the call failed (refused or unanswered)
	confFocus bool   // the call to the PBX conference, not answered yet (pbxconf.go)
	confParty bool   // REFERed into the PBX conference: waiting for the final NOTIFY
	confLeg   bool   // C kept for the PBX conference: C's dialog or its leg there (pbxconf.go)
	confHome  *call  // A REFERed into the PBX conference: the phone's call there, to be held beside if the REFER fails

	mode mgcp.ConnectionMode // the mode the gateway last accepted (persist.go)
	// resumeRefused: the line's call, still held because the gateway
	// refused the MDCX that would take it off hold (resume); the next
	// flash tries again. Any MDCX of the call accepted later clears it.
	resumeRefused bool

	// On a CAS trunk channel (cas.go).
	from     *sip.Account      // the identity of a trunk-originated call
	headers  map[string]string // its extra INVITE headers (Privacy, P-Asserted-Identity)
	fromHost string            // its From host when anonymous (anonymous.invalid)
	seizing  bool              // a SIP call's seizure of the channel, before oc
	taken    chan<- bool       // the hunt waiting for the seizure's outcome
	outAddr  string            // the address the seizure sends
	outANI   string            // the calling number it sends (a line's call), or ""
	// the far end's seizure met in a glare that keep answered
	glareAddr, glareANI string
}

// connRef names a connection of the line and its call.
type connRef struct{ conn, call string }

// publishConns publishes the line's connections (for checkDelete).
func (l *line) publishConns() {
	var refs []connRef
	for _, c := range []*call{l.call, l.other} {
		if c != nil && c.connID != "" {
			refs = append(refs, connRef{conn: c.connID, call: c.id})
		}
	}
	l.conns.Store(&refs)
}

// inOrder runs f on the call's sender goroutine, after what was queued
// before it: the far end gets the digits pressed before the hang-up
// before the BYE. The line's goroutine never waits for it.
func (l *line) inOrder(c *call, f func()) {
	if c.sipDone {
		return // after the BYE nothing more goes in the dialog
	}
	if c.sipq == nil {
		q, drained := make(chan func(), 64), make(chan struct{})
		c.sipq, c.drained = q, drained
		l.b.sends.Add(1)
		go func() {
			defer l.b.sends.Done()
			defer close(drained)
			for f := range q {
				f()
			}
		}()
	}
	select {
	case c.sipq <- f:
	default:
		go f() // 64 digits behind: order matters less than not blocking
	}
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
	// referPolicy is the REFER gate's answer for the active call,
	// published after every input (referred.go).
	referPolicy atomic.Pointer[referPolicy]
	conns       atomic.Pointer[[]connRef] // the line's connections, published for HandleMGCP

	// ops bounds MGCP operations; the loop replaces it at shutdown.
	ops context.Context

	// owned by the loop goroutine
	state     lineState
	offHook   bool   // the phone's hook as last reported (NTFY, audit, 401/402)
	tone      string // the signal of stTone ("" silence)
	retiring  bool   // removed from the configuration: stop once idle
	successor *line  // a reload changed the line's rule: this line takes over once idle
	mwi       bool   // messages waiting (lamp on)
	mwiKnown  bool   // an MWI NOTIFY arrived
	quit      bool
	call      *call
	other     *call // call waiting, or the call on hold
	transfer  transferState
	consult   bool     // l.call is a consultation call, l.other held for it (threeway.go)
	conf      bool     // l.call and l.other are mixed on the gateway (confrnce)
	pbxConf   *pbxConf // three-way calling through a conference at the PBX (pbxconf.go)
	gen       int
	toneTimer *time.Timer
	seized    string // a CAS channel's seizure: "", seizedIn, seizedOut (cas.go)
	casUp     bool   // the CAS channel's call was answered
	owesRLC   bool   // the far end released the CAS channel: rlc goes with the next request

	// The gateway's request (request.go): the key and X: of the last
	// one it accepted, whether it notified under it since, signals to
	// play once with the next request, a hook state learnt from a 401/402
	// refusal, and the retries of a refused request.
	armed    string
	armedID  string
	pastIDs  [8]string  // X: of the requests armedID superseded
	issued   requestIDs // every X: issued, for HandleMGCP's NTFY check
	notified bool
	oneShot  []mgcp.Event
	playing  []mgcp.Event // the one-shot signals a command of this input carried (request.go)
	hookHint int
	retries  int // refusals in a row (backoff)
	// auditOwed: an audit was refused and is tried again after a pause,
	// also while the line has a call (its stale connections are only
	// found by an audit).
	auditOwed bool
	deferred  int      // inputs handled since the last sync
	armedE    bool     // the armed request gives dial tone by itself (E action)
	doomed    []*call  // ended calls whose connections flush deletes
	leftover  []string // connections whose DLCX failed: sweep deletes them

	// auditing cancels the audit in progress, so that an RSIP supersedes
	// audits still retransmitting to a gateway that was silent.
	auditing atomic.Pointer[context.CancelFunc]

	// The calls handed to the call store, as last handed (persist.go).
	persisted       map[*call]StoredCall
	persistedDialog map[*call]*sip.Dialog
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
	l.b.runners.run(l.loop)
}

// loop is the owner goroutine: it runs queued inputs one at a time and
// parks when the line has no call and nothing is queued.
func (l *line) loop() {
	defer l.b.wg.Done()
	for !l.quit {
		select {
		case f := <-l.in:
			l.run(f)
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
			l.run(f)
		case <-l.ctx.Done():
			l.shutdown()
			return
		}
	}
}

// run handles one input, then brings the gateway's request in line with
// the new state and publishes it.
func (l *line) run(f func()) {
	f()
	l.fixConference()
	l.fixAttended()
	l.flush()
	l.persistCalls()
	// With more input queued, the request waits for it (a 180 followed
	// by the 200 needs no ringback); it is sent once the queue is empty.
	// A flood of input does not hold it back for long.
	if l.ctx.Err() == nil && (len(l.in) == 0 || l.deferred >= 8) {
		l.deferred = 0
		l.sync()
	} else {
		l.deferred++
	}
	l.playing = nil // the next input's requests need not name them
	l.publish()
	if l.quit && l.successor != nil {
		// Replaced after a reload: the new line takes over now that this
		// one has handled its last input.
		next := l.successor
		l.successor = nil
		l.b.install(l, next)
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

// callTimer is a time-out of a call. Stopping a timer is not enough to let
// go of what its function holds: Go's runtime keeps a stopped timer in its
// heap (a "zombie") until it reaches the head or zombies make up a quarter
// of that processor's timers, so a stopped 3-minute no-answer time-out
// would keep the ended call alive for up to 3 minutes on a quiet box. The
// function is therefore reached through f, which stop clears.
type callTimer struct {
	t *time.Timer
	f func() // nil once stopped; read and cleared on the line's goroutine
}

func (ct *callTimer) stop() {
	ct.f = nil
	ct.t.Stop()
}

// callAfter is after for a time-out of call c, stopped when c ends.
func (l *line) callAfter(c *call, d time.Duration, f func()) {
	ct := &callTimer{f: f}
	ct.t = l.after(d, func() {
		if f := ct.f; f != nil {
			f()
		}
	})
	c.timers = append(c.timers, ct)
}

// at runs f on the line's goroutine after d, whatever the line did
// meanwhile (f checks what it needs).
func (l *line) at(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { l.postWait(f) })
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
func (l *line) begin() { l.resynchronise(false) }

// retire stops the line now if it has no call, else after it.
func (l *line) retire() {
	l.retiring = true
	if l.call == nil {
		l.quit = true
		if l.successor != nil {
			return // the loop installs it once this line's last input is done
		}
		l.log.Info("line removed from the configuration")
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

// ---- events from the gateway ----

func (l *line) onCommand(cmd *mgcp.Command) {
	if cmd.Verb == mgcp.VerbDLCX {
		l.onGatewayDelete(cmd)
		return
	}
	l.noteNotify(cmd.RequestID)
	if l.cas() != "" {
		if l.state == stRestarting {
			l.resynchronise(true)
		}
		l.onCAS(cmd.ObservedEvents)
		return
	}
	if l.state == stRestarting {
		// The line waited for the gateway, which now speaks: audit it
		// first. A phone found off hook because of this very NTFY gets
		// dial tone, not the reorder of a phone left off hook.
		l.resynchronise(true)
		if l.state == stTone && l.call == nil && hasEvent(cmd.ObservedEvents, "L", "hd") {
			l.offHook = false
			l.arm()
		}
	}
	var digits strings.Builder
	for _, e := range cmd.ObservedEvents {
		switch {
		case e.Is("L", "hd"):
			l.offHook = true
			l.onOffHook()
		case e.Is("L", "hu"):
			l.offHook = false
			l.onOnHook()
		case e.Is("L", "hf"):
			l.onFlash()
		case strings.EqualFold(e.Package, "D") && len(e.Name) == 1:
			digits.WriteString(e.Name)
		}
	}
	if digits.Len() > 0 {
		l.onDigits(digits.String())
	}
}

// onDigits: digits collected by the digit map (dialling) or pressed in a
// call.
func (l *line) onDigits(digits string) {
	switch l.state {
	case stDialing:
		if l.transfer.active && l.transfer.to != "" {
			return
		}
		if !l.matchesDigitMap(digits) {
			// The gateway reports what it had when the map could not
			// match (RFC 3435 §2.1.5): nothing to route, reorder here.
			l.log.WithField("digits", digits).Info("dialled digits match no digit map entry")
			if l.transfer.active {
				l.transfer.to = ""
				l.cancelTransfer()
				return
			}
			l.playTone("L/ro")
			return
		}
		number := strings.TrimSuffix(strings.ToUpper(digits), "T")
		if l.transfer.active {
			if l.rule.Features.ThreeWay && l.consultCall(number) {
				return
			}
			l.transferDialled(number)
			return
		}
		l.dial(number)
	case stConnected:
		if l.call != nil && l.call.dialog != nil && l.rule.Features.DTMF == "info" {
			for _, dg := range digits {
				if dg == 'T' || dg == 't' {
					continue
				}
				d := l.call.dialog
				body := []byte("Signal=" + string(dg) + "\r\nDuration=160\r\n")
				l.inOrder(l.call, func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = d.Info(ctx, "application/dtmf-relay", body)
				})
			}
		}
	}
}

// matchesDigitMap checks digits reported at the end of dialling against
// the line's digit map: a gateway notifies a no-match too.
func (l *line) matchesDigitMap(digits string) bool {
	dm, err := mgcp.CompileDigitMap(l.digitMap())
	if err != nil {
		return true // checked when the configuration was loaded
	}
	return dm.Match(strings.ToUpper(digits)) == mgcp.Match
}

// onGatewayDelete: the gateway deleted a connection itself (RFC 3435
// §2.3.8: RTP timeout, hardware failure, ...). The call it carried ends on
// both sides: BYE (or a final answer) to the SIP side, the other line of
// a local call hangs up, and the phone hears reorder if off hook.
func (l *line) onGatewayDelete(cmd *mgcp.Command) {
	c := l.callByConnection(cmd.ConnectionID)
	if c == nil {
		return
	}
	c.connID = ""
	why := "gateway deleted the connection"
	if cmd.Reason != nil {
		why += " (" + strconv.Itoa(int(cmd.Reason.Code)) + ")"
		c.mgcpCode = int(cmd.Reason.Code)
	}
	c.result = why
	// Q.850 cause 41, temporary failure (RFC 3326 Reason).
	c.byeReason = `Q.850;cause=41;text="MGCP connection deleted by the gateway"`
	if c == l.other {
		l.endCallOf(c, why, false)
		return
	}
	l.endCall(why, false)
	if l.other != nil {
		l.afterActiveEnded(!l.offHook)
		return
	}
	l.settle("L/ro")
}

func hasEvent(evs []mgcp.Event, pkg, name string) bool {
	for _, e := range evs {
		if e.Is(pkg, name) {
			return true
		}
	}
	return false
}

// callByConnection finds the line's call holding a connection.
func (l *line) callByConnection(id string) *call {
	for _, c := range []*call{l.call, l.other} {
		if c != nil && c.connID != "" && id != "" && strings.EqualFold(id, c.connID) {
			return c
		}
	}
	return nil
}

func (l *line) onOffHook() {
	switch l.state {
	case stIdle:
		if l.trunk != nil {
			return
		}
		if l.referPending() {
			l.takeBack()
			return
		}
		if !l.b.accepting(l.rule.Gateway) {
			l.playTone("L/ro") // draining or disabled: no new calls
			return
		}
		l.gen++
		l.state = stDialing
		if h := l.rule.Features.Hotline; h != "" {
			l.dial(h)
			return
		}
		l.dialBackstop()
	case stRinging:
		if l.call != nil && l.call.fork != nil {
			l.takeFork(l.call)
			return
		}
		if l.call != nil && l.call.recall && l.other != nil {
			l.backToConsultation() // an attended transfer failed
			return
		}
		if l.call != nil && l.call.recall {
			l.pickUpRecall()
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
		if l.conf {
			l.endConference()
			return
		}
		if l.transferLocal() { // a local leg among the two (localxfer.go)
			return
		}
		if l.consulting() && l.call.answered.IsZero() && l.call.dialog != nil {
			// Hung up while C still rings: A goes to C's number.
			c, a := l.call, l.other
			c.result = "cancelled: the held call is transferred to it"
			l.endCall(c.result, false)
			l.consult = false
			l.referHeld(a, c.number, nil)
			return
		}
		if l.consulting() && l.rule.Features.Transfer && l.call.dialog != nil {
			l.attendedTransfer()
			return
		}
		l.endCall("hung up", false)
		if l.other != nil {
			l.afterActiveEnded(true)
			return
		}
		l.arm()
	}
}

// ---- the line's own states ----

// dialBackstop ends dialling that never completes. The digit map's
// timers run on the gateway (RFC 3435 §2.1.5: the long timer before the
// first digit, the short one between digits), which reports a no-match
// (reorder) when they expire; a gateway that never reports leaves the
// phone in dial tone, so after the first-digit timeout plus ten
// inter-digit timeouts the line gives reorder itself.
func (l *line) dialBackstop() {
	first, inter := mapping.DefaultFirstDigitTimeout, mapping.DefaultInterDigitTimeout
	if p := l.rule.DialPlan; p != nil {
		first, inter = p.FirstDigitTimeout, p.InterDigitTimeout
	}
	l.after(first+10*inter, func() {
		if l.state == stDialing {
			l.log.Info("no number dialled in time")
			if l.transfer.active {
				l.cancelTransfer()
				return
			}
			l.playTone("L/ro")
		}
	})
}

// arm returns the line to idle, watching for off-hook.
func (l *line) arm() {
	l.stopTone()
	l.gen++
	l.state = stIdle
	l.tone = ""
	l.oneShot = nil // a digit or waiting tone meant for the call
	l.playing = nil
	l.transfer = transferState{}
	l.casUp = false
	if l.retiring {
		l.retire()
	}
}

// playTone plays tone to the off-hook phone, then the off-hook warning
// (L/ot) after ToneTimeout, until it hangs up.
func (l *line) playTone(tone string) {
	if l.cas() != "" {
		l.casSettle(tone)
		return
	}
	if l.trunk != nil {
		l.arm()
		return
	}
	l.stopTone()
	l.gen++
	l.state = stTone
	l.tone = tone
	l.oneShot, l.playing = nil, nil
	l.toneTimer = l.after(l.b.cfg.ToneTimeout, func() {
		if l.state == stTone {
			l.tone = "L/ot"
		}
	})
}

// settle puts the line where it belongs once its call is gone: the
// off-hook phone hears tone, an on-hook one is armed for the next call.
func (l *line) settle(tone string) {
	if l.cas() != "" {
		l.casSettle(tone)
		return
	}
	if l.other != nil && l.call == nil {
		// A held call is left (a consultation or added call failed):
		// back to it, or ring for it if the phone is on hook.
		l.afterActiveEnded(!l.offHook)
		return
	}
	if l.offHook && l.trunk == nil {
		l.playTone(tone)
		return
	}
	l.arm()
}

func (l *line) stopTone() {
	if l.toneTimer != nil {
		l.toneTimer.Stop()
		l.toneTimer = nil
	}
}

// setMWI sets the message-waiting indicator (an on/off signal): it goes
// with the idle line's request, at once when idle, else with the next
// arming.
func (l *line) setMWI(on bool) {
	l.mwi = on
	l.mwiKnown = true
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

// ---- restarts and audits ----

// supersede cancels an audit in progress (from any goroutine): an RSIP
// for the endpoint makes it moot.
func (l *line) supersede() {
	if c := l.auditing.Load(); c != nil {
		(*c)()
	}
}

// resynchronise audits the endpoint (hook state and connections), deletes
// connections no call of the line owns, and leaves the line in the state
// the hook calls for. keepCalls keeps calls whose connection the gateway
// still has (a "disconnected" restart keeps its state); otherwise the
// line's calls are already ended.
func (l *line) resynchronise(keepCalls bool) {
	ctx, cancel := context.WithCancel(l.ops)
	l.auditing.Store(&cancel)
	offHook, conns, err := l.audit(ctx)
	l.auditing.Store(nil)
	cancel()
	if err != nil {
		// Superseded by an RSIP (which audits again), or no answer (the
		// gateway is marked down and re-audited when it answers: markUp,
		// RSIP, its next NTFY), or refused: tried again after a pause.
		if l.call == nil && l.other == nil {
			l.state = stRestarting
		}
		l.armed = ""
		if !errors.Is(err, errSuperseded) && !errors.Is(err, mgcp.ErrTimeout) {
			// Not tied to the line's generation (l.after): a call that
			// moves on meanwhile (rung back, ended) must not cancel the
			// audit that finds its stale connections.
			l.auditOwed = true
			l.at(l.backoff(), func() {
				if l.state == stRestarting || l.auditOwed {
					l.resynchronise(true)
				}
			})
		}
		return
	}
	l.retries, l.auditOwed = 0, false
	l.armed, l.notified = "", false // whatever the gateway held is unknown
	owned := map[string]bool{}
	for _, c := range []*call{l.call, l.other} {
		if c == nil {
			continue
		}
		found := false
		for _, id := range conns {
			found = found || strings.EqualFold(id, c.connID)
		}
		if !keepCalls || (!found && l.rule.Gateway.Quirks.AuditConnection) {
			c.connID = ""
			c.byeReason = `Q.850;cause=41;text="MGCP gateway restarted"`
			l.endCallOf(c, "gateway restarted", false)
			continue
		}
		owned[strings.ToLower(c.connID)] = true
	}
	for _, id := range conns {
		if !owned[strings.ToLower(id)] {
			l.log.WithField("connection", id).Info("deleting a connection no call owns")
			l.deleteStale(id)
		}
	}
	l.offHook = offHook && l.trunk == nil
	if l.call != nil {
		if l.state == stRestarting {
			l.state = stConnected
		}
		if !l.offHook && l.trunk == nil && (l.state == stConnected || l.state == stCalling) {
			// The phone is on hook though the call needs it off hook: it
			// hung up while the gateway was unreachable (its NTFY lost).
			// As if notified; otherwise every request for the call's
			// state would get 402 and the line would stay stuck.
			l.onOnHook()
		}
		return
	}
	if l.other != nil {
		l.afterActiveEnded(!l.offHook)
		return
	}
	if l.offHook {
		// Off hook with no call (its call died with the restart, or the
		// phone was left off hook): reorder until it hangs up.
		l.playTone("L/ro")
		return
	}
	if l.cas() != "" && l.seized != "" {
		// A CAS channel still seized (its call ended with the audit, or
		// it waits for its far end's release or the rlc of ours) is
		// released, not armed: the far end is still there.
		if l.state != stTone {
			l.casSettle("L/ro")
		}
		return
	}
	l.arm()
}

// deleteStale deletes a connection found on the endpoint that no call owns.
func (l *line) deleteStale(id string) {
	ctx, cancel := l.opCtx()
	defer cancel()
	_, err := l.b.cfg.CallAgent.DeleteConnection(ctx, l.gw(), l.ep, mgcp.Parameters{ConnectionID: id})
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		l.deleteLater(id, err)
	}
}

// onRestart: the gateway restarted the endpoint (RFC 3435 §2.3.12,
// §4.4.6).
func (l *line) onRestart(method mgcp.RestartMethod) {
	switch method {
	case mgcp.RestartGraceful:
		// The endpoint goes out of service after the delay: calls finish
		// first; new ones are refused by the gateway. A line still
		// waiting for its audit gets it now.
		if l.state == stRestarting {
			l.resynchronise(true)
		}
		return
	case mgcp.RestartDisconnected, mgcp.RestartCancelGraceful:
		// The gateway kept its state: keep the calls whose connections
		// it still has.
		l.resynchronise(true)
		return
	}
	// restart, forced: the endpoint's connections and request are gone.
	l.issued.reset()
	l.seized, l.casUp, l.owesRLC = "", false, false
	for _, c := range []*call{l.other, l.call} {
		if c != nil {
			c.connID = ""
			c.byeReason = `Q.850;cause=41;text="MGCP gateway restarted"`
			l.endCallOf(c, "gateway restarted", false)
		}
	}
	l.resynchronise(false)
	l.register()
}

// onGatewayBack: the gateway answers again after being marked down; it
// may have kept its calls (a partition, not a reboot).
func (l *line) onGatewayBack() {
	l.resynchronise(true)
	l.register()
}

// register (re)starts the line's registration, when it has one.
func (l *line) register() {
	if l.b.regs != nil && l.b.cfg.Register && l.trunk == nil && l.rule.Peer != nil && l.rule.Peer.Register {
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
	l.flush()
	l.persistCalls()
}

// ringback is the signal the phone hears while the far end rings.
func (l *line) ringback() string {
	if s := l.rule.Gateway.Quirks.RingbackSignal; s != "" {
		return s
	}
	return "G/rt"
}
