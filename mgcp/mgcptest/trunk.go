package mgcptest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mgsip/mgsip/mgcp"
)

// Trunk channels: endpoints whose local name starts with "ds/" are
// channels of a CAS trunk (RFC 3435 §2.1.1 names them ds/ds1-1/N). They
// have no hook and speak one of the RFC 3064 CAS packages instead of L:
// MS (MF single stage dialing: wink start, immediate start, FGD
// terminating) or DT (immediate start with DTMF or dial pulse), chosen
// with GatewayConfig.TrunkPackage, plus G and D.
//
// As in RFC 3064, the gateway runs the line signalling of the trunk
// itself (seizure, wink or immediate start, collecting the MF or DTMF
// address) and reports it to the call agent at the level of the call:
//
//   - sup (setup): the far end seized the channel and sent its address,
//     observed as sup(addr(<digits>)) and, when the far end sent a
//     calling number (FGD ANI), sup(addr(<digits>),ani(<digits>)). As a
//     signal with addr(<digits>) the call agent seizes the channel toward
//     the far end and outpulses the address. RFC 3064's package tables
//     (the MO table was read; MS and DT are taken to match) give sup
//     the signal type TO (time-out, RFC 3435 §2.3.3), not BR:
//     the signal stays active until it completes, reported as oc
//     (operation complete: the address is out), or fails, reported as of
//     (operation failure: no seizure acknowledgement). Like every TO
//     signal it is stopped by a later request whose S: leaves it out and
//     by the detection of a requested event (RFC 3435 §2.3.3): in glare
//     the far end's sup stops the call agent's, so keeping the channel
//     takes a second sup signal.
//   - ans (answer): RFC 3064 §2.7 lists it as "P + BR" in DT and MS: a
//     persistent event (reported even when not requested, RFC 3435
//     §2.3.3) when the far end answers a call the call agent placed, and
//     a brief signal that answers a call the far end placed.
//   - rel (release): the event when the far end releases; the brief
//     signal releases the channel toward the far end.
//   - rlc (release complete): the event when the far end completed the
//     release the call agent asked for; the brief signal completes a
//     release the far end started.
//   - ro, bz, rbk: reorder, busy and ringback tones toward the far end
//     (time-out signals).
//
// What of this could be checked against RFC 3064's text (its MO package
// table and the start of §2.7) and what could not is listed in
// docs/bridge.md, "Reading of RFC 3064".
//
// The strict rules: a CAS signal in a state where the protocol has no
// place for it (answering a channel nobody seized, releasing an idle
// channel, completing a release nobody started, seizing a busy channel)
// is refused with 530 (CAS signaling protocol error, RFC 3435 §2.4) and
// changes nothing; sup without an addr(...) of digits is 538 (event or
// signal parameter error). An event or signal of the L package on a
// channel is 518, as MS or DT on a line. A channel left seized at the
// end of a test fails CheckIdle, as a connection does.

// ErrTrunkState is returned by a far-end action that the channel's
// state does not allow (seizing a seized channel, releasing an idle one).
var ErrTrunkState = errors.New("mgcptest: not possible in the trunk channel's state")

// Seizure states of a trunk channel (EndpointState.Seizure).
const (
	SeizureIdle     = ""         // not seized
	SeizureIncoming = "incoming" // the far end seized it (sup observed)
	SeizureOutgoing = "outgoing" // the call agent seized it (sup signal)
	SeizureGlare    = "glare"    // both at once: the call agent's next request decides
	SeizureReleased = "released" // the far end released; waiting for rlc
)

// trunkChannel is the CAS state of one channel.
type trunkChannel struct {
	pkg       string    // "ms" or "dt"
	glare     *seizure  // armed by ArmGlare for the next seizure
	crossing  *crossing // armed by SeizeBefore
	answered  bool
	seizure   string
	outpulsed string
}

// seizure is a far-end seizure waiting for the call agent's next one.
type seizure struct{ addr, ani string }

// crossing is a far-end seizure that happens as the call agent's next
// command of verb reaches the gateway.
type crossing struct {
	verb mgcp.Verb
	seizure
}

// trunkPackages is the set of packages of a trunk channel speaking pkg.
func trunkPackages(pkg string) map[string]struct{ events, signals map[string]bool } {
	return map[string]struct{ events, signals map[string]bool }{
		pkg: {events: nameSet("sup", "ans", "rel", "rlc", "oc", "of"),
			signals: nameSet("sup", "ans", "rel", "rlc", "ro", "bz", "rbk")},
		"g": packages["g"],
		"d": packages["d"],
	}
}

