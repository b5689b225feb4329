package bridge_test

// Regressions of the line-correctness defects (issue 10): each test fails
// on the bridge before the line's requests were derived from its state.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// incoming places a call from the PBX to user in the background.
func (e *env) incoming(user string) <-chan *siptest.OutCall {
	out := make(chan *siptest.OutCall, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := e.pbx.Call(ctx, user, "5551234", []byte(siptest.DefaultAnswerSDP))
		if err != nil && c == nil {
			c = &siptest.OutCall{}
		}
		out <- c
	}()
	return out
}

func (e *env) callResult(ch <-chan *siptest.OutCall) *siptest.OutCall {
	e.t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(25 * time.Second):
		e.t.Fatal("the PBX's call got no final answer")
	}
	return nil
}

// armed reports an idle line's request: off-hook watched, nothing else.
func armed(st mgcptest.EndpointState) bool {
	return hasEvent(st, "L/hd") && !hasEvent(st, "L/hu") && len(st.Connections) == 0
}

// TestIncomingCRCXFailure (defects 1 and 11): an incoming call whose CRCX
// the gateway refuses (501 after a forced restart, 505 for an SDP it
// cannot take) or never answers gets a final answer; mgsip stays up, the
// line stays usable, and a silent gateway is marked down at once.
func TestIncomingCRCXFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   mgcp.ReturnCode // 0: silence
		status int
	}{
		{"501", mgcp.CodeEndpointNotReady, 480},
		{"505", mgcp.CodeUnsupportedRemoteSDP, 488},
		{"timeout", 0, 480},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var refuse, silent atomic.Bool
			e := newEnv(t, envOptions{register: true, mgcp: mgcp.Config{TMax: 1500 * time.Millisecond, MaxRTO: 500 * time.Millisecond},
				respond: func(cmd *mgcp.Command) *mgcp.Response {
					if cmd.Verb == mgcp.VerbCRCX && refuse.Load() {
						return mgcp.NewResponse(cmd, tc.code)
					}
					return nil
				},
				faults: func([]byte, net.Addr) mgcptest.Fault { return mgcptest.Fault{Drop: silent.Load()} }})
			if tc.code == 0 {
				silent.Store(true)
			} else {
				refuse.Store(true)
			}
			if c := e.callResult(e.incoming("1002")); c.Status != tc.status {
				t.Fatalf("final answer %d, want %d", c.Status, tc.status)
			}
			if tc.code == 0 {
				down := false
				for _, g := range e.b.Gateways() {
					down = down || g.Down
				}
				if !down {
					t.Error("a CRCX timeout did not mark the gateway down")
				}
				// Down: the next call is refused at once, no CRCX sent.
				n := len(e.gw.Commands())
				start := time.Now()
				// Refused at once: 480 from mgsip, or, once the down
				// gateway's lines are unregistered (which races with this
				// call), by the PBX itself for want of a binding.
				c := e.callResult(e.incoming("1002"))
				_, bound := e.pbx.Binding("1002")
				if !(c.Status == 480 || c.Status == 0 && !bound) || time.Since(start) > time.Second {
					t.Errorf("call to a down gateway: %d (line still registered: %v) after %v", c.Status, bound, time.Since(start))
				}
				if got := verbs(e.gw.Commands()[n:], "aaln/2"); strings.Contains(got, "CRCX") {
					t.Errorf("CRCX sent to a gateway marked down: %s", got)
				}
				silent.Store(false)
				e.do(func(ctx context.Context) (*mgcp.Response, error) {
					return e.gw.Restart(ctx, "*", mgcp.RestartRestart, 0)
				})
			}
			refuse.Store(false)
			e.waitSignalState("aaln/2", armed)
			res := e.incoming("1002")
			e.waitSignal("aaln/2", "L/rg")
			e.offHook("aaln/2")
			if c := e.callResult(res); c.Status != 200 {
				t.Fatalf("second call: %d", c.Status)
			} else {
				_ = c.HangUp(context.Background())
			}
			e.waitSignal("aaln/2", "L/ro")
			e.onHook("aaln/2")
			e.waitSignalState("aaln/2", armed)
		})
	}
}

