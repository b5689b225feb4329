package mgcptest

import (
	"fmt"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// The event model of a fake endpoint: what a residential gateway does
// with the events of its phone, given the call agent's current request
// (RFC 3435 §2.3.3 NotificationRequest, §4.4.1 quarantine and lock-step).
// Everything here runs with g.mu held.

// endpoint is the state of one fake endpoint: the part State reports and
// what the event model needs besides.
type endpoint struct {
	EndpointState

	dm        *mgcp.DigitMap // the compiled DigitMap
	dialed    string         // digits collected against dm under the current request
	discard   bool           // Q: discard of the current request
	loop      bool           // Q: loop of the current request
	notifying bool           // in notification state (§4.4.1)
	observed  []mgcp.Event   // events observed under the current request, not yet notified
	quar      []mgcp.Event   // quarantined events, in order
	timer     *time.Timer    // the inter-digit timer, nil when not running
	timerGen  uint64
	noCID     bool // the gateway cannot send caller id (GatewayConfig.NoCallerID)
	// trunk is the CAS state of a trunk channel (ds/...), nil on a line.
	trunk *trunkChannel

	forced     bool      // out of service after RSIP forced, until a restart
	outUntil   time.Time // out of service during a restart delay
	graceful   bool      // a graceful restart is pending
	gracefulAt time.Time
}

// inService reports whether the endpoint answers commands other than AUEP
// (RFC 3435 §4.4.6: after "forced", and until the delay of "restart"
// expires, the endpoint is out of service).
func (ep *endpoint) inService(now time.Time) bool {
	return !ep.forced && !now.Before(ep.outUntil)
}

// refusesCalls reports whether a graceful restart took effect: existing
// connections stay, new ones are refused (RFC 3435 §2.3.12).
func (ep *endpoint) refusesCalls(now time.Time) bool {
	return ep.graceful && !now.Before(ep.gracefulAt)
}

// pendingNotify is an NTFY decided while handling a command, to be sent
// once the command's response is out.
type pendingNotify struct {
	local string
	cmd   *mgcp.Command
}

// ---- what the endpoint can detect and generate (RFC 3660) ----

func nameSet(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

var dtmfNames = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "a", "b", "c", "d"}

// packages maps each package the endpoint implements (L line, D DTMF, G
// generic media; RFC 3660 §2.1, §2.2, §2.3) to its events and signals.
var packages = map[string]struct{ events, signals map[string]bool }{
	"l": {
		events: nameSet(append([]string{"hd", "hu", "hf", "oc", "of", "lsa", "t", "x"}, dtmfNames...)...),
		signals: nameSet(append([]string{"adsi", "bz", "ci", "cf", "dl", "e", "ht", "mwi", "nbz", "osi", "ot", "p",
			"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "rg", "ro", "rs", "rt", "s", "sit", "sl", "v", "vmwi",
			"wt", "wt1", "wt2", "wt3", "wt4"}, dtmfNames...)...),
	},
	"d": {
		events:  nameSet(append([]string{"t", "x", "l", "oc", "of"}, dtmfNames...)...),
		signals: nameSet(dtmfNames...),
	},
	"g": {
		events:  nameSet("mt", "ft", "ld", "pat", "oc", "of"),
		signals: nameSet("rt", "rbk", "cg", "it", "pt", "pat", "cf"),
	},
}

// packageList is the PL: the endpoint reports in AUEP.
const packageList = "L:1,G:1,D:1"

// defaultPackage is the package of an event named without one: D for
// digits and digit ranges, else L (RFC 3435 §3.2.2.4; the default
// package of an aaln endpoint is L).
func defaultPackage(name string) string {
	if strings.HasPrefix(name, "[") || (len(name) == 1 && isDTMF(name[0])) {
		return "d"
	}
	return "l"
}

func isDTMF(c byte) bool {
	return (c >= '0' && c <= '9') || c == '*' || c == '#' || (c >= 'A' && c <= 'D') || (c >= 'a' && c <= 'd')
}

// isPersistent reports the L events a gateway reports even when they are
// not requested (RFC 3660 §2.2: hd, hu and hf are persistent).
func isPersistent(e mgcp.Event) bool {
	return e.Is("L", "hd") || e.Is("L", "hu") || e.Is("L", "hf")
}

// checkEvent returns the code for an event the endpoint cannot detect:
// 518 for a package it lacks, 522 for a name the package does not have
// (RFC 3435 §2.4).
func checkEvent(ep *endpoint, e mgcp.Event) (mgcp.ReturnCode, string) {
	pkg, name := strings.ToLower(e.Package), strings.ToLower(e.Name)
	if pkg == "" {
		pkg = ep.defaultPackage(name)
	}
	if pkg == "*" {
		return 0, ""
	}
	p, ok := ep.packages()[pkg]
	if !ok {
		return mgcp.CodeUnknownPackage, "no package " + e.Package
	}
	if name == "*" || name == "all" || (strings.HasPrefix(name, "[") && (pkg == "d" || pkg == "l")) || p.events[name] {
		return 0, ""
	}
	return mgcp.CodeNoSuchEventOrSignal, "no event " + e.String()
}

// checkSignal returns the code for a signal the endpoint cannot generate:
// 518 for a package it lacks, 513 otherwise (RFC 3435 §2.4).
func checkSignal(ep *endpoint, s mgcp.Event) (mgcp.ReturnCode, string) {
	pkg, name := strings.ToLower(s.Package), strings.ToLower(s.Name)
	if pkg == "" {
		pkg = ep.defaultPackage(name)
	}
	p, ok := ep.packages()[pkg]
	if !ok {
		return mgcp.CodeUnknownPackage, "no package " + s.Package
	}
	if !p.signals[name] {
		return mgcp.CodeCannotGenerateSignal, "cannot generate " + s.String()
	}
	return 0, ""
}

// isOnOff reports the on/off signals, which stay until turned off and are
// not stopped by events or replaced by a new S: (RFC 3435 §2.3.3 signal
// types; RFC 3660: L/vmwi is OO).
func isOnOff(s mgcp.Event) bool { return s.Is("L", "vmwi") }

// ---- requests ----

// quarantineMode reads Q: (RFC 3435 §3.2.2.14): "process" or "discard",
// "step" or "loop", in any order; the defaults are process and step.
func quarantineMode(q string) (discard, loop bool, ok bool) {
	if strings.TrimSpace(q) == "" {
		return false, false, true
	}
	seenPD, seenSL := false, false
	for _, v := range strings.Split(q, ",") {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "process", "discard":
			if seenPD {
				return false, false, false
			}
			seenPD, discard = true, strings.EqualFold(strings.TrimSpace(v), "discard")
		case "step", "loop":
			if seenSL {
				return false, false, false
			}
			seenSL, loop = true, strings.EqualFold(strings.TrimSpace(v), "loop")
		default:
			return false, false, false
		}
	}
	return discard, loop, true
}

