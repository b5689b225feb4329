package bridge_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/sirupsen/logrus"
)

// env is mgsip (call agent, SIP stack, bridge) between a fake gateway
// with real RTP and a siptest PBX, all on loopback.
type env struct {
	t       *testing.T
	gw      *mgcptest.Gateway
	ca      *mgcp.CallAgent
	stack   *sip.Stack
	pbx     *siptest.Registrar
	b       *bridge.Bridge
	records chan bridge.CallRecord
	rules   *mapping.Rules
}

type envOptions struct {
	uas       func(in siptest.Incoming) siptest.Script
	lines     int
	register  bool
	ring      time.Duration
	mgcp      mgcp.Config
	faults    func(b []byte, to net.Addr) mgcptest.Fault
	viaPBX    bool // every number goes to the PBX, with local fallback
	keepalive time.Duration
	hunt      bool   // hunt group "sales" (both lines) behind number 3000
	huntHow   string // its strategy
	respond   func(cmd *mgcp.Command) *mgcp.Response
	before    func(gw *mgcptest.Gateway)                // runs before mgsip starts
	noWait    bool                                      // do not wait for the lines to be armed
	noAnswer  time.Duration                             // bridge.Config.NoAnswerTimeout
	features  mapping.Features                          // of every line
	log       *logrus.Entry                             // the bridge's logger (default: silent)
	refer     func(siptest.ReferIn) siptest.ReferScript // the PBX's part in a line's transfer
	reinvite  func(n int) int                           // the PBX's answer to its n-th re-INVITE (siptest.RegistrarConfig.Reinvite)
	transfer  time.Duration                             // bridge.Config.TransferTimeout
	realm     string                                    // the PBX peer's domain
	noCID     bool                                      // a gateway without caller id (simulator and quirk profile)
	noConfQ   bool                                      // quirk profile conference: false
	noConfGW  bool                                      // the simulator refuses confrnce (517)
	srcPort   bool                                      // check the gateway's source port
	caOpts    []mgcp.Option                             // more options for the call agent
	users     map[string]string                         // more accounts the PBX knows (user: password)
	prack     string                                    // the PBX peer's prack key
	calls     bridge.CallStore                          // bridge.Config.Calls
	stormOver func(lines int)                           // bridge.Config.OnStormOver
	trunk     int                                       // CAS trunk channels ds/ds1-1/1..N (MS) on the gateway, trunk group "pstn" to the PBX
	glare     string                                    // that group's glare rule
	trunkOut  string                                    // numbers with this prefix go out of trunk group "pstn"
	trunkNone bool                                      // that group has signaling: none (no CAS package)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.lines == 0 {
		o.lines = 2
	}
	e := &env{t: t, records: make(chan bridge.CallRecord, 1024)}
	users := map[string]string{}
	for i := 1; i <= o.lines; i++ {
		users[strconv.Itoa(1000+i)] = "pw"
	}
	for u, pw := range o.users {
		users[u] = pw
	}
	var err error
	e.pbx, err = siptest.NewRegistrar(siptest.RegistrarConfig{Users: users, UAS: o.uas, Refer: o.refer, Reinvite: o.reinvite})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.pbx.Close() })
	var setBridge func(*bridge.Bridge)
	e.ca, setBridge = listenCA(t, o.mgcp, o.caOpts...)
	gwCfg := mgcptest.GatewayConfig{Domain: "gw.test", Lines: o.lines, CallAgent: e.ca.LocalAddr().String(), RTP: true,
		Codecs: []string{"PCMU", "PCMA", "telephone-event"}, DisconnectedInitial: -1, Faults: o.faults, Respond: o.respond, NoCallerID: o.noCID,
		NoConference: o.noConfGW}
	if o.trunk > 0 {
		for i := 1; i <= o.lines; i++ {
			gwCfg.Endpoints = append(gwCfg.Endpoints, "aaln/"+strconv.Itoa(i))
		}
		for i := 1; i <= o.trunk; i++ {
			gwCfg.Endpoints = append(gwCfg.Endpoints, "ds/ds1-1/"+strconv.Itoa(i))
		}
	}
	e.gw, err = mgcptest.NewGateway(gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	gwHost, gp := hostPort(t, e.gw.Addr())
	pbxHost, pbxPort := hostPort(t, e.pbx.Addr())
	yes := true
	cfg := mapping.Config{
		Peers:     []mapping.Peer{{Name: "pbx", Host: pbxHost, Port: pbxPort, Register: &yes, Realm: o.realm, PRACK: o.prack}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gp, Codecs: []string{"PCMU", "PCMA"}, Keepalive: o.keepalive}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}},
		Lines: []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1.." + strconv.Itoa(o.lines) + "}", User: "{n+1000}",
			Password: "pw", DisplayName: "Line {n}", Features: o.features}},
		Routes: mapping.Routes{Outbound: []mapping.OutboundRoute{
			{Name: "local", Match: mapping.NumberMatch{Prefix: "1"}, Local: true},
			{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"},
		}},
	}
	if o.noCID {
		no := false
		cfg.Quirks = []mapping.QuirkProfile{{Name: "no-cid", Base: "generic", CallerID: &no}}
		cfg.Gateways[0].Quirks = "no-cid"
	}
	if o.noConfQ {
		no := false
		cfg.Quirks = append(cfg.Quirks, mapping.QuirkProfile{Name: "no-conf", Base: "generic", Conference: &no})
		cfg.Gateways[0].Quirks = "no-conf"
	}
	if o.hunt {
		cfg.HuntGroups = []mapping.HuntGroup{{Name: "sales", Lines: []string{"gw/aaln/1", "gw/aaln/2"}, Strategy: o.huntHow}}
		cfg.Routes.Inbound = []mapping.InboundRoute{{Name: "sales", Match: mapping.NumberMatch{Exact: "3000"}, HuntGroup: "sales"}}
	}
	if o.viaPBX {
		cfg.Routes.Outbound = []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx", LocalFallback: true}}
	}
	if o.srcPort {
		cfg.Gateways[0].SourcePort = gp
	}
	if o.trunk > 0 {
		cfg.Trunks = []mapping.Trunk{{Name: "pstn", Gateway: "gw", Endpoints: []string{"ds/ds1-1/{1.." + strconv.Itoa(o.trunk) + "}"},
			Peer: "pbx", DIDs: []string{"5550100-5550199"}, Signaling: "ms", Glare: o.glare}}
		if o.trunkNone {
			cfg.Trunks[0].Signaling, cfg.Trunks[0].Glare = "", ""
		}
		if o.trunkOut != "" {
			cfg.Routes.Outbound = append([]mapping.OutboundRoute{{Name: "trunk", Match: mapping.NumberMatch{Prefix: o.trunkOut}, Trunk: "pstn"}},
				cfg.Routes.Outbound...)
		}
	}
	rules, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.rules = rules
	ring := o.ring
	if ring == 0 {
		ring = 10 * time.Second
	}
	t.Cleanup(func() { _ = e.gw.Close() })
	if o.before != nil {
		o.before(e.gw)
	}
	e.b, e.stack = startBridge(t, e.ca, setBridge, rules, bridge.Config{Register: o.register, RingTimeout: ring,
		ToneTimeout: time.Second, NoAnswerTimeout: o.noAnswer, Log: o.log,
		TransferTimeout: o.transfer, OnCall: func(r bridge.CallRecord) { e.records <- r }, Calls: o.calls, OnStormOver: o.stormOver})
	// Connection accounting, as the strict gateway keeps it: when the test
	// ends (before mgsip stops), no connection may be left on the gateway
	// and no event held back in quarantine.
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := e.gw.CheckIdle()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("gateway not idle at the end: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	// Every line armed for off-hook.
	for i := 1; i <= o.lines && !o.noWait; i++ {
		e.waitSignalState("aaln/"+strconv.Itoa(i), func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	}
	for i := 1; i <= o.trunk && !o.noWait && !o.trunkNone; i++ {
		e.waitSignalState("ds/ds1-1/"+strconv.Itoa(i), func(st mgcptest.EndpointState) bool { return hasEvent(st, "MS/sup") })
	}
	if o.register {
		for i := 1; i <= o.lines; i++ {
			u := strconv.Itoa(1000 + i)
			e.waitFor("registration of "+u, func() bool { _, ok := e.pbx.Binding(u); return ok })
		}
	}
	return e
}

// listenCA binds a call agent on 127.0.0.1:0 whose commands go to the
// bridge given later to the returned setter.
func listenCA(t testing.TB, mc mgcp.Config, opts ...mgcp.Option) (*mgcp.CallAgent, func(*bridge.Bridge)) {
	t.Helper()
	var b *bridge.Bridge
	var mu sync.Mutex
	handler := mgcp.HandlerFunc(func(ctx context.Context, from netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
		mu.Lock()
		bb := b
		mu.Unlock()
		if bb == nil {
			return mgcp.NewResponse(cmd, mgcp.CodeTransientError)
		}
		return bb.HandleMGCP(ctx, from, cmd)
	})
	mc.ListenAddr = "127.0.0.1:0"
	ca, err := mgcp.Listen(mc, append([]mgcp.Option{mgcp.WithHandler(handler)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return ca, func(bb *bridge.Bridge) { mu.Lock(); b = bb; mu.Unlock() }
}

// startBridge runs a SIP stack on 127.0.0.1:0 and the bridge over ca and
// rules; cfg supplies the options. Everything stops when the test ends.
func startBridge(t testing.TB, ca *mgcp.CallAgent, setBridge func(*bridge.Bridge), rules *mapping.Rules, cfg bridge.Config) (*bridge.Bridge, *sip.Stack) {
	return startBridgeSIP(t, ca, setBridge, rules, cfg, sip.Config{})
}

// startBridgeSIP is startBridge with a SIP configuration (its listeners
// are replaced by one on 127.0.0.1:0) and options of the stack.
func startBridgeSIP(t testing.TB, ca *mgcp.CallAgent, setBridge func(*bridge.Bridge), rules *mapping.Rules, cfg bridge.Config, scfg sip.Config, opts ...sip.StackOption) (*bridge.Bridge, *sip.Stack) {
	t.Helper()
	scfg.Listeners = []sip.Listener{{Listen: "127.0.0.1:0"}}
	stack, err := sip.NewStack(scfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CallAgent, cfg.SIP, cfg.Rules = ca, stack, mapping.NewHolder(rules)
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	setBridge(b)
	stack.SetHandler(b)
	// As the daemon does: the stacks serve until the bridge has finished
	// (calls hung up, accounts unregistered).
	ctx, cancel := context.WithCancel(context.Background())
	svc, stopSvc := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = ca.Serve(svc) }()
	go func() { defer wg.Done(); _ = stack.Serve(svc) }()
	go func() { defer wg.Done(); defer stopSvc(); _ = b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = stack.Close()
	})
	return b, stack
}

// sipCaller starts a SIP stack on 127.0.0.1:0 (stopped when the test
// ends) and returns a function placing a call from 5551234 to number at
// mgsip's SIP address; cancelling ctx before the answer sends CANCEL.
func sipCaller(t *testing.T, mgsip string) func(ctx context.Context, number string, sdp []byte) *sip.Dialog {
	t.Helper()
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = caller.Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = caller.Close() })
	return func(ctx context.Context, number string, sdp []byte) *sip.Dialog {
		t.Helper()
		d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "5551234"}, To: number, Peer: mgsip, SDP: sdp})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
}

