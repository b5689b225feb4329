package bridge_test

// Interop tests for the line-correctness defects of issue 10: a line
// must survive a gateway that refuses or ignores CRCX, must hang up the
// SIP side and play a tone when the gateway deletes the connection of a
// call, and must send in-call DTMF as INFO before the BYE of an on-hook.
// SIPp is the far end; Kamailio is the registrar and proxy of the
// incoming call that the gateway tears down, as in
// TestInteropSIPpKamailioSimulator. The CRCX failure tests let SIPp call
// mgsip directly: on the current bridge they panic the test binary, which
// then runs no cleanup, and a Kamailio would outlive it (SIPp ends by its
// own -timeout). Every wait is bounded (simDriver.waitFor, SIPp.WaitFor,
// recv timeouts in the scenarios).

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
)

// What the fake gateway does with a CRCX.
const (
	crcxNormal   int32 = iota // answer it
	crcxNotReady              // answer 501 (endpoint not ready)
	crcxSilent                // no answer ever reaches the call agent
)

// faultRig is mgsip (call agent with short retransmission timers, SIP
// stack, bridge) between a fake gateway whose CRCX behaviour the test
// switches and real SIPp (and Kamailio) processes.
type faultRig struct {
	t       *testing.T
	gw      *mgcptest.Gateway
	b       *bridge.Bridge
	kam     *testutil.Kamailio
	sipAddr string // where SIPp sends calls for the lines: Kamailio, else mgsip
	sim     simDriver
	records chan bridge.CallRecord

	crcx atomic.Int32 // crcxNormal, crcxNotReady or crcxSilent
	mu   sync.Mutex
	lost map[uint32]bool // transactions whose answers the gateway loses
}

type rigOptions struct {
	kamailio bool   // lines register at a Kamailio (incoming calls come through it)
	uas      string // host:port of a SIPp UAS that numbers 2xxx are routed to
	dtmf     string // features.dtmf of the lines
	realm    string // the SIPp peer's domain (realm)
	noThree  bool   // features.three_way off
}

// faultMGCP are call agent timers under which an unanswered command
// gives up after about 1.5 s instead of RFC 3435's 20 s.
var faultMGCP = mgcp.Config{InitialRTO: 100 * time.Millisecond, MinRTO: 50 * time.Millisecond,
	MaxRTO: 400 * time.Millisecond, TMax: 3 * time.Second, Max1: 2, Max2: 4}

func newFaultRig(t *testing.T, o rigOptions) *faultRig {
	t.Helper()
	r := &faultRig{t: t, records: make(chan bridge.CallRecord, 16), lost: map[uint32]bool{}}
	if o.kamailio {
		r.kam = testutil.StartKamailio(t, "SHA-256", 3600)
	}
	ca, setBridge := listenCA(t, faultMGCP)
	var err error
	r.gw, err = mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: 2, CallAgent: ca.LocalAddr().String(),
		RTP: true, DisconnectedInitial: -1, Respond: r.respond, Faults: r.faults})
	if err != nil {
		t.Fatal(err)
	}
	gwHost, gwPort := hostPort(t, r.gw.Addr())
	cfg := mapping.Config{
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gwPort, Keepalive: time.Second}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(xxxx)", Default: true}},
		Lines: []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1..2}", User: "{n+1000}", Password: "pw-{n+1000}",
			DisplayName: "Line {n}", Features: mapping.Features{DTMF: o.dtmf}}},
	}
	if o.noThree {
		cfg.Lines[0].Features.ThreeWay = new(bool)
	}
	if o.kamailio {
		kamHost, kamPort := hostPort(t, r.kam.Addr)
		yes := true
		cfg.Peers = append(cfg.Peers, mapping.Peer{Name: "kam", Host: kamHost, Port: kamPort, Register: &yes})
		cfg.Lines[0].Peer = "kam"
	}
	if o.uas != "" {
		uasHost, uasPort := hostPort(t, o.uas)
		cfg.Peers = append(cfg.Peers, mapping.Peer{Name: "sipp", Host: uasHost, Port: uasPort, Auth: "ip", Realm: o.realm})
		cfg.Routes.Outbound = []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: "2"}, Peer: "sipp"}}
		if cfg.Lines[0].Peer == "" {
			cfg.Lines[0].Peer = "sipp"
		}
	}
	if len(cfg.Peers) == 0 {
		// Lines need a peer; this one is never called (SIPp calls in).
		cfg.Peers = []mapping.Peer{{Name: "pbx", Host: "127.0.0.1", Auth: "ip"}}
		cfg.Lines[0].Peer = "pbx"
	}
	rules, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.gw.Close() })
	var stack *sip.Stack
	r.b, stack = startBridge(t, ca, setBridge, rules, bridge.Config{Register: o.kamailio, RingTimeout: 15 * time.Second,
		ToneTimeout: 5 * time.Second, OnCall: func(c bridge.CallRecord) { r.records <- c }})
	r.sim = simOf(t, r.gw)
	r.sipAddr = stack.LocalAddr().String()
	if o.kamailio {
		r.sipAddr = r.kam.Addr
	}
	for _, ep := range []string{"aaln/1", "aaln/2"} {
		r.waitArmed(ep)
	}
	if o.kamailio {
		r.sim.waitFor("both lines registered at Kamailio", func() bool {
			n, err := r.kam.Stat("usrloc:location_contacts")
			return err == nil && n == 2
		})
	}
	return r
}