// actions is the meaning of a requested event's action list.
type actions struct {
	notify, accumulate, digits, ignore, keep bool
	embedded                                 *mgcp.EmbeddedRequest
}

// actionsOf reads an action list; with no list the gateway notifies
// (RFC 3435 §3.2.2.16). ok is false for an illegal combination: at most
// one of N, A, D and I, and I with nothing else (§2.3.3).
func actionsOf(r mgcp.RequestedEvent) (a actions, ok bool) {
	n := 0
	for _, x := range r.Actions {
		switch strings.ToUpper(x.Code) {
		case mgcp.ActionNotify:
			a.notify, n = true, n+1
		case mgcp.ActionAccumulate:
			a.accumulate, n = true, n+1
		case mgcp.ActionDigitMap:
			a.digits, n = true, n+1
		case mgcp.ActionIgnore:
			a.ignore, n = true, n+1
		case mgcp.ActionKeep:
			a.keep = true
		case mgcp.ActionEmbedded:
			a.embedded = x.Embedded
		case mgcp.ActionSwap:
			// Swap audio (call waiting): nothing to do for a fake.
		default:
			return a, false // extension actions are not supported
		}
	}
	if n > 1 || (a.ignore && len(r.Actions) > 1) {
		return a, false
	}
	if n == 0 && a.embedded == nil {
		a.notify = true // no N/A/D/I: notify (K or S alone included)
	}
	return a, true
}