// TestGatewayDeleteEndsCall (defect 3): a DLCX from the gateway (RTP
// timeout, hardware failure) ends the SIP side too (BYE with a Reason),
// the off-hook phone hears reorder, and hanging up re-arms the line.
func TestGatewayDeleteEndsCall(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	c := e.conn("aaln/1")
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.DeleteConnection(ctx, "aaln/1", c.ID, mgcp.Reason{Code: 900})
	})
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	if bye := string(e.pbx.Received("BYE")[0].Data); !strings.Contains(bye, "Reason: Q.850;cause=41") {
		t.Errorf("BYE without a Reason:\n%s", bye)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/ro") && hasEvent(st, "L/hu") })
	if r := e.record(); !strings.HasPrefix(r.Result, "gateway deleted the connection") {
		t.Errorf("record %+v", r)
	}
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
}

// TestOperatorHangUpWhileRinging (defect 4): hanging up a ringing call
// from the admin API answers the caller 480 and re-arms the on-hook
// phone; rearm refuses a line in a call.
func TestOperatorHangUpWhileRinging(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	res := e.incoming("1002")
	e.waitSignal("aaln/2", "L/rg")
	var id string
	e.waitFor("the call listed", func() bool {
		for _, c := range e.b.Calls() {
			id = c.ID
		}
		return id != ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.b.Rearm(ctx, "gw/aaln/2"); !errors.Is(err, bridge.ErrLineBusy) {
		t.Errorf("rearm of a ringing line: %v", err)
	}
	if err := e.b.HangUp(id); err != nil {
		t.Fatal(err)
	}
	if c := e.callResult(res); c.Status != 480 {
		t.Errorf("caller got %d", c.Status)
	}
	e.waitSignalState("aaln/2", armed)
	if st := e.state("aaln/2"); hasSignal(st, "L/ro") {
		t.Errorf("reorder on an on-hook phone: %v", st.Signals)
	}
	e.waitFor("line 2 idle in the admin API", func() bool {
		for _, l := range e.b.Lines() {
			if l.ID == "gw/aaln/2" {
				return l.State == "idle" && !l.OffHook && l.Call == nil
			}
		}
		return false
	})
	if err := e.b.Rearm(ctx, "gw/aaln/2"); err != nil {
		t.Errorf("rearm of an idle line: %v", err)
	}
}

// TestPBXKnownDown (defect 7): with the PBX known unreachable, a call to
// it gives congestion at once, and one that may fall back is switched
// locally at once; no INVITE waits for Timer B.
func TestPBXKnownDown(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.b.SetPeerReachable("pbx", false)
	start := time.Now()
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitSignal("aaln/1", "G/cg")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("congestion after %v", d)
	}
	if n := len(e.pbx.Received("INVITE")); n != 0 {
		t.Errorf("%d INVITEs to a PBX known down", n)
	}
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)

	f := newEnv(t, envOptions{viaPBX: true})
	f.b.SetPeerReachable("pbx", false)
	f.offHook("aaln/1")
	f.dial("aaln/1", "1002")
	f.waitSignal("aaln/2", "L/rg")
	if n := len(f.pbx.Received("INVITE")); n != 0 {
		t.Errorf("%d INVITEs to a PBX known down", n)
	}
	f.offHook("aaln/2")
	f.onHook("aaln/1")
	f.waitSignal("aaln/2", "L/ro")
	f.onHook("aaln/2")
	f.waitSignalState("aaln/1", armed)
	f.waitSignalState("aaln/2", armed)
}

