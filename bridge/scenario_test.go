package bridge_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

func statValue(ps []mgcp.ConnParam, name string) string {
	for _, p := range ps {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// TestLocalCallWithRTP: line 1 dials line 2's number (route local); line
// 2 rings with caller id while line 1 hears ringback; line 2 answers; RTP
// flows both ways between the two connections; line 1 hangs up, line 2
// hears reorder until it hangs up; both end idle and armed.
func TestLocalCallWithRTP(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	st := e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	if !hasSignal(st, "L/ci") {
		t.Errorf("no caller id with the ring: %v", st.Signals)
	}
	for _, s := range st.Signals {
		if s.Is("L", "ci") && (s.Param(1) != "1001" || s.Param(2) != "Line 1") {
			t.Errorf("caller id %v", s)
		}
	}
	e.waitSignal("aaln/1", "G/rt")
	e.offHook("aaln/2")
	c1, c2 := e.conn("aaln/1"), e.conn("aaln/2")
	e.waitFor("send-receive on both", func() bool {
		return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn("aaln/2").Mode == mgcp.ModeSendRecv
	})
	e.waitFor("RTP both ways", func() bool { return c1.RTP.Received() > 10 && c2.RTP.Received() > 10 })
	e.onHook("aaln/1")
	e.waitSignal("aaln/2", "L/ro")
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
	e.onHook("aaln/2")
	for _, l := range []string{"aaln/1", "aaln/2"} {
		e.waitSignalState(l, func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") && len(st.Signals) == 0 })
	}
	r1, r2 := e.record(), e.record()
	for _, r := range []bridge.CallRecord{r1, r2} {
		if !r.Answered || r.Direction != "local" {
			t.Errorf("record %+v", r)
		}
		if pr := statValue(r.Stats, "PR"); pr == "" || pr == "0" {
			t.Errorf("DLCX stats without received packets: %v", r.Stats)
		}
	}
	got := verbs(e.gw.Commands(), "aaln/1")
	// Audit, arm (off-hook with the embedded dial-tone request); CRCX;
	// MDCX with the callee's SDP and ringback; MDCX send-receive; on
	// hook: DLCX carrying the idle request. Nothing else.
	if got != "AUEP RQNT CRCX MDCX MDCX DLCX" {
		t.Errorf("aaln/1 saw %s", got)
	}
}

// TestOutgoingAnswered: a dialled number goes to the PBX from the line's
// account with the gateway's SDP; ringback on 180; the answer's SDP
// reaches the gateway with send-receive; hanging up sends BYE and DLCX.
func TestOutgoingAnswered(t *testing.T) {
	var invites atomic.Int32
	var offered atomic.Value
	e := newEnv(t, envOptions{uas: func(in siptest.Incoming) siptest.Script {
		invites.Add(1)
		offered.Store(string(in.SDP) + "|" + in.From + "|" + in.User)
		return siptest.Script{Ring: 300 * time.Millisecond}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitSignal("aaln/1", "G/rt")
	c := e.conn("aaln/1")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	if !strings.Contains(string(e.conn("aaln/1").RemoteSDP), "m=audio 40000") {
		t.Errorf("gateway got remote SDP %q", c.RemoteSDP)
	}
	o, _ := offered.Load().(string)
	if !strings.Contains(o, "|1001|2000") || !strings.Contains(o, "m=audio "+strconv.Itoa(c.RTPPort)) || !strings.Contains(o, "o=mgsip ") {
		t.Errorf("PBX got %q", o)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	if r := e.record(); !r.Answered || r.Direction != "outgoing" || r.SIPCallID == "" {
		t.Errorf("record %+v", r)
	}
	if invites.Load() != 1 {
		t.Errorf("%d INVITEs", invites.Load())
	}
	// The whole exchange, in order: on the gateway side (audit, arm with
	// the embedded dial-tone request; CRCX; ringback on 180; MDCX
	// send-receive on 200, which stops it; on hook: DLCX carrying the
	// idle request) ...
	want := "AUEP RQNT CRCX RQNT MDCX DLCX"
	e.waitVerbs("aaln/1", want)
	// ... and on the SIP side (what the PBX received).
	// The PBX records its own 200 to the BYE just after the BYE itself,
	// so wait for it rather than reading the list at once.
	want = "INVITE 100 180 200 ACK BYE 200"
	var got string
	e.waitFor("the PBX's 200 to the BYE", func() bool { got = sipSeq(e.pbx.Messages()); return got == want || len(got) > len(want) })
	if got != want {
		t.Errorf("SIP at the PBX: %s", got)
	}
}

// sipSeq is the sequence of start lines the PBX saw for calls (requests
// by method, responses by code), registrations left out.
func sipSeq(msgs []siptest.Message) string {
	var out []string
	for _, m := range msgs {
		line := m.StartLine()
		if strings.Contains(string(m.Data), " REGISTER\r\n") || strings.HasPrefix(line, "REGISTER") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if f[0] == "SIP/2.0" {
			out = append(out, f[1])
		} else {
			out = append(out, f[0])
		}
	}
	return strings.Join(out, " ")
}

// TestOutgoingBusyAndAbandoned: 486 gives busy tone and the line returns
// idle on hang-up; a far end that never answers (480 after ringing) and an
// unreachable PBX (503, no fallback) give reorder; hanging up while the
// far end rings sends CANCEL.
func TestOutgoingBusyAndAbandoned(t *testing.T) {
	e := newEnv(t, envOptions{uas: func(in siptest.Incoming) siptest.Script {
		switch in.User {
		case "2486":
			return siptest.Script{Status: 486}
		case "2480":
			return siptest.Script{Ring: 200 * time.Millisecond, Status: 480}
		case "2503":
			return siptest.Script{Status: 503}
		}
		return siptest.Script{Ring: 20 * time.Second}
	}})
	for _, n := range []string{"2480", "2503"} {
		e.offHook("aaln/1")
		e.dial("aaln/1", n)
		e.waitSignal("aaln/1", "L/ro")
		e.noConnections("aaln/1")
		if r := e.record(); r.Answered || !strings.HasPrefix(r.Result, n[1:]) {
			t.Errorf("%s: record %+v", n, r)
		}
		e.onHook("aaln/1")
		e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	}
	e.offHook("aaln/1")
	e.dial("aaln/1", "2486")
	e.waitSignal("aaln/1", "L/bz")
	e.noConnections("aaln/1")
	if r := e.record(); r.Answered || !strings.HasPrefix(r.Result, "486") {
		t.Errorf("record %+v", r)
	}
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })

	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitSignal("aaln/1", "G/rt")
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("CANCEL at the PBX", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	e.waitFor("487 counted", func() bool { return e.pbx.Calls()[487] == 1 })
	if r := e.record(); r.Answered {
		t.Errorf("record %+v", r)
	}
}

// TestIncomingAnsweredCancelledNoAnswerBusy: calls from the PBX to a
// registered line: answered (200 with the gateway's SDP, then the PBX
// hangs up and the phone hears reorder), cancelled while ringing (ring
// stops, connection deleted), unanswered (480 after the ring timeout),
// and to a line that is off hook (486).
func TestIncomingAnsweredCancelledNoAnswerBusy(t *testing.T) {
	e := newEnv(t, envOptions{register: true, ring: 1500 * time.Millisecond})
	sdp := []byte(siptest.DefaultAnswerSDP)

	type result struct {
		call *siptest.OutCall
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c, err := e.pbx.Call(context.Background(), "1002", "5551234", sdp)
		res <- result{c, err}
	}()
	st := e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	for _, s := range st.Signals {
		if s.Is("L", "ci") && s.Param(1) != "5551234" {
			t.Errorf("caller id %v", s)
		}
	}
	if c := e.conn("aaln/2"); !strings.Contains(string(c.RemoteSDP), "m=audio 40000") || c.Mode != mgcp.ModeRecvOnly {
		t.Errorf("CRCX before answer: mode %s remote %q", c.Mode, c.RemoteSDP)
	}
	e.offHook("aaln/2")
	r := <-res
	if r.err != nil || r.call.Status != 200 || !strings.Contains(string(r.call.SDP), "m=audio "+strconv.Itoa(e.conn("aaln/2").RTPPort)) {
		t.Fatalf("answer: %+v %v", r.call, r.err)
	}
	e.waitFor("send-receive", func() bool { return e.conn("aaln/2").Mode == mgcp.ModeSendRecv })
	if err := r.call.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitSignal("aaln/2", "L/ro")
	e.noConnections("aaln/2")
	e.onHook("aaln/2")
	if rec := e.record(); !rec.Answered || rec.Direction != "incoming" || rec.Number != "5551234" {
		t.Errorf("record %+v", rec)
	}
	// In order: ring (CRCX with the far end's SDP and the ring request
	// embedded), off hook: MDCX send-receive with the on-hook request; the
	// PBX's BYE: DLCX with reorder; on hook: RQNT, armed again. SIP as the
	// PBX saw it.
	want := "AUEP RQNT CRCX MDCX DLCX RQNT"
	e.waitVerbs("aaln/2", want)
	if got := sipSeq(e.pbx.Messages()); got != "INVITE 100 180 200 ACK BYE 200" {
		t.Errorf("SIP at the PBX: %s", got)
	}

	// Cancelled while ringing.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		c, err := e.pbx.Call(ctx, "1002", "5551234", sdp)
		res <- result{c, err}
	}()
	e.waitSignal("aaln/2", "L/rg")
	cancel()
	if r := <-res; r.err == nil {
		t.Fatal("cancelled call succeeded")
	}
	e.noConnections("aaln/2")
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return len(st.Signals) == 0 && hasEvent(st, "L/hd") })
	if rec := e.record(); rec.Answered || rec.Result != "cancelled" {
		t.Errorf("record %+v", rec)
	}

	// Not answered: 480 after the ring timeout.
	start := time.Now()
	c, err := e.pbx.Call(context.Background(), "1002", "5551234", sdp)
	if err == nil || c == nil || c.Status != 480 || time.Since(start) < time.Second {
		t.Fatalf("unanswered call: %+v %v after %v", c, err, time.Since(start))
	}
	e.noConnections("aaln/2")
	e.record()

	// Busy: the line is off hook.
	e.offHook("aaln/2")
	e.waitSignal("aaln/2", "L/dl")
	c, err = e.pbx.Call(context.Background(), "1002", "5551234", sdp)
	if err == nil || c.Status != 486 {
		t.Fatalf("call to an off-hook line: %+v %v", c, err)
	}
}

// TestGatewayRestartMidCall: RSIP restart for the whole gateway ends its
// calls on the SIP side (BYE) and re-audits and re-arms every line.
func TestGatewayRestartMidCall(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	before := len(e.gw.Commands())
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.Restart(ctx, "*", mgcp.RestartRestart, 0)
	})
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	if bye := string(e.pbx.Received("BYE")[0].Data); !strings.Contains(bye, "Reason: Q.850;cause=41;") {
		t.Errorf("BYE without the Reason:\n%s", bye)
	}
	e.waitFor("re-audit and re-arm", func() bool {
		v := verbs(e.gw.Commands()[before:], "aaln/2")
		return strings.Contains(v, "AUEP RQNT")
	})
	if r := e.record(); r.Result != "gateway restarted" {
		t.Errorf("record %+v", r)
	}
}

// TestLostAndDuplicatedMGCP: a third of the gateway's datagrams are lost
// and another third duplicated; the call still completes (retransmission
// and the at-most-once cache absorb it).
func TestLostAndDuplicatedMGCP(t *testing.T) {
	var n atomic.Int64
	e := newEnv(t, envOptions{mgcp: mgcp.Config{}, faults: func(b []byte, _ net.Addr) mgcptest.Fault {
		switch n.Add(1) % 3 {
		case 0:
			return mgcptest.Fault{Drop: true}
		case 1:
			return mgcptest.Fault{Duplicate: true}
		}
		return mgcptest.Fault{}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitBothConnected()
	e.onHook("aaln/2")
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
}

// TestUnknownGatewayRefused: commands for an unknown domain get 500.
func TestUnknownGatewayRefused(t *testing.T) {
	e := newEnv(t, envOptions{lines: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := e.gw.Agent().Do(ctx, e.ca.LocalAddr().String(), &mgcp.Command{Verb: mgcp.VerbNTFY,
		Endpoint: mgcp.EndpointName{Local: "aaln/1", Domain: "other.test"}, Parameters: mgcp.Parameters{RequestID: "1",
			ObservedEvents: []mgcp.Event{{Package: "L", Name: "hd"}}}})
	if err != nil || r.Code != mgcp.CodeEndpointUnknown {
		t.Fatalf("%v %v", r, err)
	}
}

// TestLocalFallbackWhenPBXDown: with local_fallback on the route, a call
// to another line's number that the PBX cannot take (503) is switched
// locally and rings that line.
func TestLocalFallbackWhenPBXDown(t *testing.T) {
	e := newEnv(t, envOptions{viaPBX: true, uas: func(siptest.Incoming) siptest.Script { return siptest.Script{Status: 503} }})
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitSignal("aaln/2", "L/rg")
	if r := e.record(); r.Result != "peer unreachable, switched locally" {
		t.Errorf("record %+v", r)
	}
	e.offHook("aaln/2")
	e.waitFor("connected locally", func() bool {
		st1, st2 := e.state("aaln/1"), e.state("aaln/2")
		return len(st1.Connections) == 1 && len(st2.Connections) == 1 && st1.Connections[0].Mode == mgcp.ModeSendRecv
	})
	e.onHook("aaln/1")
	e.onHook("aaln/2")
	if n := len(e.pbx.Received("INVITE")); n != 1 {
		t.Errorf("%d INVITEs reached the PBX", n)
	}
}

// TestEarlyMedia: a 183 with SDP puts the far end's description on the
// gateway receive-only before the answer; the 200 makes it send-receive.
func TestEarlyMedia(t *testing.T) {
	early := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40100", 1)
	e := newEnv(t, envOptions{uas: func(siptest.Incoming) siptest.Script {
		return siptest.Script{EarlyMedia: []byte(early), Ring: 300 * time.Millisecond}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("early media on the gateway", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeRecvOnly && strings.Contains(string(c.RemoteSDP), "m=audio 40100")
	})
	e.waitFor("answered", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeSendRecv && strings.Contains(string(c.RemoteSDP), "m=audio 40000")
	})
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
}

// TestReliableEarlyMedia: toward a PBX that requires 100rel (peer prack:
// supported), the reliable 183 and 180 are each PRACKed once, the 183's
// SDP is the early media on the gateway and the 200 makes it
// send-receive. With prack off the INVITE does not support 100rel and that
// PBX refuses it with 421: the caller hears the error tone.
func TestReliableEarlyMedia(t *testing.T) {
	early := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40100", 1)
	uas := func(siptest.Incoming) siptest.Script {
		return siptest.Script{EarlyMedia: []byte(early), Ring: 300 * time.Millisecond, Reliable: true}
	}
	e := newEnv(t, envOptions{uas: uas, prack: "supported"})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("early media on the gateway", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeRecvOnly && strings.Contains(string(c.RemoteSDP), "m=audio 40100")
	})
	e.waitFor("answered", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeSendRecv && strings.Contains(string(c.RemoteSDP), "m=audio 40000")
	})
	pracks := e.pbx.Received("PRACK")
	if len(pracks) != 2 {
		t.Fatalf("%d PRACKs reached the PBX, want 2 (the 183 and the 180)", len(pracks))
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	// The BYE leaves from the call's sender goroutine, in parallel with the
	// DLCX: under load it may reach the PBX after the connection is gone.
	e.waitFor("BYE", func() bool { return len(e.pbx.Received("BYE")) > 0 })
	if n := len(e.pbx.Received("BYE")); n != 1 {
		t.Errorf("%d BYEs reached the PBX after a PRACKed call", n)
	}

	off := newEnv(t, envOptions{uas: uas})
	off.offHook("aaln/1")
	off.dial("aaln/1", "2000")
	off.waitFor("421 from the PBX", func() bool { return off.pbx.Calls()[421] == 1 })
	off.waitFor("error tone", func() bool {
		st, _ := off.gw.State("aaln/1")
		return hasSignal(st, "L/ro") || hasSignal(st, "L/cg")
	})
	off.onHook("aaln/1")
	off.noConnections("aaln/1")
}

// TestGatewayDownAndBack: a gateway that stops answering is marked down
// after two timed-out commands (here: keepalive AUEPs) and its lines are
// unregistered; when it answers again its lines are re-armed and
// registered again.
func TestGatewayDownAndBack(t *testing.T) {
	fast := mgcp.Config{InitialRTO: 20 * time.Millisecond, MinRTO: 10 * time.Millisecond, MaxRTO: 50 * time.Millisecond,
		TMax: 300 * time.Millisecond, Max1: 2, Max2: 3}
	e := newEnv(t, envOptions{register: true, mgcp: fast, keepalive: 200 * time.Millisecond})
	addr := e.gw.Addr()
	_ = e.gw.Close()
	e.waitFor("gateway marked down", func() bool {
		gs := e.b.Gateways()
		return len(gs) == 1 && gs[0].Down
	})
	e.waitFor("lines unregistered", func() bool {
		_, ok1 := e.pbx.Binding("1001")
		_, ok2 := e.pbx.Binding("1002")
		return !ok1 && !ok2
	})
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: conn, Domain: "gw.test", Lines: 2, CallAgent: e.ca.LocalAddr().String(),
		DisconnectedInitial: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	e.waitFor("gateway up", func() bool { return !e.b.Gateways()[0].Down })
	e.waitFor("lines re-armed", func() bool {
		for _, l := range []string{"aaln/1", "aaln/2"} {
			st, _ := gw.State(l)
			if !hasEvent(st, "L/hd") {
				return false
			}
		}
		return true
	})
	e.waitFor("lines registered again", func() bool {
		_, ok1 := e.pbx.Binding("1001")
		_, ok2 := e.pbx.Binding("1002")
		return ok1 && ok2
	})
}

// TestHuntGroup: a call to the group's number rings its first idle line:
// line 1 when both are idle, line 2 while line 1 is off hook; with both
// busy the caller gets 486.
func TestHuntGroup(t *testing.T) {
	e := newEnv(t, envOptions{hunt: true})
	placeCall := sipCaller(t, e.stack.LocalAddr().String())
	call := func(ctx context.Context) *sip.Dialog { return placeCall(ctx, "3000", []byte(siptest.DefaultAnswerSDP)) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cctx, cancelCall := context.WithCancel(ctx)
	call(cctx)
	e.waitSignal("aaln/1", "L/rg")
	cancelCall() // CANCEL while ringing
	e.noConnections("aaln/1")
	if r := e.record(); r.Result != "cancelled" {
		t.Errorf("record %+v", r)
	}
	e.offHook("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	d := call(ctx)
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	if ev := <-d.Events(); ev.Kind != sip.EventRinging {
		t.Fatalf("%+v", ev)
	}
	if ev := <-d.Events(); ev.Kind != sip.EventAnswered {
		t.Fatalf("%+v", ev)
	}
	d2 := call(ctx)
	for ev := range d2.Events() {
		if ev.Kind == sip.EventFailed && ev.Status != 486 {
			t.Fatalf("all busy: %+v", ev)
		}
	}
	_ = d.Bye(context.Background())
}

// TestMWILamp: a message-summary NOTIFY for a line's account turns its
// lamp on (L/vmwi(+)) while the line idles, and off again.
func TestMWILamp(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, waiting := range []bool{true, false} {
		if code, err := e.pbx.NotifyMWI(ctx, "1002", waiting, 1, 0); err != nil || code != 200 {
			t.Fatalf("NOTIFY: %d %v", code, err)
		}
		e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return st.MWI == waiting && hasEvent(st, "L/hd") })
	}
}

// TestHuntGroupRingAll: a call to a ring-all group rings both lines;
// line 2 answers and line 1 stops ringing; a second call cancelled while
// ringing stops both; the caller's BYE ends the answered one.
func TestHuntGroupRingAll(t *testing.T) {
	e := newEnv(t, envOptions{hunt: true, huntHow: "ring-all"})
	placeCall := sipCaller(t, e.stack.LocalAddr().String())
	call := func(ctx context.Context) *sip.Dialog { return placeCall(ctx, "3000", []byte(siptest.DefaultAnswerSDP)) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancelled while both ring.
	cctx, cancelCall := context.WithCancel(ctx)
	call(cctx)
	e.waitSignal("aaln/1", "L/rg")
	e.waitSignal("aaln/2", "L/rg")
	cancelCall()
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
	for _, l := range []string{"aaln/1", "aaln/2"} {
		e.waitSignalState(l, func(st mgcptest.EndpointState) bool { return len(st.Signals) == 0 && hasEvent(st, "L/hd") })
	}
	e.record()
	e.record()
	// Answered by line 2.
	d := call(ctx)
	e.waitSignal("aaln/1", "L/rg")
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	for ev := range d.Events() {
		if ev.Kind == sip.EventAnswered {
			break
		}
		if ev.Kind != sip.EventRinging {
			t.Fatalf("caller: %+v", ev)
		}
	}
	e.noConnections("aaln/1")
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return len(st.Signals) == 0 && hasEvent(st, "L/hd") })
	if r := e.record(); r.Line != "gw/aaln/1" || r.Result != "answered elsewhere" {
		t.Errorf("line 1 record %+v", r)
	}
	if c := e.conn("aaln/2"); c.Mode != mgcp.ModeSendRecv {
		t.Errorf("line 2 connection %s", c.Mode)
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitSignal("aaln/2", "L/ro")
	e.noConnections("aaln/2")
	if r := e.record(); r.Line != "gw/aaln/2" || !r.Answered {
		t.Errorf("line 2 record %+v", r)
	}
}

// TestCallWaiting: a second call to a talking line waits (second
// connection inactive, waiting tone); a flash holds the first (re-INVITE
// a=sendonly, MDCX inactive) and answers the second; another flash swaps
// back; the held party hanging up leaves the first call; hanging up ends
// it.
func TestCallWaiting(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("first call answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	type result struct {
		call *siptest.OutCall
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c, err := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- result{c, err}
	}()
	e.waitSignal("aaln/1", "L/wt")
	modes := func() []mgcp.ConnectionMode {
		var m []mgcp.ConnectionMode
		for _, c := range e.state("aaln/1").Connections {
			m = append(m, c.Mode)
		}
		return m
	}
	if m := modes(); len(m) != 2 || m[0] != mgcp.ModeSendRecv || m[1] != mgcp.ModeInactive {
		t.Fatalf("while waiting: %v", m)
	}
	flash := func() {
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Notify(ctx, "aaln/1", mgcp.Event{Package: "L", Name: "hf"})
		})
	}
	flash()
	r := <-res
	if r.err != nil || r.call.Status != 200 {
		t.Fatalf("waiting call: %+v %v", r.call, r.err)
	}
	e.waitFor("first held, second talking", func() bool {
		m := modes()
		return len(m) == 2 && m[0] == mgcp.ModeInactive && m[1] == mgcp.ModeSendRecv
	})
	e.waitFor("hold re-INVITE at the PBX", func() bool {
		for _, m := range e.pbx.Received("INVITE") {
			if strings.Contains(string(m.Data), "a=sendonly") {
				return true
			}
		}
		return false
	})
	flash()
	e.waitFor("swapped back", func() bool {
		m := modes()
		return len(m) == 2 && m[0] == mgcp.ModeSendRecv && m[1] == mgcp.ModeInactive
	})
	if err := r.call.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitFor("held call gone", func() bool { return len(modes()) == 1 })
	if rec := e.record(); rec.Direction != "incoming" || !rec.Answered {
		t.Errorf("record %+v", rec)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if rec := e.record(); rec.Direction != "outgoing" || !rec.Answered {
		t.Errorf("record %+v", rec)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
}

// TestCallWaitingCallerGivesUp: a waiting caller that gives up (CANCEL)
// stops the waiting tone: the DLCX of its connection carries the talking
// state's request with an empty signal list (the one-shot L/wt is not
// part of the state's request, so it must be stopped explicitly).
func TestCallWaitingCallerGivesUp(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := waitingCall(ctx, e)
	e.waitFor("waiting", func() bool { return e.modes("aaln/1") == "sendrecv inactive" })
	cancel()
	<-done
	e.waitFor("the waiting call's connection gone", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return !hasSignal(st, "L/wt") })
	e.record()
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}

// TestCallWaitingRecall: hanging up while a call waits rings the phone
// again; picking up answers the waiting call.
func TestCallWaitingRecall(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("first call answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	e.onHook("aaln/1")
	e.waitSignal("aaln/1", "L/rg")
	if r := e.record(); r.Direction != "outgoing" {
		t.Errorf("first call record %+v", r)
	}
	e.offHook("aaln/1")
	if c := <-res; c == nil || c.Status != 200 {
		t.Fatalf("waiting call after the recall: %+v", c)
	}
	e.waitFor("talking", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
}

// TestBlindTransfer: flash during a call holds it (re-INVITE a=sendonly)
// and gives dial tone; after dialling, hanging up sends REFER for the
// held call naming the number at the PBX's domain (not the transferee's
// Contact); the BYE follows the PBX's NOTIFY with the final 200 (RFC 3515
// sipfrag), not the 202. A flash instead returns to the held call.
func TestBlindTransfer(t *testing.T) {
	// Three-way calling off: the number dialled after the flash is only
	// the transfer target (with it on, it is called: TestThreeWay...).
	e := newEnv(t, envOptions{realm: "pbx.test", features: mapping.Features{ThreeWay: new(bool)}, refer: func(siptest.ReferIn) siptest.ReferScript {
		return siptest.ReferScript{Notify: []int{100, 180, 200}, Pause: 150 * time.Millisecond}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	// Flash, then flash back: the call resumes.
	e.flash("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	e.waitFor("held", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeInactive })
	e.flash("aaln/1")
	e.waitFor("resumed", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	// Flash, dial, hang up: transferred.
	e.flash("aaln/1")
	e.dial("aaln/1", "2005")
	e.onHook("aaln/1")
	e.waitFor("REFER at the PBX", func() bool { return len(e.pbx.Received("REFER")) == 1 })
	refer := string(e.pbx.Received("REFER")[0].Data)
	if want := "Refer-To: <sip:2005@pbx.test>"; !strings.Contains(refer, want) {
		t.Errorf("REFER without %q:\n%s", want, refer)
	}
	// While the transfer is pending the held call keeps its connection
	// and the line is busy for new calls.
	if c := e.conn("aaln/1"); c.Mode != mgcp.ModeInactive {
		t.Errorf("held connection %s while transferring", c.Mode)
	}
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	e.noConnections("aaln/1")
	if r := e.record(); r.Result != "transferred to 2005" {
		t.Errorf("record %+v", r)
	}
	// The BYE came only after the final NOTIFY.
	seq := sipSeq(e.pbx.Messages())
	if i, j := strings.Index(seq, "REFER 202 NOTIFY 200 NOTIFY 200 NOTIFY 200"), strings.Index(seq, "BYE"); i < 0 || j < i {
		t.Errorf("SIP at the PBX: %s", seq)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") && len(st.Signals) == 0 })
}

// TestBlindTransferFails: a transfer whose NOTIFY reports a failure
// (486), a REFER the PBX refuses (403), and a transfer that never gets a
// final NOTIFY (TransferTimeout) ring the phone back for the held call,
// with its caller id; picking up resumes it. Lifting the phone while the
// transfer is pending takes the held call back at once.
func TestBlindTransferFails(t *testing.T) {
	var n atomic.Int32
	e := newEnv(t, envOptions{register: true, transfer: 700 * time.Millisecond, features: mapping.Features{ThreeWay: new(bool)},
		refer: func(siptest.ReferIn) siptest.ReferScript {
			switch n.Add(1) {
			case 1:
				return siptest.ReferScript{Notify: []int{100, 486}}
			case 2:
				return siptest.ReferScript{Status: 403}
			default:
				return siptest.ReferScript{Notify: []int{100}}
			}
		}})
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- c
	}()
	e.waitSignal("aaln/1", "L/rg")
	e.offHook("aaln/1")
	pc := <-res
	if pc == nil || pc.Status != 200 {
		t.Fatalf("call from the PBX: %+v", pc)
	}
	for round := 1; round <= 4; round++ {
		e.waitFor("talking", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
		e.flash("aaln/1")
		e.dial("aaln/1", "2005")
		e.onHook("aaln/1")
		e.waitFor("REFER "+strconv.Itoa(round), func() bool { return len(e.pbx.Received("REFER")) == round })
		if round == 4 {
			// Pending (no final NOTIFY yet): lifting the phone takes the
			// held call back.
			e.waitFor("idle while the transfer is pending", func() bool {
				st := e.state("aaln/1")
				return len(st.Connections) == 1 && !hasSignal(st, "L/rg")
			})
			e.offHook("aaln/1")
			break
		}
		st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
		if !hasSignal(st, "L/ci") {
			t.Errorf("round %d: ring back without caller id: %v", round, st.Signals)
		}
		for _, s := range st.Signals {
			if s.Is("L", "ci") && s.Param(1) != "5550002" {
				t.Errorf("round %d: caller id %v", round, s)
			}
		}
		e.offHook("aaln/1")
	}
	e.waitFor("talking again", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	if got := len(e.pbx.Received("BYE")); got != 0 {
		t.Errorf("%d BYEs after failed transfers", got)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	select {
	case <-pc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the PBX's call did not end")
	}
	if r := e.record(); !r.Answered || r.Result != "answered, hung up" {
		t.Errorf("record %+v", r)
	}
}

// callLine has a SIP far end (number 5550002, display name "Ann Smith")
// call a line's account at mgsip; the dialog's events are left to the
// caller of the function.
func callLine(t *testing.T, e *env, user string) *sip.Dialog {
	t.Helper()
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = caller.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = caller.Close() })
	d, err := caller.Invite(context.Background(), sip.Call{From: sip.Account{User: "5550002", DisplayName: "Ann Smith"}, To: user,
		Peer: e.stack.LocalAddr().String(), SDP: []byte(siptest.DefaultAnswerSDP)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitDialogEvent waits for an event of kind k on d, skipping others.
func waitDialogEvent(t *testing.T, d *sip.Dialog, k sip.EventKind) sip.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-d.Events():
			if !ok {
				t.Fatalf("dialog ended waiting for %v", k)
			}
			if ev.Kind == k {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v", k)
		}
	}
}

// TestCallWaitingCallerID: caller id on call waiting (CIDCW). A call for
// a line that is talking gets the waiting tone and the caller's number
// and name in one signal list (S: L/wt,L/ci(MM/DD/HH/MM,"5550002","Ann
// Smith"), RFC 3660 §2.4), which the strict gateway checks field by
// field. Hanging up with the call still waiting rings the phone again,
// again with its caller id; picking up answers it.
func TestCallWaitingCallerID(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("first call answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	d := callLine(t, e, "1001")
	st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/wt") })
	checkCID := func(what string, st mgcptest.EndpointState) {
		t.Helper()
		var ci *mgcp.Event
		for i, s := range st.Signals {
			if s.Is("L", "ci") {
				ci = &st.Signals[i]
			}
		}
		if ci == nil {
			t.Fatalf("%s without caller id: %v", what, st.Signals)
		}
		if ci.Param(1) != "5550002" || ci.Param(2) != "Ann Smith" || len(ci.Param(0)) != len("01/02/15/04") {
			t.Errorf("%s: caller id %v", what, ci)
		}
	}
	checkCID("waiting tone", st)
	e.onHook("aaln/1")
	st = e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	checkCID("ring back", st)
	if r := e.record(); r.Direction != "outgoing" {
		t.Errorf("first call record %+v", r)
	}
	e.offHook("aaln/1")
	waitDialogEvent(t, d, sip.EventAnswered)
	e.waitFor("talking", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if r := e.record(); !r.Answered || r.Number != "5550002" {
		t.Errorf("waiting call record %+v", r)
	}
}

// TestCallWaitingNoCallerIDQuirk: a gateway whose quirk profile says it
// sends no caller id (caller_id: false; the strict gateway refuses L/ci
// with 513) gets the bare waiting tone and a bare ring: call waiting and
// incoming calls still work.
func TestCallWaitingNoCallerIDQuirk(t *testing.T) {
	e := newEnv(t, envOptions{register: true, noCID: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("first call answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	d := callLine(t, e, "1001")
	st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/wt") })
	if hasSignal(st, "L/ci") {
		t.Errorf("caller id to a gateway without it: %v", st.Signals)
	}
	e.flash("aaln/1")
	waitDialogEvent(t, d, sip.EventAnswered)
	e.onHook("aaln/1") // rings again for the held first call
	st = e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	if hasSignal(st, "L/ci") {
		t.Errorf("caller id with the ring back: %v", st.Signals)
	}
	if r := e.record(); r.Number != "5550002" {
		t.Errorf("waiting call record %+v", r)
	}
	e.offHook("aaln/1")
	e.waitFor("talking to the first call", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
}

// pbxCallAnswered has the PBX call a line from 5550002; the phone answers.
func pbxCallAnswered(t *testing.T, e *env, local, user string) *siptest.OutCall {
	t.Helper()
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), user, "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- c
	}()
	e.waitSignal(local, "L/rg")
	e.offHook(local)
	c := e.callResult(res)
	if c == nil || c.Status != 200 {
		t.Fatalf("the PBX's call: %+v", c)
	}
	e.waitFor("talking", func() bool { return e.conn(local).Mode == mgcp.ModeSendRecv })
	return c
}

// sipfrags lists the sipfrag status codes of the NOTIFYs the PBX got.
func sipfrags(e *env) string {
	var out []string
	for _, m := range e.pbx.Received("NOTIFY") {
		_, body, _ := strings.Cut(string(m.Data), "\r\n\r\n")
		if f := strings.Fields(body); len(f) > 1 {
			out = append(out, f[1])
		}
	}
	return strings.Join(out, " ")
}

// TestReferReceived: the PBX transfers a line's call (REFER, RFC 3515).
// The line accepts (202), calls the Refer-To number from its own account
// (Referred-By kept), reports 100, 180 and 200 in NOTIFYs, moves the
// phone's connection to the new call with one MDCX (the new far end's
// SDP, send-receive; no second connection) and only then hangs up the
// old call (BYE after the final NOTIFY). Hanging up ends the new call.
func TestReferReceived(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		return siptest.Script{Ring: 200 * time.Millisecond, SDP: []byte(strings.Replace(siptest.DefaultAnswerSDP, "40000", "40100", 1))}
	}})
	pc := pbxCallAnswered(t, e, "aaln/1", "1001")
	n := len(e.gw.Commands())
	if st, err := pc.Refer(context.Background(), "<sip:2000@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	select {
	case <-pc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the transferred call was not hung up")
	}
	if got := sipfrags(e); got != "100 180 200" {
		t.Errorf("NOTIFYs: %s", got)
	}
	seq := sipSeq(e.pbx.Messages())
	if i, j := strings.LastIndex(seq, "NOTIFY"), strings.LastIndex(seq, "BYE"); i < 0 || j < i {
		t.Errorf("BYE before the final NOTIFY: %s", seq)
	}
	var inv string
	for _, m := range e.pbx.Received("INVITE") {
		if strings.HasPrefix(m.StartLine(), "INVITE sip:2000@") {
			inv = string(m.Data)
		}
	}
	if !strings.Contains(inv, "<sip:1001@") || !strings.Contains(inv, "Referred-By: <sip:5550002@") {
		t.Errorf("INVITE of the transfer:\n%s", inv)
	}
	c := e.conn("aaln/1")
	if c.Mode != mgcp.ModeSendRecv || !strings.Contains(string(c.RemoteSDP), "m=audio 40100") {
		t.Errorf("the phone's connection after the transfer: %s %q", c.Mode, c.RemoteSDP)
	}
	if got := verbs(e.gw.Commands()[n:], "aaln/1"); strings.Contains(got, "CRCX") || !strings.Contains(got, "MDCX") {
		t.Errorf("gateway commands during the transfer: %s", got)
	}
	if r := e.record(); r.Result != "transferred by the far end to 2000" || r.Number != "5550002" {
		t.Errorf("old call record %+v", r)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if r := e.record(); !r.Answered || r.Number != "2000" || r.Direction != "outgoing" {
		t.Errorf("new call record %+v", r)
	}
}

// TestReferReceivedReplacesAndFailures: a Refer-To with Replaces (an
// attended transfer at the PBX) gives the new INVITE that Replaces
// header (RFC 3891); a target that answers 486 is reported in the final
// NOTIFY and the old call goes on as it was; a line with transfer off
// refuses the REFER with 603, one with a call waiting with 486.
func TestReferReceivedReplacesAndFailures(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		if in.User == "2486" {
			return siptest.Script{Status: 486}
		}
		return siptest.Script{}
	}})
	pc := pbxCallAnswered(t, e, "aaln/1", "1001")
	before := e.conn("aaln/1").RemoteSDP
	if st, err := pc.Refer(context.Background(), "<sip:2486@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	e.waitFor("final NOTIFY", func() bool { return strings.HasSuffix(sipfrags(e), "486") })
	if r := e.record(); r.Number != "2486" || !strings.Contains(r.Result, "486") {
		t.Errorf("record of the failed target %+v", r)
	}
	if c := e.conn("aaln/1"); c.Mode != mgcp.ModeSendRecv || string(c.RemoteSDP) != string(before) {
		t.Errorf("the old call changed: %s %q", c.Mode, c.RemoteSDP)
	}
	// Replaces, escaped in the Refer-To URI, reaches the new INVITE.
	rep := "abc123@pbx.test;to-tag=t1;from-tag=f1"
	if st, err := pc.Refer(context.Background(), "<sip:2000@pbx.test?Replaces=abc123%40pbx.test%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>"); err != nil || st != 202 {
		t.Fatalf("REFER with Replaces: %d %v", st, err)
	}
	select {
	case <-pc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the transferred call was not hung up")
	}
	found := false
	for _, m := range e.pbx.Received("INVITE") {
		found = found || (strings.HasPrefix(m.StartLine(), "INVITE sip:2000@") && strings.Contains(string(m.Data), "Replaces: "+rep))
	}
	if !found {
		t.Errorf("no INVITE with Replaces: %s", rep)
	}
	if r := e.record(); r.Result != "transferred by the far end to 2000" {
		t.Errorf("record %+v", r)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()

	// Busy with a second call: the held call's REFER gets 486.
	pc1 := pbxCallAnswered(t, e, "aaln/1", "1001")
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550003", []byte(siptest.DefaultAnswerSDP))
		res <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	e.flash("aaln/1")
	pc2 := e.callResult(res)
	if pc2 == nil || pc2.Status != 200 {
		t.Fatalf("waiting call: %+v", pc2)
	}
	if st, err := pc1.Refer(context.Background(), "<sip:2000@pbx.test>"); err != nil || st != 486 {
		t.Errorf("REFER of the held call: %d %v, want 486", st, err)
	}
	e.onHook("aaln/1") // rings again for the held call
	e.waitSignal("aaln/1", "L/rg")
	e.offHook("aaln/1")
	e.waitFor("back to the first call", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
	e.record()
}

// TestReferReceivedTransferOff: a line with features.transfer off
// refuses a REFER with 603 and keeps its call.
func TestReferReceivedTransferOff(t *testing.T) {
	e := newEnv(t, envOptions{register: true, features: mapping.Features{Transfer: new(bool)}})
	pc := pbxCallAnswered(t, e, "aaln/1", "1001")
	if st, err := pc.Refer(context.Background(), "<sip:2000@pbx.test>"); err != nil || st != 603 {
		t.Errorf("REFER: %d %v, want 603", st, err)
	}
	if c := e.conn("aaln/1"); c.Mode != mgcp.ModeSendRecv {
		t.Errorf("the call changed: %s", c.Mode)
	}
	if n := len(e.pbx.Received("NOTIFY")); n != 0 {
		t.Errorf("%d NOTIFYs for a refused REFER", n)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}

// TestReferReceivedTransferorGone: the PBX hangs up right after its
// REFER was accepted (a blind transfer): the phone's connection is kept
// for the new call, which it joins when the target answers; when the
// target is busy instead, the phone hears reorder.
func TestReferReceivedTransferorGone(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		if in.User == "2486" {
			return siptest.Script{Ring: 300 * time.Millisecond, Status: 486}
		}
		return siptest.Script{Ring: 300 * time.Millisecond}
	}})
	for _, target := range []string{"2000", "2486"} {
		pc := pbxCallAnswered(t, e, "aaln/1", "1001")
		if st, err := pc.Refer(context.Background(), "<sip:"+target+"@pbx.test>"); err != nil || st != 202 {
			t.Fatalf("REFER: %d %v", st, err)
		}
		if err := pc.HangUp(context.Background()); err != nil {
			t.Fatal(err)
		}
		if target == "2486" {
			e.waitSignal("aaln/1", "L/ro")
			e.noConnections("aaln/1")
			for range 2 {
				if r := e.record(); r.Answered && r.Number == "2486" {
					t.Errorf("record %+v", r)
				}
			}
			e.onHook("aaln/1")
			continue
		}
		e.waitFor("joined the target", func() bool {
			st := e.state("aaln/1")
			return len(st.Connections) == 1 && strings.Contains(string(st.Connections[0].RemoteSDP), "m=audio 40000") &&
				st.Connections[0].Mode == mgcp.ModeSendRecv && e.b.ActiveCalls() == 1
		})
		if r := e.record(); r.Result != "transferred by the far end to 2000" {
			t.Errorf("old call record %+v", r)
		}
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		if r := e.record(); !r.Answered || r.Number != "2000" {
			t.Errorf("new call record %+v", r)
		}
	}
}

// modes lists the modes of an endpoint's connections, in creation order.
func (e *env) modes(local string) string {
	var m []string
	for _, c := range e.state(local).Connections {
		m = append(m, string(c.Mode))
	}
	return strings.Join(m, " ")
}

// consult flashes line 1 (talking to its only call) and dials number: the
// first call is held and number called on a second connection.
func (e *env) consult(number string) {
	e.t.Helper()
	e.flash("aaln/1")
	e.dial("aaln/1", number)
}

// TestThreeWay: talking to A (2000), flash, dial C (2001): A is held and
// C called on a second connection; a flash while talking to C puts both
// connections in confrnce mode (RFC 3435 §2.3.3) and takes A off hold
// (re-INVITE a=sendrecv). A flash in the conference drops C (BYE) and
// leaves A; a new consultation and conference, then hanging up ends
// both calls.
func TestThreeWay(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2001")
	e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
	e.waitFor("three-way", func() bool { return e.modes("aaln/1") == "confrnce confrnce" })
	e.waitFor("A taken off hold", func() bool {
		ms := e.pbx.Received("INVITE")
		return strings.Contains(string(ms[len(ms)-1].Data), "a=sendrecv") && strings.Contains(string(ms[len(ms)-1].Data), "To: <sip:2000@")
	})
	// Flash: C is dropped, A goes on.
	e.flash("aaln/1")
	e.waitFor("C dropped", func() bool { return e.modes("aaln/1") == "sendrecv" && len(e.pbx.Received("BYE")) == 1 })
	if r := e.record(); r.Number != "2001" || r.Result != "dropped from the three-way call" {
		t.Errorf("C's record %+v", r)
	}
	if !strings.Contains(string(e.pbx.Received("BYE")[0].Data), "To: <sip:2001@") {
		t.Errorf("BYE for the wrong call:\n%s", e.pbx.Received("BYE")[0].Data)
	}
	// Again, then hang up in the conference: both end.
	e.consult("2002")
	e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
	e.waitFor("three-way", func() bool { return e.modes("aaln/1") == "confrnce confrnce" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("both hung up", func() bool { return len(e.pbx.Received("BYE")) == 3 })
	got := map[string]bool{}
	for range 2 {
		r := e.record()
		got[r.Number] = r.Answered
	}
	if !got["2000"] || !got["2002"] {
		t.Errorf("records %v", got)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return armed(st) })
}

// TestThreeWayConsultation: during the consultation a flash while C
// still rings gives C up and resumes A; C busy resumes A; hanging up
// while C rings hands A over to C's number (REFER) and cancels C.
func TestThreeWayConsultation(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		switch in.User {
		case "2486":
			return siptest.Script{Status: 486}
		case "2999":
			return siptest.Script{Ring: 20 * time.Second}
		}
		return siptest.Script{}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2999")
	e.waitFor("C ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" })
	e.flash("aaln/1")
	e.waitFor("back to A", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.waitFor("C cancelled", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	e.record()
	e.consult("2486")
	e.waitFor("back to A after busy", func() bool { return e.modes("aaln/1") == "sendrecv" && e.pbx.Calls()[486] == 1 })
	e.record()
	e.consult("2999")
	e.waitFor("C ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" })
	e.onHook("aaln/1")
	e.waitFor("A transferred to C's number", func() bool { return len(e.pbx.Received("REFER")) == 1 })
	if refer := string(e.pbx.Received("REFER")[0].Data); !strings.Contains(refer, "Refer-To: <sip:2999@") {
		t.Errorf("REFER:\n%s", refer)
	}
	e.noConnections("aaln/1")
	for range 2 {
		e.record()
	}
}

// TestThreeWayRefused: a gateway whose quirk profile has no conference,
// and one that refuses confrnce (517) although its profile claims it:
// the flash that would join the three drops C instead, with the error
// tone (L/e), and A is resumed.
func TestThreeWayRefused(t *testing.T) {
	for _, o := range []envOptions{{noConfQ: true}, {noConfGW: true}} {
		e := newEnv(t, o)
		e.offHook("aaln/1")
		e.dial("aaln/1", "2000")
		e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
		e.consult("2001")
		e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
		e.flash("aaln/1")
		e.waitFor("C dropped, A resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && len(e.pbx.Received("BYE")) == 1 })
		tone := false
		for _, c := range e.gw.Commands() {
			for _, s := range c.Signals {
				tone = tone || s.Is("L", "e")
			}
		}
		if !tone {
			t.Errorf("%+v: no error tone", o)
		}
		// The tone still plays once C's connection is gone: the DLCX after
		// the MDCX that carried it must not stop it (RFC 3435 §2.3.3: a
		// time-out signal stops when a new signal list leaves it out).
		if st := e.state("aaln/1"); !hasSignal(st, "L/e") {
			t.Errorf("noConfQ %v noConfGW %v: the error tone was stopped: signals %v", o.noConfQ, o.noConfGW, st.Signals)
		}
		if r := e.record(); r.Number != "2001" || !strings.HasPrefix(r.Result, "three-way refused") {
			t.Errorf("C's record %+v", r)
		}
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		e.record()
	}
}

// TestAttendedTransfer: talking to A (2000), flash, dial C (2001), talk to
// C, hang up: REFER to A whose Refer-To names C's number with Replaces
// for the C dialog (RFC 3891), so that A's INVITE takes our place in it;
// after the final NOTIFY 200 both of the line's calls end (BYE A, BYE C).
// When the PBX reports a failure (486) the phone rings back; picking up
// returns to C with A still held, and the three can still be joined.
func TestAttendedTransfer(t *testing.T) {
	var n atomic.Int32
	e := newEnv(t, envOptions{realm: "pbx.test", refer: func(siptest.ReferIn) siptest.ReferScript {
		if n.Add(1) == 1 {
			return siptest.ReferScript{Notify: []int{100, 486}}
		}
		return siptest.ReferScript{Notify: []int{100, 200}, Pause: 100 * time.Millisecond}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2001")
	e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	var cCallID string
	for _, m := range e.pbx.Received("INVITE") {
		if strings.HasPrefix(m.StartLine(), "INVITE sip:2001@") {
			for _, ln := range strings.Split(string(m.Data), "\r\n") {
				if v, ok := strings.CutPrefix(ln, "Call-ID: "); ok {
					cCallID = v
				}
			}
		}
	}
	// First attempt: the PBX reports 486.
	e.onHook("aaln/1")
	e.waitFor("REFER", func() bool { return len(e.pbx.Received("REFER")) == 1 })
	refer := string(e.pbx.Received("REFER")[0].Data)
	if !strings.Contains(refer, "Refer-To: <sip:2001@pbx.test?Replaces="+url.QueryEscape(cCallID)) || !strings.Contains(refer, "To: <sip:2000@") {
		t.Errorf("REFER (C's Call-ID %s):\n%s", cCallID, refer)
	}
	st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	if !hasSignal(st, "L/ci") {
		t.Errorf("ring back without caller id: %v", st.Signals)
	}
	e.offHook("aaln/1")
	e.waitFor("back to C, A held", func() bool {
		return e.modes("aaln/1") == "inactive sendrecv" && hasEvent(e.state("aaln/1"), "L/hu")
	})
	if got := len(e.pbx.Received("BYE")); got != 0 {
		t.Errorf("%d BYEs after a failed transfer", got)
	}
	// Second attempt: done.
	e.onHook("aaln/1")
	e.waitFor("both calls hung up", func() bool { return len(e.pbx.Received("BYE")) == 2 })
	e.noConnections("aaln/1")
	seq := sipSeq(e.pbx.Messages())
	if i, j := strings.LastIndex(seq, "NOTIFY"), strings.Index(seq, "BYE"); j < i {
		t.Errorf("BYE before the final NOTIFY: %s", seq)
	}
	got := map[string]string{}
	for range 2 {
		r := e.record()
		got[r.Number] = r.Result
	}
	if got["2000"] != "transferred to 2001" || got["2001"] != "replaced by the transferred call" {
		t.Errorf("records %v", got)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return armed(st) })
}

// TestOutgoingRedirectAnd422: a 302 is followed (the Contact's user,
// through the same peer), at most three times; a 422 is retried once
// with Session-Expires and Min-SE raised to the PBX's Min-SE (RFC 4028).
func TestOutgoingRedirectAnd422(t *testing.T) {
	var n422 atomic.Int32
	e := newEnv(t, envOptions{uas: func(in siptest.Incoming) siptest.Script {
		switch in.User {
		case "2302":
			return siptest.Script{Status: 302, Headers: map[string]string{"Contact": "<sip:2001@198.51.100.7>"}}
		case "2399":
			return siptest.Script{Status: 302, Headers: map[string]string{"Contact": "<sip:2399@198.51.100.7>"}}
		case "2422":
			if n422.Add(1) == 1 {
				return siptest.Script{Status: 422, Headers: map[string]string{"Min-SE": "7200"}}
			}
		}
		return siptest.Script{}
	}})
	invitesTo := func(user string) []string {
		var out []string
		for _, m := range e.pbx.Received("INVITE") {
			if strings.HasPrefix(m.StartLine(), "INVITE sip:"+user+"@") {
				out = append(out, string(m.Data))
			}
		}
		return out
	}
	for _, number := range []string{"2302", "2422"} {
		e.offHook("aaln/1")
		e.dial("aaln/1", number)
		e.waitFor(number+" answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		if r := e.record(); !r.Answered {
			t.Errorf("%s: record %+v", number, r)
		}
	}
	if got := invitesTo("2001"); len(got) != 1 {
		t.Errorf("INVITEs to the redirect's contact: %d", len(got))
	}
	if got := invitesTo("2422"); len(got) != 2 || !strings.Contains(got[1], "Session-Expires: 7200") || !strings.Contains(got[1], "Min-SE: 7200") {
		t.Errorf("INVITEs for the 422: %d\n%s", len(got), strings.Join(got, "\n----\n"))
	}
	// A redirect loop ends after three redirects: reorder.
	e.offHook("aaln/1")
	e.dial("aaln/1", "2399")
	e.waitSignal("aaln/1", "L/ro")
	e.noConnections("aaln/1")
	if got := invitesTo("2399"); len(got) != 4 {
		t.Errorf("%d INVITEs in the redirect loop, want 4", len(got))
	}
	if r := e.record(); r.Answered || !strings.HasPrefix(r.Result, "302") {
		t.Errorf("record %+v", r)
	}
	e.onHook("aaln/1")
}

// TestAttendedTransferTakenBackThenDone: the phone hangs up to transfer
// (REFER to A, 202, NOTIFY 100), then lifts again before the outcome: it
// talks to C, A held. When A's final NOTIFY then reports 200 anyway, A
// went ahead (it had accepted the REFER): its dialog with us is ended
// (BYE), the phone goes on with C, and the next hang-up ends C without a
// second REFER to A.
func TestAttendedTransferTakenBackThenDone(t *testing.T) {
	e := newEnv(t, envOptions{realm: "pbx.test", refer: func(siptest.ReferIn) siptest.ReferScript {
		return siptest.ReferScript{Notify: []int{100, 200}, Pause: 1500 * time.Millisecond}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2001")
	e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.onHook("aaln/1")
	e.waitFor("REFER", func() bool { return len(e.pbx.Received("REFER")) == 1 })
	e.offHook("aaln/1")
	e.waitFor("back to C, A held", func() bool {
		return e.modes("aaln/1") == "inactive sendrecv" && hasEvent(e.state("aaln/1"), "L/hu")
	})
	e.waitFor("A's dialog ended after its NOTIFY 200", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	e.waitFor("only C left", func() bool { return e.modes("aaln/1") == "sendrecv" })
	if r := e.record(); r.Number != "2000" || !strings.HasPrefix(r.Result, "transferred to 2001") {
		t.Errorf("A's record: %s %q", r.Number, r.Result)
	}
	e.onHook("aaln/1")
	e.waitFor("C hung up", func() bool { return len(e.pbx.Received("BYE")) == 2 })
	e.noConnections("aaln/1")
	if n := len(e.pbx.Received("REFER")); n != 1 {
		t.Errorf("%d REFERs, want 1", n)
	}
	e.record()
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return armed(st) })
}

// TestCallWaitingHoldRefused: a flash to answer the waiting call whose
// hold MDCX (inactive) the gateway refuses swaps nothing: the first call
// stays send-receive, the waiting one waits (inactive, not answered), no
// hold re-INVITE; the phone hears the error tone.
func TestCallWaitingHoldRefused(t *testing.T) {
	var refuse atomic.Bool
	e := newEnv(t, envOptions{register: true, respond: func(cmd *mgcp.Command) *mgcp.Response {
		if refuse.Load() && cmd.Verb == mgcp.VerbMDCX && cmd.Mode == mgcp.ModeInactive {
			return mgcp.NewResponse(cmd, mgcp.CodeEndpointUnknown)
		}
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := waitingCall(ctx, e)
	e.waitFor("waiting", func() bool { return e.modes("aaln/1") == "sendrecv inactive" })
	invites := len(e.pbx.Received("INVITE"))
	refuse.Store(true)
	e.flash("aaln/1")
	e.waitSignal("aaln/1", "L/e")
	if m := e.modes("aaln/1"); m != "sendrecv inactive" {
		t.Errorf("after the refused hold: %s", m)
	}
	if got := len(e.pbx.Received("INVITE")); got != invites {
		t.Errorf("%d INVITEs after the refused hold", got-invites)
	}
	refuse.Store(false)
	cancel()
	<-done
	e.waitFor("the waiting call gone", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.record()
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}