// checkRequest validates the notification request a command carries
// (RQNT, or X: with CRCX/MDCX/DLCX) against the endpoint, and returns a
// failure response or nil. Nothing changes when it fails.
func checkRequest(ep *endpoint, cmd *mgcp.Command) *mgcp.Response {
	p := &cmd.Parameters
	if r := checkCallerID(ep, cmd, p.Signals, p.RequestedEvents); r != nil {
		return r
	}
	if p.RequestID == "" {
		if p.RequestedEvents != nil || p.DigitMap != "" || p.QuarantineHandling != "" {
			return resp(cmd, mgcp.CodeProtocolError, "R:, D: and Q: need X:")
		}
		if r := checkSignals(ep, cmd, p.Signals); r != nil || ep.trunk == nil {
			return r
		}
		return checkTrunkSignals(ep, cmd, p.Signals)
	}
	if _, _, ok := quarantineMode(p.QuarantineHandling); !ok {
		return resp(cmd, mgcp.CodeUnknownQuarantine, "")
	}
	hasMap := ep.DigitMap != ""
	if p.DigitMap != "" {
		if _, err := mgcp.CompileDigitMap(p.DigitMap); err != nil {
			return resp(cmd, mgcp.CodeProtocolError, err.Error())
		}
		hasMap = true
	}
	if ep.trunk != nil {
		// A trunk channel has no hook: its packages decide (trunk.go).
		if r := checkRequested(ep, cmd, p.RequestedEvents, hasMap, 0); r != nil {
			return r
		}
		if r := checkSignals(ep, cmd, p.Signals); r != nil {
			return r
		}
		return checkTrunkSignals(ep, cmd, p.Signals)
	}
	// Hook-state checks (RFC 3660 §2.2 L/hd, L/hu; RFC 3435 §2.4 codes
	// 401 and 402): asking to be told of a transition to the state the
	// phone is already in is refused.
	for _, r := range p.RequestedEvents {
		switch {
		case r.Is("L", "hd") && ep.OffHook:
			return resp(cmd, mgcp.CodeOffHook, "phone already off hook")
		case r.Is("L", "hu") && !ep.OffHook:
			return resp(cmd, mgcp.CodeOnHook, "phone already on hook")
		}
	}
	if r := checkRequested(ep, cmd, p.RequestedEvents, hasMap, 0); r != nil {
		return r
	}
	return checkSignals(ep, cmd, p.Signals)
}

func checkRequested(ep *endpoint, cmd *mgcp.Command, rs []mgcp.RequestedEvent, hasMap bool, depth int) *mgcp.Response {
	for _, r := range rs {
		if code, why := checkEvent(ep, r.Event); code != 0 {
			return resp(cmd, code, why)
		}
		a, ok := actionsOf(r)
		if !ok {
			return resp(cmd, mgcp.CodeUnknownAction, "actions of "+r.Event.String())
		}
		if emb := a.embedded; emb != nil {
			inner := hasMap
			if emb.DigitMap != "" {
				if _, err := mgcp.CompileDigitMap(emb.DigitMap); err != nil {
					return resp(cmd, mgcp.CodeProtocolError, err.Error())
				}
				inner = true
			}
			if x := checkRequested(ep, cmd, emb.RequestedEvents, inner, depth+1); x != nil {
				return x
			}
			if x := checkSignals(ep, cmd, emb.Signals); x != nil {
				return x
			}
		}
		// RFC 3435 §2.3.3: action D without a digit map is 519.
		if a.digits && !hasMap {
			return resp(cmd, mgcp.CodeNoDigitMap, "")
		}
	}
	return nil
}

func checkSignals(ep *endpoint, cmd *mgcp.Command, ss []mgcp.Event) *mgcp.Response {
	for _, s := range ss {
		if code, why := checkSignal(ep, s); code != 0 {
			return resp(cmd, code, why)
		}
	}
	return nil
}