func hasEvent(st mgcptest.EndpointState, ev string) bool {
	for _, r := range st.RequestedEvents {
		if strings.EqualFold(r.Event.String(), ev) || strings.EqualFold(r.Package+"/"+r.Name, ev) {
			return true
		}
	}
	return false
}

func hasSignal(st mgcptest.EndpointState, sig string) bool {
	for _, s := range st.Signals {
		if strings.EqualFold(s.Package+"/"+s.Name, sig) {
			return true
		}
	}
	return false
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitVerbs waits until the commands the gateway received for local are
// exactly want (verbs separated by spaces), and shows what they were if
// they never are.
func (e *env) waitVerbs(local, want string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := verbs(e.gw.Commands(), local)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: commands\n got %s\nwant %s", local, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBothConnected waits until lines 1 and 2 each have one connection,
// both sending and receiving.
func (e *env) waitBothConnected() {
	e.t.Helper()
	e.waitFor("connected", func() bool {
		st1, st2 := e.state("aaln/1"), e.state("aaln/2")
		return len(st1.Connections) == 1 && len(st2.Connections) == 1 &&
			st1.Connections[0].Mode == mgcp.ModeSendRecv && st2.Connections[0].Mode == mgcp.ModeSendRecv
	})
}

func (e *env) state(local string) mgcptest.EndpointState {
	st, _ := e.gw.State(local)
	return st
}

func (e *env) waitSignalState(local string, cond func(mgcptest.EndpointState) bool) mgcptest.EndpointState {
	e.t.Helper()
	var st mgcptest.EndpointState
	e.waitFor(local+" state", func() bool { st = e.state(local); return cond(st) })
	return st
}

func (e *env) waitSignal(local, sig string) {
	e.t.Helper()
	e.waitSignalState(local, func(st mgcptest.EndpointState) bool { return hasSignal(st, sig) })
}

func (e *env) do(f func(ctx context.Context) (*mgcp.Response, error)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := f(ctx); err != nil {
		if !heldBack(err) {
			e.t.Fatal(err)
		}
	} else if !r.Code.IsSuccess() {
		e.t.Fatalf("gateway command answered %v", r.Code)
	}
}

// heldBack reports a user action the strict gateway did not notify at
// once for a reason a real phone meets too: the off-hook was accumulated
// under the embedded dial-tone request, digits wait for the timer, or the
// event is quarantined until the call agent's next request (Q: process
// reports it then). Anything else (not requested, out of service, an
// impossible hook action) is a failure.
func heldBack(err error) bool {
	if !errors.Is(err, mgcptest.ErrNotNotified) {
		return false
	}
	for _, why := range []string{"accumulated", "collecting digits", "quarantined"} {
		if strings.Contains(err.Error(), why) {
			return true
		}
	}
	return false
}

func (e *env) offHook(local string) {
	e.t.Helper()
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.OffHook(ctx, local) })
}