// TestStaleConnectionsAtStart (defect 8): connections a crashed mgsip
// left on the gateway are audited (F: I) and deleted when mgsip starts.
func TestStaleConnectionsAtStart(t *testing.T) {
	e := newEnv(t, envOptions{before: func(gw *mgcptest.Gateway) {
		other, err := mgcp.Listen(mgcp.Config{ListenAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go func() { _ = other.Serve(ctx) }()
		for _, ep := range []string{"aaln/1", "aaln/2"} {
			if _, err := other.CreateConnection(ctx, gw.Addr(), gw.Endpoint(ep), mgcp.Parameters{CallID: "DEAD", Mode: mgcp.ModeSendRecv},
				[]byte(siptest.DefaultAnswerSDP)); err != nil {
				t.Fatal(err)
			}
		}
	}})
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
	if got := verbs(e.gw.Commands(), "aaln/1"); !strings.Contains(got, "AUEP DLCX") {
		t.Errorf("aaln/1 saw %s", got)
	}
	for _, c := range e.gw.Commands() {
		if c.Verb == mgcp.VerbAUEP && !strings.Contains(strings.Join(c.RequestedInfo, ","), "I") {
			t.Errorf("audit without F: I: %v", c.RequestedInfo)
		}
	}
}

// TestDigitMapNoMatch (defect 9): digits the digit map cannot match give
// reorder at once; nothing goes to the PBX.
func TestDigitMapNoMatch(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "*5")
	e.waitSignal("aaln/1", "L/ro")
	if n := len(e.pbx.Received("INVITE")); n != 0 {
		t.Errorf("%d INVITEs for a no-match", n)
	}
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
}

// TestOutgoingNoAnswer (defect 10): an outgoing call the far end lets
// ring is cancelled after the no-answer timeout and the caller hears
// reorder.
func TestOutgoingNoAnswer(t *testing.T) {
	e := newEnv(t, envOptions{noAnswer: time.Second, uas: func(siptest.Incoming) siptest.Script {
		return siptest.Script{Ring: 30 * time.Second}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitSignal("aaln/1", "G/rt")
	e.waitFor("CANCEL at the PBX", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	e.waitSignal("aaln/1", "L/ro")
	e.noConnections("aaln/1")
	if r := e.record(); r.Result != "no answer" || r.Answered {
		t.Errorf("record %+v", r)
	}
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
}

// TestRSIPSupersedesStartupAudit (defect 12): mgsip starts while the
// gateway is silent; when it comes up and sends RSIP, the lines are armed
// at once, not after the start-up audits have given up.
func TestRSIPSupersedesStartupAudit(t *testing.T) {
	var silent atomic.Bool
	silent.Store(true)
	e := newEnv(t, envOptions{noWait: true, mgcp: mgcp.Config{TMax: 20 * time.Second},
		faults: func([]byte, net.Addr) mgcptest.Fault { return mgcptest.Fault{Drop: silent.Load()} }})
	e.waitFor("start-up audits sent", func() bool { return strings.Contains(verbs(e.gw.Commands(), "aaln/2"), "AUEP") })
	silent.Store(false)
	start := time.Now()
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.Restart(ctx, "*", mgcp.RestartRestart, 0)
	})
	for _, l := range []string{"aaln/1", "aaln/2"} {
		e.waitSignalState(l, armed)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("armed %v after the RSIP", d)
	}
	e.offHook("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
}

// TestLockStepAfterIgnoredEvents (defect 2): an NTFY the line has no use
// for (an in-call digit sent as INFO, a flash during ringback, a flash in
// a locally switched call) is still followed by a request, so the strict
// gateway reports the hang-up that comes next instead of holding it back
// for ever.
func TestLockStepAfterIgnoredEvents(t *testing.T) {
	t.Run("info digit", func(t *testing.T) {
		e := newEnv(t, envOptions{features: mapping.Features{DTMF: "info"}})
		e.offHook("aaln/1")
		e.dial("aaln/1", "2000")
		e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
		e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Dial(ctx, "aaln/1", "5") })
		e.waitFor("INFO at the PBX", func() bool { return len(e.pbx.Received("INFO")) == 1 })
		e.waitFor("the line re-armed after the digit", func() bool { return !e.gw.InNotificationState("aaln/1") })
		e.onHook("aaln/1")
		e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
		e.waitSignalState("aaln/1", armed)
		e.record()
	})
	t.Run("flash during ringback", func(t *testing.T) {
		e := newEnv(t, envOptions{features: mapping.Features{Transfer: new(bool)}, uas: func(siptest.Incoming) siptest.Script {
			return siptest.Script{Ring: 20 * time.Second}
		}})
		e.offHook("aaln/1")
		e.dial("aaln/1", "2000")
		e.waitSignal("aaln/1", "G/rt")
		e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Flash(ctx, "aaln/1") })
		e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool {
			return hasSignal(st, "G/rt") && !e.gw.InNotificationState("aaln/1")
		})
		e.onHook("aaln/1")
		e.waitFor("CANCEL at the PBX", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
		e.waitSignalState("aaln/1", armed)
		e.record()
	})
	t.Run("flash in a local call", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.offHook("aaln/1")
		e.dial("aaln/1", "1002")
		e.waitSignal("aaln/2", "L/rg")
		e.offHook("aaln/2")
		e.waitFor("connected", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
		e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Flash(ctx, "aaln/1") })
		e.waitFor("the line re-armed after the flash", func() bool { return !e.gw.InNotificationState("aaln/1") })
		// The flash held aaln/2 and gave dial tone; hanging up with
		// nothing dialled rings aaln/1 back for its held party (it used
		// to wait for that ring's time-out, racing this test's own).
		e.onHook("aaln/1")
		e.waitSignal("aaln/1", "L/rg")
		e.offHook("aaln/1")
		e.waitFor("taken back", func() bool {
			return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn("aaln/2").Mode == mgcp.ModeSendRecv
		})
		e.onHook("aaln/1")
		e.waitSignal("aaln/2", "L/ro")
		e.onHook("aaln/2")
		e.waitSignalState("aaln/1", armed)
		e.waitSignalState("aaln/2", armed)
		e.record()
		e.record()
	})
}