// setSignals applies a signal list: on/off signals switch their state;
// the rest replace the current time-out and brief signals (RFC 3435
// §2.3.3: a new SignalRequests list replaces the signals in progress).
func setSignals(ep *endpoint, ss []mgcp.Event) {
	kept := []mgcp.Event{}
	for _, s := range ss {
		if isOnOff(s) {
			ep.MWI = s.Param(0) != "-"
			continue
		}
		kept = append(kept, s)
	}
	ep.Signals = kept
}

// applyRequest installs a request checked by checkRequest, ends the
// notification state and evaluates the quarantined events against the new
// request (RFC 3435 §4.4.1). It returns the notifications that follow.
func (g *Gateway) applyRequest(ep *endpoint, cmd *mgcp.Command) []pendingNotify {
	p := &cmd.Parameters
	if p.NotifiedEntity != "" {
		ep.NotifiedEntity = p.NotifiedEntity
	}
	if p.RequestID == "" {
		if p.Signals != nil {
			setSignals(ep, p.Signals)
		}
		return g.trunkSignals(ep, p.Signals, false)
	}
	ep.RequestID = p.RequestID
	ep.RequestedEvents = append([]mgcp.RequestedEvent{}, p.RequestedEvents...)
	if p.DigitMap != "" {
		// An omitted D: keeps the current digit map (RFC 3435 §2.3.3).
		ep.DigitMap = p.DigitMap
		ep.dm, _ = mgcp.CompileDigitMap(p.DigitMap)
	}
	ep.QuarantineHandling = p.QuarantineHandling
	ep.discard, ep.loop, _ = quarantineMode(p.QuarantineHandling)
	// A new request starts a new list of observed events and a new dial
	// string; its S: (absent means none) replaces the signals.
	ep.observed, ep.dialed = nil, ""
	g.stopTimer(ep)
	setSignals(ep, p.Signals)
	ep.notifying = false
	q := ep.quar
	ep.quar = nil
	var out []pendingNotify
	if ep.discard {
		return g.trunkSignals(ep, p.Signals, true)
	}
	for i, e := range q {
		if ep.notifying {
			// A quarantined event notified: the rest wait for the next
			// request.
			ep.quar = append(ep.quar, q[i:]...)
			break
		}
		if n, _ := g.evaluate(ep, e); n != nil {
			out = append(out, pendingNotify{local: ep.Name.Local, cmd: n})
		}
	}
	return append(out, g.trunkSignals(ep, p.Signals, true)...)
}

// ---- events ----

// Reasons for ErrNotNotified.
var (
	errQuarantined  = fmt.Errorf("%w: quarantined", ErrNotNotified)
	errNotRequested = fmt.Errorf("%w: not requested", ErrNotNotified)
	errIgnored      = fmt.Errorf("%w: ignored (action I)", ErrNotNotified)
	errAccumulated  = fmt.Errorf("%w: accumulated", ErrNotNotified)
	errCollecting   = fmt.Errorf("%w: collecting digits", ErrNotNotified)
	errOutOfService = fmt.Errorf("%w: endpoint out of service", ErrNotNotified)
)

// detect handles an event of the phone: quarantined in notification
// state, else evaluated against the current request. It returns the NTFY
// to send, or why there is none.
func (g *Gateway) detect(ep *endpoint, e mgcp.Event) (*mgcp.Command, error) {
	if !ep.inService(time.Now()) {
		return nil, errOutOfService
	}
	if ep.notifying {
		ep.quar = append(ep.quar, e)
		return nil, errQuarantined
	}
	return g.evaluate(ep, e)
}

// matchRequested returns the first requested event that e satisfies.
func matchRequested(rs []mgcp.RequestedEvent, e mgcp.Event) (mgcp.RequestedEvent, bool) {
	for _, r := range rs {
		if eventMatches(r.Event, e) {
			return r, true
		}
	}
	return mgcp.RequestedEvent{}, false
}