// respond scripts the gateway's CRCX answers.
func (r *faultRig) respond(cmd *mgcp.Command) *mgcp.Response {
	if cmd.Verb != mgcp.VerbCRCX {
		return nil
	}
	switch r.crcx.Load() {
	case crcxNotReady:
		return mgcp.NewResponse(cmd, mgcp.CodeEndpointNotReady)
	case crcxSilent:
		// The answer (and its retransmissions from the response cache)
		// is dropped by faults; the fake keeps no connection, as if the
		// command itself had been lost.
		r.mu.Lock()
		r.lost[cmd.TransactionID] = true
		r.mu.Unlock()
		return mgcp.NewResponse(cmd, mgcp.CodeTransientError)
	}
	return nil
}

// faults drops the gateway's answers (final or provisional) to the
// transactions respond marked lost.
func (r *faultRig) faults(b []byte, _ net.Addr) mgcptest.Fault {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 || len(f[0]) != 3 || f[0][0] < '0' || f[0][0] > '9' {
		return mgcptest.Fault{} // a command, not a response
	}
	id, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return mgcptest.Fault{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return mgcptest.Fault{Drop: r.lost[uint32(id)]}
}

func (r *faultRig) state(local string) mgcptest.EndpointState {
	st, _ := r.gw.State(local)
	return st
}

// waitArmed waits until the line is idle: off-hook (L/hd) requested,
// no connection left on the endpoint.
func (r *faultRig) waitArmed(local string) {
	r.t.Helper()
	r.sim.waitFor(local+" armed (L/hd requested) with no connection", func() bool {
		st := r.state(local)
		return hasEvent(st, "L/hd") && len(st.Connections) == 0
	})
}

// record returns the next call record.
func (r *faultRig) record() bridge.CallRecord {
	r.t.Helper()
	select {
	case c := <-r.records:
		return c
	case <-time.After(15 * time.Second):
		r.t.Fatal("no call record")
	}
	return bridge.CallRecord{}
}

// answeredIncoming proves the daemon still serves the line: SIPp calls
// user (through Kamailio when there is one), the phone rings (L/rg) and answers, SIPp hangs
// up, and the phone, hearing the tone, hangs up too.
func (r *faultRig) answeredIncoming(local, user string) {
	r.t.Helper()
	uac := testutil.StartSIPp(r.t, "-sf", "../sip/testdata/sipp/uac_hangs_up.xml", "-s", user, r.sipAddr)
	r.sim.waitSignal(local, "L/rg")
	r.sim.offHook(local)
	uac.WaitFor(r.t, 20*time.Second)
	r.sim.waitSignal(local, "L/ro")
	r.sim.onHook(local)
	r.waitArmed(local)
	if c := r.record(); !c.Answered || c.Direction != "incoming" {
		r.t.Errorf("record of the call after the fault: %+v", c)
	}
}

// TestInteropIncomingCRCXNotReady: the gateway answers the CRCX of an
// incoming call with 501 (endpoint not ready). SIPp, calling the line's
// account at mgsip, gets the status bridge.StatusForMGCP gives 501 (480;
// 503 is accepted too) and acknowledges it; the line is armed again with
// no connection, and a normal call to it afterwards rings and is answered.
func TestInteropIncomingCRCXNotReady(t *testing.T) {
	r := newFaultRig(t, rigOptions{})
	r.crcx.Store(crcxNotReady)
	uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_refused_unavailable.xml", "-s", "1001", r.sipAddr)
	uac.WaitFor(t, 20*time.Second)
	if c := r.record(); c.Answered || c.Direction != "incoming" {
		t.Errorf("record of the refused call: %+v", c)
	}
	r.waitArmed("aaln/1")
	if st := r.state("aaln/1"); hasSignal(st, "L/rg") {
		t.Errorf("aaln/1 rings after the refused call: %+v", st.Signals)
	}

	r.crcx.Store(crcxNormal)
	r.answeredIncoming("aaln/1", "1001")
}

// TestInteropIncomingCRCXTimeout: the gateway never answers the CRCX of
// an incoming call (its answers are lost). Once the call agent gives up
// (about 1.5 s with the test's timers) SIPp, calling the line's account
// at mgsip, gets 480 within its 10 s bound and acknowledges it; the line is armed
// again, and a normal call afterwards rings and is answered.
func TestInteropIncomingCRCXTimeout(t *testing.T) {
	r := newFaultRig(t, rigOptions{})
	r.crcx.Store(crcxSilent)
	start := time.Now()
	uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_refused_480.xml", "-s", "1001", r.sipAddr)
	uac.WaitFor(t, 20*time.Second)
	t.Logf("refused after %v", time.Since(start).Round(10*time.Millisecond))
	if c := r.record(); c.Answered || c.Direction != "incoming" {
		t.Errorf("record of the refused call: %+v", c)
	}
	// The timeout marked the gateway down at once (no call is offered to
	// it meanwhile); the next keepalive finds it answering again.
	r.crcx.Store(crcxNormal)
	r.sim.waitFor("the gateway up again", func() bool {
		for _, g := range r.b.Gateways() {
			if g.Down {
				return false
			}
		}
		return true
	})
	r.waitArmed("aaln/1")
	r.answeredIncoming("aaln/1", "1001")
}

// TestInteropGatewayDeletesConnection: mid-call, the gateway deletes the
// connection itself (DLCX with reason 902 loss of connectivity, or 900
// hardware error). mgsip must hang up the SIP side (SIPp's scenario needs
// a BYE within 10 s and answers 200), and the phone, still off hook, must
// be watched for on-hook (L/hu) and hear a tone (reorder, as after a far
// end's BYE; congestion or the off-hook warning are accepted). After the
// on-hook the line is armed with no connection.
func TestInteropGatewayDeletesConnection(t *testing.T) {
	for _, reason := range []mgcp.Reason{{Code: 902, Text: "loss of lower layer connectivity"}, {Code: 900, Text: "endpoint malfunctioning"}} {
		t.Run(strconv.Itoa(reason.Code), func(t *testing.T) {
			r := newFaultRig(t, rigOptions{kamailio: true})
			msgs := filepath.Join(t.TempDir(), "messages.log")
			uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_needs_bye.xml", "-s", "1001",
				"-trace_msg", "-message_file", msgs, r.sipAddr)
			r.sim.waitSignal("aaln/1", "L/rg")
			r.sim.offHook("aaln/1")
			var connID string
			r.sim.waitFor("the answered call's connection in sendrecv", func() bool {
				st := r.state("aaln/1")
				if len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv {
					connID = st.Connections[0].ID
					return true
				}
				return false
			})
			r.sim.waitFor("SIPp's ACK of the 200", func() bool {
				b, _ := os.ReadFile(msgs)
				return bytes.Contains(b, []byte("\nACK sip:"))
			})

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := r.gw.DeleteConnection(ctx, "aaln/1", connID, reason)
			cancel()
			if err != nil || !res.Code.IsSuccess() {
				t.Fatalf("gateway DLCX: %v %v", res, err)
			}
			uac.WaitFor(t, 15*time.Second)

			var st mgcptest.EndpointState
			r.sim.waitFor("L/hu requested and a tone on aaln/1", func() bool {
				st = r.state("aaln/1")
				return hasEvent(st, "L/hu") && (hasSignal(st, "L/ro") || hasSignal(st, "G/cg") || hasSignal(st, "L/ot"))
			})
			if len(st.Connections) != 0 {
				t.Errorf("connections left after the gateway deleted the call's: %+v", st.Connections)
			}
			if c := r.record(); !c.Answered || c.Direction != "incoming" {
				t.Errorf("record of the call: %+v", c)
			}
			r.sim.onHook("aaln/1")
			r.waitArmed("aaln/1")
		})
	}
}

// TestInteropInfoDTMFThenOnHook: a line with features.dtmf: info calls
// SIPp, which answers. The phone presses 5 and hangs up at once: SIPp's
// scenario needs an INFO with the digit (answered 200) before the BYE
// (answered 200); the line ends armed with no connection.
func TestInteropInfoDTMFThenOnHook(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uas_accepts_info.xml")
	r := newFaultRig(t, rigOptions{uas: uas.Addr, dtmf: "info"})
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("the call answered and digits watched", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv &&
			hasEvent(st, "L/hu") && hasEvent(st, "D/[0-9#*]")
	})
	r.sim.do(func(ctx context.Context) (*mgcp.Response, error) { return r.gw.Dial(ctx, "aaln/1", "5") })
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Direction != "outgoing" {
		t.Errorf("record of the call: %+v", c)
	}
}