func (e *env) onHook(local string) {
	e.t.Helper()
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.OnHook(ctx, local) })
}

func (e *env) flash(local string) {
	e.t.Helper()
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Flash(ctx, local) })
}

func (e *env) dial(local, digits string) {
	e.t.Helper()
	e.waitSignal(local, "L/dl")
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Collect(ctx, local, digits) })
}

func (e *env) record() bridge.CallRecord {
	e.t.Helper()
	select {
	case r := <-e.records:
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatal("no call record")
	}
	return bridge.CallRecord{}
}

// conn returns the endpoint's only connection, waiting for it.
func (e *env) conn(local string) *mgcptest.Connection {
	e.t.Helper()
	var c *mgcptest.Connection
	e.waitFor("a connection on "+local, func() bool {
		st := e.state(local)
		if len(st.Connections) == 1 {
			c = st.Connections[0]
			return true
		}
		return false
	})
	return c
}

func (e *env) noConnections(local string) {
	e.t.Helper()
	e.waitFor("no connection on "+local, func() bool { return len(e.state(local).Connections) == 0 })
}

func verbs(cmds []*mgcp.Command, local string) string {
	var out []string
	for _, c := range cmds {
		if strings.EqualFold(c.Endpoint.Local, local) {
			out = append(out, string(c.Verb))
		}
	}
	return strings.Join(out, " ")
}