// eventMatches reports whether an observed event e (with its package)
// satisfies the requested event r: same package ("*" for any; D or L for
// digits), same name, "all"/"*", a digit range, or X for any digit
// (RFC 3435 §3.2.2.4, RFC 3660 §2.1).
func eventMatches(r, e mgcp.Event) bool {
	pkg := strings.ToLower(r.Package)
	if pkg == "" {
		pkg = defaultPackage(r.Name)
	}
	digit := len(e.Name) == 1 && (isDTMF(e.Name[0]) || e.Name == "T")
	if pkg != "*" && !strings.EqualFold(pkg, e.Package) && !(digit && pkg == "l") {
		return false
	}
	name := r.Name
	switch {
	case name == "*" || strings.EqualFold(name, "all"):
		return true
	case strings.HasPrefix(name, "["):
		return digit && inRange(name, e.Name[0])
	case strings.EqualFold(name, "x"):
		return e.Name[0] >= '0' && e.Name[0] <= '9'
	}
	return strings.EqualFold(name, e.Name)
}

// inRange reports whether c is in a digit range such as [0-9#*T].
func inRange(rng string, c byte) bool {
	s := strings.Trim(rng, "[]")
	c = upperByte(c)
	for i := 0; i < len(s); i++ {
		x := upperByte(s[i])
		if i+2 < len(s) && s[i+1] == '-' {
			if c >= x && c <= upperByte(s[i+2]) {
				return true
			}
			i += 2
			continue
		}
		if x == c || (x == 'X' && c >= '0' && c <= '9') {
			return true
		}
	}
	return false
}