// packages are the packages the endpoint implements.
func (ep *endpoint) packages() map[string]struct{ events, signals map[string]bool } {
	if ep.trunk != nil {
		return trunkPackages(ep.trunk.pkg)
	}
	return packages
}

// defaultPackage is the package of an event or signal named without
// one: digits are D; the rest L on a line, the CAS package on a channel.
func (ep *endpoint) defaultPackage(name string) string {
	d := defaultPackage(name)
	if d == "l" && ep.trunk != nil {
		return ep.trunk.pkg
	}
	return d
}

// packageList is the PL: the endpoint reports in AUEP.
func (ep *endpoint) packageList() string {
	if ep.trunk != nil {
		return strings.ToUpper(ep.trunk.pkg) + ":1,G:1,D:1"
	}
	return packageList
}

// connectionLimit is how many connections the endpoint holds at once:
// two on a line (call waiting, three-way calling), one on a trunk
// channel, which is one DS0 that a T1 CAS gateway connects to one RTP
// stream; a second CRCX is refused with 540 (per-endpoint connection
// limit exceeded, RFC 3435 §2.4) until the first is deleted.
func (ep *endpoint) connectionLimit() int {
	if ep.trunk != nil {
		return 1
	}
	return 2
}

// casPersistent reports the CAS events a channel reports even when they
// are not requested: ans, which RFC 3064 §2.7 gives the attribute P
// (persistent) in the DT and MS packages.
func (ep *endpoint) casPersistent(e mgcp.Event) bool {
	return ep.trunk != nil && ep.trunk.isCAS(e, "ans")
}

// isCAS reports a signal of the channel's CAS package.
func (t *trunkChannel) isCAS(s mgcp.Event, name string) bool {
	return strings.EqualFold(s.Package, t.pkg) && strings.EqualFold(s.Name, name)
}

// addrParam reads a named parameter such as addr(5551234) of an event.
func addrParam(e mgcp.Event, name string) string {
	for _, p := range e.Params {
		p = strings.TrimSpace(p)
		if len(p) > len(name)+1 && strings.EqualFold(p[:len(name)+1], name+"(") && strings.HasSuffix(p, ")") {
			return p[len(name)+1 : len(p)-1]
		}
	}
	return ""
}

func digitsOnly(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDTMF(s[i]) {
			return false
		}
	}
	return true
}

// checkTrunkSignals refuses CAS signals the channel's state has no place
// for (530) and a seizure without an address (538), before anything
// changes.
func checkTrunkSignals(ep *endpoint, cmd *mgcp.Command, ss []mgcp.Event) *mgcp.Response {
	t := ep.trunk
	seized := t.seizure
	if seized == SeizureGlare && cmd.RequestID != "" {
		// The request settles the glare first: sup keeps the channel
		// for the call agent's call, anything else yields it.
		seized = SeizureIncoming
		for _, s := range ss {
			if t.isCAS(s, "sup") {
				seized = SeizureIdle
			}
		}
	}
	for _, s := range ss {
		if !strings.EqualFold(s.Package, t.pkg) {
			continue
		}
		bad := ""
		switch strings.ToLower(s.Name) {
		case "sup":
			if !digitsOnly(addrParam(s, "addr")) {
				return resp(cmd, mgcp.CodeEventParameterError, "sup needs addr(<digits>): "+s.String())
			}
			if seized != SeizureIdle {
				bad = "channel already seized (" + t.seizure + ")"
			}
		case "ans":
			if seized != SeizureIncoming || t.answered {
				bad = "nothing to answer"
			}
		case "rel":
			if seized == SeizureIdle || seized == SeizureReleased {
				bad = "nothing to release"
			}
		case "rlc":
			if seized != SeizureReleased {
				bad = "no release to complete"
			}
		case "ro", "bz", "rbk":
			if seized == SeizureIdle {
				bad = "tone on an idle channel"
			}
		}
		if bad != "" {
			return resp(cmd, mgcp.CodeCASError, s.String()+": "+bad)
		}
	}
	return nil
}