// TestReleaseRace (defect 5): both phones of a local call hang up at
// once. The line that learns of the other's hang-up before its own NTFY
// asks for L/hu with reorder; the gateway answers 402 (already on hook);
// mgsip takes that as the on-hook and arms the line, with no warning.
func TestReleaseRace(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.InfoLevel)
	e := newEnv(t, envOptions{log: logrus.NewEntry(logger)})
	for i := range 5 {
		e.offHook("aaln/1")
		e.dial("aaln/1", "1002")
		e.waitSignal("aaln/2", "L/rg")
		e.offHook("aaln/2")
		e.waitBothConnected()
		first, second := "aaln/1", "aaln/2"
		if i%2 == 1 {
			first, second = second, first
		}
		e.onHook(first)
		e.onHook(second)
		e.waitSignalState("aaln/1", armed)
		e.waitSignalState("aaln/2", armed)
		e.record()
		e.record()
	}
	for _, en := range hook.AllEntries() {
		if en.Level <= logrus.WarnLevel {
			t.Errorf("warning logged: %s %v", en.Message, en.Data)
		}
	}
}

// TestTransactionsPerCall (defect 6): a line-to-line call, through the
// PBX (SIP both ways) and switched locally, costs at most 13 MGCP
// transactions from the first off-hook to both lines armed again
// (embedded requests, no ringback started after the answer, no MDCX to
// receive-only before the one to send-receive).
func TestTransactionsPerCall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		viaPBX bool
	}{{"through the PBX", true}, {"switched locally", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{register: tc.viaPBX, viaPBX: tc.viaPBX,
				uas: func(siptest.Incoming) siptest.Script { return siptest.Script{Forward: true} }})
			before := e.ca.Stats()
			e.offHook("aaln/1")
			e.dial("aaln/1", "1002")
			e.waitSignal("aaln/2", "L/rg")
			e.offHook("aaln/2")
			e.waitBothConnected()
			e.onHook("aaln/1")
			e.waitSignal("aaln/2", "L/ro")
			e.onHook("aaln/2")
			e.waitSignalState("aaln/1", armed)
			e.waitSignalState("aaln/2", armed)
			e.record()
			e.record()
			after := e.ca.Stats()
			n := (after.CommandsSent - before.CommandsSent) + (after.CommandsReceived - before.CommandsReceived)
			t.Logf("%s: %d MGCP transactions (%d commands from mgsip, %d from the gateway)", tc.name, n,
				after.CommandsSent-before.CommandsSent, after.CommandsReceived-before.CommandsReceived)
			if n > 13 {
				t.Errorf("%d MGCP transactions for one call, want at most 13", n)
			}
		})
	}
}