func upperByte(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// evaluate runs an event through the current request (RFC 3435 §2.3.3).
func (g *Gateway) evaluate(ep *endpoint, e mgcp.Event) (*mgcp.Command, error) {
	r, ok := matchRequested(ep.RequestedEvents, e)
	var a actions
	switch {
	case ok:
		a, _ = actionsOf(r) // checked when the request came
	case isPersistent(e) || ep.casPersistent(e):
		a.notify = true // persistent events notify unrequested (RFC 3660 §2.2, RFC 3064 §2.7)
	default:
		return nil, errNotRequested
	}
	if a.ignore {
		return nil, errIgnored
	}
	// A requested event stops the time-out signals unless K is given
	// (RFC 3435 §2.3.3); on/off signals are not affected.
	if !a.keep {
		ep.Signals = []mgcp.Event{}
	}
	ep.observed = append(ep.observed, e)
	if emb := a.embedded; emb != nil {
		// Embedded request: the new R/S/D apply at once and observed
		// events keep accumulating (RFC 3435 §2.3.3).
		if emb.RequestedEvents != nil {
			ep.RequestedEvents = append([]mgcp.RequestedEvent{}, emb.RequestedEvents...)
		}
		if emb.Signals != nil {
			setSignals(ep, emb.Signals)
		}
		if emb.DigitMap != "" {
			ep.DigitMap = emb.DigitMap
			ep.dm, _ = mgcp.CompileDigitMap(emb.DigitMap)
			ep.dialed = ""
			g.stopTimer(ep)
		}
	}
	switch {
	case a.notify:
		return g.notification(ep), nil
	case a.digits:
		return g.collect(ep, e)
	case a.accumulate:
		return nil, errAccumulated
	}
	return nil, errAccumulated // E alone
}

// collect adds a digit to the dial string and checks the digit map
// (RFC 3435 §2.1.5): a match or a mismatch notifies; a string that can
// still grow starts the inter-digit timer, short when the timer alone
// could complete a match, long otherwise.
func (g *Gateway) collect(ep *endpoint, e mgcp.Event) (*mgcp.Command, error) {
	if ep.dm == nil {
		return g.notification(ep), nil
	}
	ep.dialed += strings.ToUpper(e.Name)
	switch ep.dm.Match(ep.dialed) {
	case mgcp.Match, mgcp.NoMatch:
		return g.notification(ep), nil
	case mgcp.MatchAfterTimer:
		g.armTimer(ep, g.cfg.DigitTimeout)
	default:
		g.armTimer(ep, g.cfg.DigitLongTimeout)
	}
	return nil, errCollecting
}

// notification builds the NTFY for the observed events and enters the
// notification state, unless Q: loop (RFC 3435 §4.4.1).
func (g *Gateway) notification(ep *endpoint) *mgcp.Command {
	x := ep.RequestID
	if x == "" {
		// No request yet (or since a restart): persistent events are
		// reported with request identifier 0.
		x = "0"
	}
	cmd := &mgcp.Command{Verb: mgcp.VerbNTFY, Endpoint: ep.Name, Parameters: mgcp.Parameters{
		NotifiedEntity: ep.NotifiedEntity, RequestID: x, ObservedEvents: ep.observed}}
	ep.observed, ep.dialed = nil, ""
	g.stopTimer(ep)
	if !ep.loop {
		ep.notifying = true
	}
	return cmd
}

// armTimer (re)starts the inter-digit timer; d <= 0 leaves it off. The
// timer's goroutine is counted in g.bg.
func (g *Gateway) armTimer(ep *endpoint, d time.Duration) {
	g.stopTimer(ep)
	if d <= 0 || g.closed {
		return
	}
	ep.timerGen++
	gen := ep.timerGen
	g.bg.Add(1)
	ep.timer = time.AfterFunc(d, func() {
		defer g.bg.Done()
		g.digitTimeout(ep, gen)
	})
}

// stopTimer stops the inter-digit timer.
func (g *Gateway) stopTimer(ep *endpoint) {
	if ep.timer == nil {
		return
	}
	if ep.timer.Stop() {
		g.bg.Done() // its function will not run
	}
	ep.timer = nil
}

// digitTimeout adds the timer event T to the dial string and notifies
// (RFC 3435 §2.1.5: the timer completes a match or ends the collection).
func (g *Gateway) digitTimeout(ep *endpoint, gen uint64) {
	g.mu.Lock()
	if ep.timer == nil || ep.timerGen != gen || g.closed {
		g.mu.Unlock()
		return
	}
	ep.timer = nil
	ep.dialed += "T"
	ep.observed = append(ep.observed, mgcp.Event{Package: "D", Name: "T"})
	n := g.notification(ep)
	local := ep.Name.Local
	g.mu.Unlock()
	_, _ = g.send(g.ctx, local, n)
}

// checkCallerID applies the rules of the caller id signal L/ci(time,
// number, name) (RFC 3660 §2.4) to the signals of a request, embedded
// ones included: exactly three parameters, the time empty or
// MM/DD/HH/MM, else 538; a gateway configured without caller id cannot
// generate it (513).
func checkCallerID(ep *endpoint, cmd *mgcp.Command, ss []mgcp.Event, rs []mgcp.RequestedEvent) *mgcp.Response {
	for _, s := range ss {
		if !s.Is("L", "ci") {
			continue
		}
		if ep.noCID {
			return resp(cmd, mgcp.CodeCannotGenerateSignal, "this gateway sends no caller id")
		}
		if len(s.Params) != 3 || !cidTime(s.Param(0)) {
			return resp(cmd, mgcp.CodeEventParameterError, "L/ci wants (MM/DD/HH/MM,number,name): "+s.String())
		}
	}
	for _, r := range rs {
		for _, a := range r.Actions {
			if a.Embedded != nil {
				if x := checkCallerID(ep, cmd, a.Embedded.Signals, a.Embedded.RequestedEvents); x != nil {
					return x
				}
			}
		}
	}
	return nil
}

// cidTime checks the time of a caller id: empty, or month/day/hour/
// minute, two digits each, in range.
func cidTime(t string) bool {
	if t == "" {
		return true
	}
	f := strings.Split(t, "/")
	if len(f) != 4 {
		return false
	}
	max := []int{12, 31, 23, 59}
	for i, v := range f {
		if len(v) != 2 || v[0] < '0' || v[0] > '9' || v[1] < '0' || v[1] > '9' {
			return false
		}
		n := int(v[0]-'0')*10 + int(v[1]-'0')
		if n > max[i] || (i < 2 && n == 0) {
			return false
		}
	}
	return true
}