// trunkSignals applies the CAS signals of a request that checkTrunkSignals
// accepted and returns the notifications the far end's reaction causes.
// withRequest says the command carried a request (X:), which is the call
// agent's answer to a glare.
func (g *Gateway) trunkSignals(ep *endpoint, ss []mgcp.Event, withRequest bool) []pendingNotify {
	t := ep.trunk
	if t == nil {
		return nil
	}
	var events []mgcp.Event
	seize := ""
	for _, s := range ss {
		switch {
		case t.isCAS(s, "sup"):
			seize = addrParam(s, "addr")
		case t.isCAS(s, "ans"):
			t.answered = true
		case t.isCAS(s, "rel"):
			// The far end releases at once: release complete.
			t.seizure, t.answered, t.outpulsed = SeizureIdle, false, ""
			events = append(events, mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "rlc"})
		case t.isCAS(s, "rlc"):
			t.seizure, t.answered, t.outpulsed = SeizureIdle, false, ""
		}
	}
	switch {
	case t.seizure == SeizureGlare && withRequest && seize != "":
		// The call agent keeps its seizure: the far end backs off and
		// the address goes out.
		t.seizure, t.outpulsed = SeizureOutgoing, seize
		events = append(events, mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "oc"})
	case t.seizure == SeizureGlare && withRequest:
		// The call agent yields: the channel carries the far end's call.
		t.seizure, t.outpulsed = SeizureIncoming, ""
	case seize != "" && t.glare != nil:
		// Both ends seized at once: the far end's seizure is reported;
		// the call agent's next request keeps (sup again) or yields.
		in := t.glare
		t.glare = nil
		t.seizure = SeizureGlare
		events = append(events, supEvent(t, in.addr, in.ani))
	case seize != "":
		t.seizure, t.outpulsed = SeizureOutgoing, seize
		events = append(events, mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "oc"})
	}
	// ans, rel and rlc are brief (RFC 3435 §2.3.3 signal types): done
	// once applied. sup is a TO signal (RFC 3064 package tables, read for MO) that is
	// over by now: completed (oc), or, in glare, stopped by the detection
	// of the far end's requested sup (a requested event stops the TO
	// signals, RFC 3435 §2.3.3), which is why the call agent that keeps
	// the channel must send sup again. The tones keep playing.
	playing := ep.Signals[:0:0]
	for _, s := range ep.Signals {
		if strings.EqualFold(s.Package, t.pkg) && !t.isCAS(s, "ro") && !t.isCAS(s, "bz") && !t.isCAS(s, "rbk") {
			continue
		}
		playing = append(playing, s)
	}
	ep.Signals = playing
	var out []pendingNotify
	for _, e := range events {
		if n, _ := g.detect(ep, e); n != nil {
			out = append(out, pendingNotify{local: ep.Name.Local, cmd: n})
		}
	}
	return out
}

func supEvent(t *trunkChannel, addr, ani string) mgcp.Event {
	e := mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "sup", Params: []string{"addr(" + addr + ")"}}
	if ani != "" {
		e.Params = append(e.Params, "ani("+ani+")")
	}
	return e
}

// trunkAct runs a far-end action on a trunk channel, like act does for a
// phone.
func (g *Gateway) trunkAct(ctx context.Context, local string, change func(t *trunkChannel) (mgcp.Event, error)) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok || ep.trunk == nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("mgcptest: no trunk channel %q", local)
	}
	e, err := change(ep.trunk)
	if err != nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", err, ep.Name)
	}
	n, why := g.detect(ep, e)
	g.mu.Unlock()
	if n == nil {
		return nil, why
	}
	return g.send(ctx, local, n)
}

// Seize is the far end seizing an idle channel and sending addr (and,
// with FGD, its calling number ani; "" for none): the gateway answers the
// seizure itself (wink for MS, immediate start for DT), collects the
// address and reports sup(addr(...)) when the call agent asked for it.
func (g *Gateway) Seize(ctx context.Context, local, addr, ani string) (*mgcp.Response, error) {
	if !digitsOnly(addr) || (ani != "" && !digitsOnly(ani)) {
		return nil, fmt.Errorf("mgcptest: %q/%q are not digits", addr, ani)
	}
	return g.trunkAct(ctx, local, func(t *trunkChannel) (mgcp.Event, error) {
		if t.seizure != SeizureIdle {
			return mgcp.Event{}, fmt.Errorf("%w: seized (%s)", ErrTrunkState, t.seizure)
		}
		t.seizure = SeizureIncoming
		return supEvent(t, addr, ani), nil
	})
}