// TestIncomingWhileDialling: the gateway gave dial tone by itself (the
// embedded request), so mgsip does not know the phone is off hook; an
// incoming call's CRCX gets 401, the caller 486, and the number the
// phone goes on dialling still makes its call.
func TestIncomingWhileDialling(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	if c := e.callResult(e.incoming("1001")); c.Status != 486 {
		t.Errorf("call to a dialling line: %d", c.Status)
	}
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Dial(ctx, "aaln/1", "1002") })
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitFor("connected", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.onHook("aaln/2")
	e.waitSignal("aaln/1", "L/ro")
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
	e.waitSignalState("aaln/2", armed)
	for range 3 {
		e.record()
	}
}

// TestRefusedInviteWithoutAck: a caller that never ACKs a refusal (a lost
// ACK) must not hold up the line for Timer H: the phone that was dialling
// when the call was refused completes its call at once.
func TestRefusedInviteWithoutAck(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	me := conn.LocalAddr().String()
	invite := "INVITE sip:1001@" + e.stack.LocalAddr().String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + me + ";branch=z9hG4bK-noack-1\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:5551234@" + me + ">;tag=noack\r\nTo: <sip:1001@" + e.stack.LocalAddr().String() + ">\r\n" +
		"Call-ID: noack-1@" + me + "\r\nCSeq: 1 INVITE\r\nContact: <sip:5551234@" + me + ">\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(siptest.DefaultAnswerSDP)) + "\r\n\r\n" + siptest.DefaultAnswerSDP
	to, _ := net.ResolveUDPAddr("udp", e.stack.LocalAddr().String())
	if _, err := conn.WriteTo([]byte(invite), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	final := ""
	for final == "" {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no final answer: %v", err)
		}
		if line, _, _ := strings.Cut(string(buf[:n]), "\r\n"); !strings.Contains(line, " 100 ") {
			final = line
		}
	}
	if !strings.Contains(final, " 486 ") {
		t.Errorf("INVITE to a dialling line answered %q", final)
	}
	// No ACK. The line goes on at once.
	start := time.Now()
	e.do(func(ctx context.Context) (*mgcp.Response, error) { return e.gw.Dial(ctx, "aaln/1", "1002") })
	e.waitSignal("aaln/2", "L/rg")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the dialled call rang after %v", d)
	}
	e.offHook("aaln/2")
	e.onHook("aaln/1")
	e.waitSignal("aaln/2", "L/ro")
	e.onHook("aaln/2")
	e.waitSignalState("aaln/1", armed)
	e.waitSignalState("aaln/2", armed)
}

// TestGracefulAfterRestart: a graceful RSIP right behind a restart must
// not cancel the restart's audit: the line ends armed (found by the
// exploration).
func TestGracefulAfterRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 5 {
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Restart(ctx, "aaln/1", mgcp.RestartRestart, 0)
		})
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Restart(ctx, "*", mgcp.RestartGraceful, 0)
		})
		e.waitSignalState("aaln/1", armed)
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Restart(ctx, "*", mgcp.RestartCancelGraceful, 0)
		})
	}
	e.offHook("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
}