// TrunkAnswer is the far end answering the call the call agent placed on
// the channel: ans.
func (g *Gateway) TrunkAnswer(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.trunkAct(ctx, local, func(t *trunkChannel) (mgcp.Event, error) {
		if t.seizure != SeizureOutgoing || t.answered {
			return mgcp.Event{}, fmt.Errorf("%w: no outgoing call to answer (%s)", ErrTrunkState, t.seizure)
		}
		t.answered = true
		return mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "ans"}, nil
	})
}

// TrunkRelease is the far end releasing the channel: rel. The call agent
// must complete the release with the rlc signal.
func (g *Gateway) TrunkRelease(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.trunkAct(ctx, local, func(t *trunkChannel) (mgcp.Event, error) {
		if t.seizure == SeizureIdle || t.seizure == SeizureReleased {
			return mgcp.Event{}, fmt.Errorf("%w: not seized", ErrTrunkState)
		}
		t.seizure, t.answered = SeizureReleased, false
		return mgcp.Event{Package: strings.ToUpper(t.pkg), Name: "rel"}, nil
	})
}

// ArmGlare makes the call agent's next seizure of the channel meet the
// far end's seizure with addr (and ani) at the same moment: the gateway
// reports the far end's sup instead of oc, and the call agent's next
// request settles it (sup again keeps the channel, anything else yields).
func (g *Gateway) ArmGlare(local, addr, ani string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok || ep.trunk == nil {
		return fmt.Errorf("mgcptest: no trunk channel %q", local)
	}
	if !digitsOnly(addr) {
		return fmt.Errorf("mgcptest: %q is not digits", addr)
	}
	ep.trunk.glare = &seizure{addr: addr, ani: ani}
	return nil
}

// SeizeBefore makes the far end seize the idle channel with addr (and
// ani) just before the gateway runs the call agent's next command of verb
// on it: the far end's seizure crossed that command on the wire. The
// seizure is detected against the request then in force, as Seize does:
// reported at once when sup is requested (the NTFY is sent and answered
// before the command runs), quarantined while the endpoint waits for a
// new request (lock-step, RFC 3435 §4.4.1), lost when not requested. The
// command then meets a channel the far end holds: a sup signal in it is
// refused with 530. A channel no longer idle when the command comes is
// left alone (the far end finds it busy).
func (g *Gateway) SeizeBefore(local string, verb mgcp.Verb, addr, ani string) error {
	if !digitsOnly(addr) || (ani != "" && !digitsOnly(ani)) {
		return fmt.Errorf("mgcptest: %q/%q are not digits", addr, ani)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok || ep.trunk == nil {
		return fmt.Errorf("mgcptest: no trunk channel %q", local)
	}
	ep.trunk.crossing = &crossing{verb: verb, seizure: seizure{addr: addr, ani: ani}}
	return nil
}

// crossSeizure runs the far-end seizure SeizeBefore armed for cmd, if
// any, before cmd is executed; it must be called without g.mu.
func (g *Gateway) crossSeizure(cmd *mgcp.Command) {
	if !strings.EqualFold(cmd.Endpoint.Domain, g.cfg.Domain) {
		return
	}
	local := cmd.Endpoint.Local
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok || ep.trunk == nil || ep.trunk.crossing == nil || !strings.EqualFold(string(ep.trunk.crossing.verb), string(cmd.Verb)) {
		g.mu.Unlock()
		return
	}
	t := ep.trunk
	x := t.crossing
	t.crossing = nil
	if t.seizure != SeizureIdle {
		g.mu.Unlock()
		return
	}
	t.seizure = SeizureIncoming
	n, _ := g.detect(ep, supEvent(t, x.addr, x.ani))
	g.mu.Unlock()
	if n != nil {
		_, _ = g.send(g.ctx, local, n)
	}
}

// trunkState copies the CAS state into st.
func (t *trunkChannel) state(st *EndpointState) {
	st.Trunk = true
	st.Seizure = t.seizure
	st.Answered = t.answered
	st.Outpulsed = t.outpulsed
}

// reset forgets the CAS state, as a restart does.
func (t *trunkChannel) reset() {
	t.seizure, t.answered, t.outpulsed, t.glare, t.crossing = SeizureIdle, false, "", nil, nil
}