// TestRSIPAnsweredBeforeAudit: the gateway receives the answer to its
// RSIP before any of the audits the restart causes (they queue behind
// the answer and the gateway's transaction window), so a storm of RSIPs
// is not retransmitted for want of an answer.
func TestRSIPAnsweredBeforeAudit(t *testing.T) {
	var gw atomic.Pointer[mgcptest.Gateway]
	var watch atomic.Bool
	var before atomic.Uint64 // responses the gateway had received before the RSIP
	early := make(chan string, 64)
	respond := func(cmd *mgcp.Command) *mgcp.Response {
		if g := gw.Load(); g != nil && watch.Load() && cmd.Verb == mgcp.VerbAUEP {
			if g.Agent().Stats().ResponsesReceived <= before.Load() {
				early <- cmd.Endpoint.String()
			}
		}
		return nil
	}
	e := newEnv(t, envOptions{lines: 16, respond: respond})
	gw.Store(e.gw)
	for range 5 {
		before.Store(e.gw.Agent().Stats().ResponsesReceived)
		watch.Store(true)
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Restart(ctx, "*", mgcp.RestartRestart, 0)
		})
		for i := 1; i <= 16; i++ {
			e.waitSignalState("aaln/"+strconv.Itoa(i), armed)
		}
		watch.Store(false)
		select {
		case ep := <-early:
			t.Fatalf("AUEP for %s reached the gateway before the answer to its RSIP", ep)
		default:
		}
	}
}

// TestRSIPOneEndpoint: an RSIP from one endpoint (not a wildcard) audits
// and re-arms that line only, however its name is spelled; the other
// lines see no command. (It is looked up, not found by walking every
// line: a storm of per-endpoint RSIPs was quadratic.)
func TestRSIPOneEndpoint(t *testing.T) {
	e := newEnv(t, envOptions{lines: 4})
	for _, ep := range []string{"aaln/1", "aaln/2", "aaln/3", "aaln/4"} {
		e.waitSignalState(ep, armed)
	}
	for _, name := range []string{"aaln/3", "AALN/3"} {
		before := len(e.gw.Commands())
		e.do(func(ctx context.Context) (*mgcp.Response, error) {
			return e.gw.Restart(ctx, name, mgcp.RestartRestart, 0)
		})
		e.waitSignalState("aaln/3", armed)
		var audited bool
		for _, c := range e.gw.Commands()[before:] {
			switch {
			case !strings.EqualFold(c.Endpoint.Local, "aaln/3"):
				t.Errorf("RSIP of %s: %s sent to %s", name, c.Verb, c.Endpoint)
			case c.Verb == mgcp.VerbAUEP:
				audited = true
			}
		}
		if !audited {
			t.Errorf("RSIP of %s: the line was not audited", name)
		}
	}
	e.offHook("aaln/3")
	e.waitSignal("aaln/3", "L/dl")
	e.onHook("aaln/3")
	e.waitSignalState("aaln/3", armed)
}

// TestHoldResumeAnswerApplied: the far end's answers to the line's own
// hold and resume re-INVITEs become the connection's remote description
// (RFC 3264 §8), in the call's mode: they were ignored, so a handed-over
// call held here and taken back kept the hold answer (a=recvonly) on a
// sendrecv connection, and an answer that moved the media (music on hold,
// then the phone) would have left the gateway sending to the old
// address (found by the exploration's invariants during plans, seeds
// 1796158829258130903 and 1796158829258130929).
func TestHoldResumeAnswerApplied(t *testing.T) {
	e := newEnv(t, envOptions{register: true, features: mapping.Features{ThreeWay: new(bool)}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	e.flash("aaln/1")
	e.waitFor("held, with the PBX's answer", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeInactive && strings.Contains(string(c.RemoteSDP), "a=recvonly")
	})
	e.flash("aaln/1")
	e.waitFor("resumed, with the PBX's answer", func() bool {
		c := e.conn("aaln/1")
		return c.Mode == mgcp.ModeSendRecv && strings.Contains(string(c.RemoteSDP), "a=sendrecv")
	})
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}
