package bridge_test

import (
	"context"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
)

// Transfer and three-way calling from and to locally switched calls
// (bridge/localxfer.go).

var audioPort = regexp.MustCompile(`(?m)^m=audio (\d+) `)

// port is the audio port of an SDP ("" without one).
func port(sdp []byte) string {
	if m := audioPort.FindSubmatch(sdp); m != nil {
		return string(m[1])
	}
	return ""
}

// linked reports two endpoints' only connections pointing at each other.
func (e *env) linked(a, b string) bool {
	ca, cb := e.state(a).Connections, e.state(b).Connections
	if len(ca) != 1 || len(cb) != 1 {
		return false
	}
	return port(ca[0].RemoteSDP) == port(cb[0].LocalSDP) && port(cb[0].RemoteSDP) == port(ca[0].LocalSDP) && port(ca[0].RemoteSDP) != ""
}

// localTalk: line 1 calls line 2 locally and line 2 answers.
func (e *env) localTalk(from, to, number string) {
	e.t.Helper()
	e.offHook(from)
	e.dial(from, number)
	e.waitSignal(to, "L/rg")
	e.offHook(to)
	e.waitFor("local call talking", func() bool {
		return e.modes(from) == "sendrecv" && e.modes(to) == "sendrecv"
	})
}

// recordsN reads n call records, by number.
func (e *env) recordsN(n int) map[string]bridge.CallRecord {
	e.t.Helper()
	got := map[string]bridge.CallRecord{}
	for range n {
		r := e.record()
		got[r.Line+">"+r.Number] = r
	}
	return got
}

// TestLocalTransferLocalToLocal: 1 talks to 2 (local), flash: 2 is held
// (inactive) and 1 hears dial tone; 1 dials 1003 (a local line): a
// consultation on a second connection; 3 answers; 1 hangs up: 2 and 3
// are linked (each connection given the other's description, RTP flows
// between them) and 1's connections are deleted. 2 hanging up then
// reaches 3.
func TestLocalTransferLocalToLocal(t *testing.T) {
	e := newEnv(t, envOptions{lines: 3})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("1003")
	e.waitSignal("aaln/3", "L/rg")
	if m := e.modes("aaln/1"); m != "inactive recvonly" {
		t.Fatalf("consulting a ringing local line: %s", m)
	}
	e.offHook("aaln/3")
	e.waitFor("2 held, talking to 3", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("2 and 3 linked", func() bool { return e.linked("aaln/2", "aaln/3") })
	c2, c3 := e.state("aaln/2").Connections[0], e.state("aaln/3").Connections[0]
	if c2.Mode != mgcp.ModeSendRecv || c3.Mode != mgcp.ModeSendRecv {
		t.Errorf("modes %s %s", c2.Mode, c3.Mode)
	}
	r2, r3 := c2.RTP.Received(), c3.RTP.Received()
	e.waitFor("RTP between 2 and 3", func() bool { return c2.RTP.Received() > r2+10 && c3.RTP.Received() > r3+10 })
	got := e.recordsN(2)
	if r := got["gw/aaln/1>1002"]; r.Result != "transferred locally to 1003" || !r.Transfer {
		t.Errorf("1's record of 2: %+v", r)
	}
	if r := got["gw/aaln/1>1003"]; r.Result != "transferred: connected to 1002" {
		t.Errorf("1's record of 3: %+v", r)
	}
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return armed(st) })
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.waitSignal("aaln/3", "L/ro")
	e.noConnections("aaln/3")
	e.onHook("aaln/3")
	got = e.recordsN(2)
	if r := got["gw/aaln/3>1002"]; !r.Transfer || !r.Answered {
		t.Errorf("3's record: %+v (%v)", r, got)
	}
	for _, l := range []string{"aaln/1", "aaln/2", "aaln/3"} {
		e.waitSignalState(l, func(st mgcptest.EndpointState) bool { return armed(st) })
	}
}

// TestLocalTransferBlindToRingingLocal: 1 hangs up while the consulted
// local line still rings: 2 and 3 are linked at once; 3's answer
// connects them (send-receive on both).
func TestLocalTransferBlindToRingingLocal(t *testing.T) {
	e := newEnv(t, envOptions{lines: 3})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("1003")
	e.waitSignal("aaln/3", "L/rg")
	e.waitFor("3 ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("2 linked to the ringing 3", func() bool { return e.linked("aaln/2", "aaln/3") })
	e.offHook("aaln/3")
	e.waitFor("2 and 3 talking", func() bool { return e.modes("aaln/2") == "sendrecv" && e.modes("aaln/3") == "sendrecv" })
	e.recordsN(2)
	e.onHook("aaln/3")
	e.noConnections("aaln/3")
	e.noConnections("aaln/2")
	e.onHook("aaln/2")
	e.recordsN(2)
}

// TestLocalHeldToSIPConsulted: 1 talks to 2 (local), flash, dials 2000
// (the PBX), talks to it and hangs up: the SIP leg is handed to line 2:
// its connection gets the far end's description, and a re-INVITE in the
// 2000 dialog carries line 2's connection, send-receive; no REFER. The
// PBX's later BYE reaches line 2 (its connection deleted, reorder).
func TestLocalHeldToSIPConsulted(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("2000")
	e.waitFor("2 held, 2000 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	c2 := e.conn("aaln/2")
	want := "m=audio " + port(c2.LocalSDP) + " "
	e.waitFor("re-INVITE with line 2's connection", func() bool {
		for _, s := range e.pbx.Received("INVITE") {
			d := string(s.Data)
			if strings.Contains(d, "To: <sip:2000@") && strings.Contains(d, want) && strings.Contains(d, "a=sendrecv") {
				return true
			}
		}
		return false
	})
	e.waitFor("line 2 sends to the far end", func() bool {
		cs := e.state("aaln/2").Connections
		return len(cs) == 1 && port(cs[0].RemoteSDP) == port([]byte(siptest.DefaultAnswerSDP)) && cs[0].Mode == mgcp.ModeSendRecv
	})
	if n := len(e.pbx.Received("REFER")); n != 0 {
		t.Errorf("%d REFERs", n)
	}
	if n := len(e.pbx.Received("BYE")); n != 0 {
		t.Errorf("%d BYEs at the hand-over", n)
	}
	got := e.recordsN(3) // 1's two legs, 2's local leg
	if r := got["gw/aaln/1>2000"]; r.Result != "transferred locally to 1002" || r.SIPCallID == "" {
		t.Errorf("1's record of 2000: %+v", r)
	}
	if r := got["gw/aaln/2>1001"]; r.Result != "transferred: now talking to 2000" {
		t.Errorf("2's record of its local leg: %+v", r)
	}
	// Line 2 hangs up: the BYE goes in the 2000 dialog.
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.waitFor("BYE in the 2000 dialog", func() bool {
		bs := e.pbx.Received("BYE")
		return len(bs) == 1 && strings.Contains(string(bs[0].Data), "To: <sip:2000@")
	})
	if r := e.record(); r.Line != "gw/aaln/2" || r.Number != "2000" || !r.Transfer || r.SIPCallID != got["gw/aaln/1>2000"].SIPCallID || !r.Answered {
		t.Errorf("2's record of 2000: %+v", r)
	}
	for _, l := range []string{"aaln/1", "aaln/2"} {
		e.waitSignalState(l, func(st mgcptest.EndpointState) bool { return armed(st) })
	}
}

// TestSIPHeldToLocalConsulted: the PBX's call to line 1 is answered;
// flash, 1 dials 1002 (local), 2 answers, 1 hangs up: the PBX's call is
// handed to line 2 (re-INVITE with line 2's connection); when the PBX
// hangs up, line 2's connection goes (its goroutine now serves the
// dialog) and it hears reorder.
func TestSIPHeldToLocalConsulted(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	out := pbxCallAnswered(t, e, "aaln/1", "1001")
	e.consult("1002")
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitFor("PBX held, 2 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	c2 := e.conn("aaln/2")
	want := "m=audio " + port(c2.LocalSDP) + " "
	e.waitFor("re-INVITE with line 2's connection", func() bool {
		for _, s := range e.pbx.Received("INVITE") {
			d := string(s.Data)
			if strings.HasPrefix(d, "INVITE") && strings.Contains(d, want) && strings.Contains(d, "a=sendrecv") {
				return true
			}
		}
		return false
	})
	e.waitFor("line 2 sends to the PBX", func() bool {
		cs := e.state("aaln/2").Connections
		return len(cs) == 1 && cs[0].Mode == mgcp.ModeSendRecv && port(cs[0].RemoteSDP) == port([]byte(siptest.DefaultAnswerSDP))
	})
	e.recordsN(3) // 1's two legs, 2's local leg
	if err := out.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.noConnections("aaln/2")
	e.waitSignal("aaln/2", "L/ro")
	e.onHook("aaln/2")
	if r := e.record(); r.Line != "gw/aaln/2" || r.Number != "5550002" || r.Result != "answered, far end hung up" {
		t.Errorf("2's record of the PBX call: %+v", r)
	}
}

// TestLocalHeldBlindToSIP: 1 talks to 2 (local), flash, dials 2100 and
// hangs up while it rings: the consultation is cancelled and line 2
// calls 2100 itself, from its own account; the answer moves line 2's
// connection to the new call. The second time 2100 answers 486: line 1
// rings back (caller id of 2) and picking up returns to 2.
func TestLocalHeldBlindToSIP(t *testing.T) {
	var consults, n atomic.Int32
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		switch {
		case in.User != "2100":
			return siptest.Script{}
		case in.From == "1001":
			consults.Add(1)
			return siptest.Script{Ring: 20 * time.Second} // the consultation
		case n.Add(1) == 2:
			return siptest.Script{Status: 486}
		}
		return siptest.Script{Ring: 50 * time.Millisecond}
	}})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("2100")
	e.waitFor("2100 ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" && consults.Load() == 1 })
	e.onHook("aaln/1")
	e.waitFor("consultation cancelled", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	e.noConnections("aaln/1")
	e.waitFor("line 2 talks to 2100", func() bool {
		cs := e.state("aaln/2").Connections
		return len(cs) == 1 && cs[0].Mode == mgcp.ModeSendRecv && port(cs[0].RemoteSDP) == port([]byte(siptest.DefaultAnswerSDP))
	})
	invs := e.pbx.Received("INVITE")
	last := string(invs[len(invs)-1].Data)
	if !strings.HasPrefix(last, "INVITE sip:2100@") || !strings.Contains(last, "From: \"Line 2\" <sip:1002@") {
		t.Errorf("line 2's INVITE:\n%s", last)
	}
	got := e.recordsN(3)
	if r := got["gw/aaln/1>1002"]; r.Result != "transferred to 2100" {
		t.Errorf("1's record of 2: %+v (%v)", r, got)
	}
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.recordsN(1)
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return armed(st) })

	// Failure: the phone rings back for 2, still held.
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("2100")
	e.waitFor("2100 ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" && consults.Load() == 2 })
	e.onHook("aaln/1")
	st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	if !hasSignal(st, "L/ci") {
		t.Errorf("ring back without caller id: %v", st.Signals)
	}
	e.offHook("aaln/1")
	e.waitFor("back to 2", func() bool { return e.modes("aaln/1") == "sendrecv" && e.modes("aaln/2") == "sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
	e.onHook("aaln/2")
	e.recordsN(4)
}

// TestThreeWayLocal: 1 talks to 2 (local), flash, dials 1003, 3 answers,
// flash: both of 1's connections in confrnce; a flash drops 3 (its line
// hears the hang-up) and 1 talks to 2 again; a second conference ended by
// hanging up ends both local legs.
func TestThreeWayLocal(t *testing.T) {
	e := newEnv(t, envOptions{lines: 3})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("1003")
	e.waitSignal("aaln/3", "L/rg")
	e.offHook("aaln/3")
	e.waitFor("2 held, 3 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
	e.waitFor("three-way", func() bool { return e.modes("aaln/1") == "confrnce confrnce" })
	e.flash("aaln/1")
	e.waitFor("3 dropped", func() bool { return e.modes("aaln/1") == "sendrecv" && e.modes("aaln/3") == "" })
	e.waitSignal("aaln/3", "L/ro")
	e.onHook("aaln/3")
	if r := e.recordsN(2)["gw/aaln/1>1003"]; r.Result != "dropped from the three-way call" {
		t.Errorf("1's record of 3 %+v", r)
	}
	e.consult("1003")
	e.waitSignal("aaln/3", "L/rg")
	e.offHook("aaln/3")
	e.waitFor("2 held, 3 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
	e.waitFor("three-way", func() bool { return e.modes("aaln/1") == "confrnce confrnce" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.noConnections("aaln/2")
	e.noConnections("aaln/3")
	e.onHook("aaln/2")
	e.onHook("aaln/3")
	e.recordsN(4)
}

// TestThreeWayLocalRefused: a gateway that refuses confrnce (517): the
// flash drops the local party 3 with the error tone and resumes 2.
func TestThreeWayLocalRefused(t *testing.T) {
	e := newEnv(t, envOptions{lines: 3, noConfGW: true})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.consult("1003")
	e.waitSignal("aaln/3", "L/rg")
	e.offHook("aaln/3")
	e.waitFor("2 held, 3 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
	e.waitFor("3 dropped, 2 resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && e.modes("aaln/3") == "" })
	tone := false
	for _, c := range e.gw.Commands() {
		for _, s := range c.Signals {
			tone = tone || (s.Is("L", "e") && strings.EqualFold(c.Endpoint.Local, "aaln/1"))
		}
	}
	if !tone {
		t.Error("no error tone")
	}
	e.onHook("aaln/3")
	e.onHook("aaln/1")
	e.noConnections("aaln/2")
	e.onHook("aaln/2")
	e.recordsN(4)
}

// TestReferToLocalLine: the PBX's call to line 1 is REFERed to 1002, a
// line of this mgsip: line 2 rings (NOTIFY 180), answers: line 1's
// connection is linked to line 2's, NOTIFY 200, then our BYE. A REFER to
// a busy local line gets NOTIFY 486, one to a number no line has NOTIFY
// 404, one to the line's own number NOTIFY 486, and the call goes on.
func TestReferToLocalLine(t *testing.T) {
	e := newEnv(t, envOptions{register: true, realm: "pbx.test"})
	out := pbxCallAnswered(t, e, "aaln/1", "1001")
	if st, err := out.Refer(context.Background(), "<sip:1002@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitFor("1 and 2 linked", func() bool { return e.linked("aaln/1", "aaln/2") })
	e.waitFor("NOTIFY 200 then BYE", func() bool { return sipfrags(e) == "100 180 200" && len(e.pbx.Received("BYE")) == 1 })
	seq := sipSeq(e.pbx.Messages())
	if i, j := strings.LastIndex(seq, "NOTIFY"), strings.Index(seq, "BYE"); j < i {
		t.Errorf("BYE before the final NOTIFY: %s", seq)
	}
	if m := e.modes("aaln/1"); m != "sendrecv" {
		t.Errorf("line 1: %s", m)
	}
	if r := e.record(); r.Number != "5550002" || !strings.HasPrefix(r.Result, "transferred by the far end to 1002") {
		t.Errorf("the PBX call's record %+v", r)
	}
	e.onHook("aaln/2")
	e.noConnections("aaln/1")
	e.waitSignal("aaln/1", "L/ro")
	e.onHook("aaln/1")
	e.recordsN(2)

	// Busy: line 2 is off hook.
	out = pbxCallAnswered(t, e, "aaln/1", "1001")
	e.offHook("aaln/2")
	e.waitFor("dial tone on 2", func() bool { return hasSignal(e.state("aaln/2"), "L/dl") || e.state("aaln/2").OffHook })
	if st, err := out.Refer(context.Background(), "<sip:1002@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	e.waitFor("NOTIFY 486", func() bool { return strings.HasSuffix(sipfrags(e), "100 486") })
	if m := e.modes("aaln/1"); m != "sendrecv" {
		t.Errorf("line 1 after the refusal: %s", m)
	}
	// No line has the number: 404.
	if st, err := out.Refer(context.Background(), "<sip:1009@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	e.waitFor("NOTIFY 404", func() bool { return strings.HasSuffix(sipfrags(e), "100 486 100 404") })
	if m := e.modes("aaln/1"); m != "sendrecv" || len(e.pbx.Received("BYE")) != 1 {
		t.Errorf("line 1 after the 404: %s, %d BYEs", m, len(e.pbx.Received("BYE")))
	}
	// The line's own number: busy (in this very call), not unknown.
	if st, err := out.Refer(context.Background(), "<sip:1001@pbx.test>"); err != nil || st != 202 {
		t.Fatalf("REFER: %d %v", st, err)
	}
	e.waitFor("NOTIFY 486", func() bool { return strings.HasSuffix(sipfrags(e), "100 404 100 486") })
	if m := e.modes("aaln/1"); m != "sendrecv" || len(e.pbx.Received("BYE")) != 1 {
		t.Errorf("line 1 after the REFER to itself: %s, %d BYEs", m, len(e.pbx.Received("BYE")))
	}
	e.onHook("aaln/2")
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}

// TestInteropKamailioLocalHeldToSIP: line 1 talks to line 2 (switched
// locally), flashes and dials 2000 (SIPp behind Kamailio), talks to it
// and hangs up: the 2000 leg is handed to line 2, whose re-INVITE goes
// along the dialog's route set through Kamailio with line 2's connection
// in its SDP, so that SIPp now sends to line 2's endpoint; SIPp's answer
// reaches line 2's connection, and line 2's hang-up sends the BYE.
func TestInteropKamailioLocalHeldToSIP(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_holdable.xml", "-m", "1")
	r := newKamRig(t, kamOptions{uas: uas.Addr, local: true})
	r.offHook("aaln/1")
	r.dial("aaln/1", "1002")
	r.waitSignal("aaln/2", "L/rg")
	r.offHook("aaln/2")
	r.waitFor("local call talking", func() bool { return r.modes("aaln/1") == "sendrecv" && r.modes("aaln/2") == "sendrecv" })
	r.flash("aaln/1")
	r.dial("aaln/1", "2000")
	r.waitFor("2 held, 2000 answered", func() bool { return r.modes("aaln/1") == "inactive sendrecv" })
	sippPort := port(r.state("aaln/1").Connections[1].RemoteSDP)
	r.onHook("aaln/1")
	r.waitArmed("aaln/1")
	c2 := r.state("aaln/2").Connections
	if len(c2) != 1 {
		t.Fatalf("line 2's connections: %+v", c2)
	}
	want := "m=audio " + port(c2[0].LocalSDP) + " "
	invs := r.sent("INVITE", 2) // 2000, line 2's re-INVITE
	last := invs[len(invs)-1]
	if !strings.Contains(string(last.Body()), want) || !strings.Contains(string(last.Body()), "a=sendrecv") ||
		last.CallID().Value() != invs[0].CallID().Value() {
		t.Errorf("the hand-over re-INVITE (want %q in the 2000 dialog %s):\n%s", want, invs[0].CallID().Value(), last)
	}
	r.waitFor("line 2 sends to SIPp", func() bool {
		cs := r.state("aaln/2").Connections
		return len(cs) == 1 && cs[0].Mode == mgcp.ModeSendRecv && port(cs[0].RemoteSDP) == sippPort
	})
	if n := len(r.wire.sentMsgs("REFER")); n != 0 {
		t.Errorf("%d REFERs", n)
	}
	r.onHook("aaln/2")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/2")
	byes := r.sent("BYE", 1)
	if byes[0].CallID().Value() != invs[0].CallID().Value() {
		t.Errorf("BYE in another dialog:\n%s", byes[0])
	}
	for range 4 {
		r.record()
	}
}

// TestSIPHeldBlindToRingingLocal: the PBX's call to line 1 is held for a
// consultation to line 2 (local), and line 1 hangs up while line 2 still
// rings: line 2 stops ringing (its connection deleted) and the PBX's
// party is REFERed to 1002 at the PBX's domain, as any blind transfer;
// after the final NOTIFY 200, BYE.
func TestSIPHeldBlindToRingingLocal(t *testing.T) {
	e := newEnv(t, envOptions{register: true, realm: "pbx.test"})
	pbxCallAnswered(t, e, "aaln/1", "1001")
	e.consult("1002")
	e.waitSignal("aaln/2", "L/rg")
	e.waitFor("PBX held, 2 ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" })
	e.onHook("aaln/1")
	e.noConnections("aaln/2")
	e.waitFor("REFER", func() bool { return len(e.pbx.Received("REFER")) == 1 })
	if refer := string(e.pbx.Received("REFER")[0].Data); !strings.Contains(refer, "Refer-To: <sip:1002@pbx.test>") {
		t.Errorf("REFER:\n%s", refer)
	}
	e.waitFor("BYE after the NOTIFY", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	e.noConnections("aaln/1")
	got := e.recordsN(3)
	if r := got["gw/aaln/1>5550002"]; r.Result != "transferred to 1002" {
		t.Errorf("1's record of the PBX call: %+v (%v)", r, got)
	}
	if r := got["gw/aaln/1>1002"]; r.Result != "given up: the held call is transferred to its number" {
		t.Errorf("1's record of 2: %+v", r)
	}
	for _, l := range []string{"aaln/1", "aaln/2"} {
		e.waitSignalState(l, func(st mgcptest.EndpointState) bool { return armed(st) })
	}
}

// TestHoldRefused: the gateway refuses (500) the MDCX inactive that would
// hold the party of a flash, on a local call and on a SIP call: no dial
// tone and no consultation (the party would hear the dialling over the
// connection still in sendrecv), no re-INVITE toward the SIP party; the
// phone hears the error tone and the call goes on.
func TestHoldRefused(t *testing.T) {
	for _, local := range []bool{true, false} {
		var refuse atomic.Bool
		e := newEnv(t, envOptions{lines: 2, register: true, respond: func(cmd *mgcp.Command) *mgcp.Response {
			if refuse.Load() && cmd.Verb == mgcp.VerbMDCX && cmd.Mode == mgcp.ModeInactive {
				return mgcp.NewResponse(cmd, mgcp.CodeEndpointUnknown)
			}
			return nil
		}})
		if local {
			e.localTalk("aaln/1", "aaln/2", "1002")
		} else {
			e.offHook("aaln/1")
			e.dial("aaln/1", "2000")
			e.waitFor("answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
		}
		invites := len(e.pbx.Received("INVITE"))
		refuse.Store(true)
		n := len(e.gw.Commands())
		e.flash("aaln/1")
		st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/e") })
		if hasSignal(st, "L/dl") {
			t.Errorf("local %v: dial tone after a refused hold: %v %v", local, st.Signals, st.RequestedEvents)
		}
		if !hasEvent(st, "L/hf") || !hasEvent(st, "L/hu") {
			t.Errorf("local %v: the call's events not armed: %v", local, st.RequestedEvents)
		}
		if m := e.modes("aaln/1"); m != "sendrecv" {
			t.Errorf("local %v: modes %s", local, m)
		}
		if got := verbs(e.gw.Commands()[n:], "aaln/1"); strings.Count(got, "MDCX") != 1 || strings.Contains(got, "CRCX") {
			t.Errorf("local %v: commands after the flash: %s", local, got)
		}
		if got := len(e.pbx.Received("INVITE")); got != invites {
			t.Errorf("local %v: %d re-INVITEs after a refused hold", local, got-invites)
		}
		refuse.Store(false)
		// The call is still up: a second flash (hold accepted) consults.
		e.flash("aaln/1")
		e.waitSignal("aaln/1", "L/dl")
		e.waitFor("held", func() bool { return e.modes("aaln/1") == "inactive" })
		e.flash("aaln/1")
		e.waitFor("resumed", func() bool { return e.modes("aaln/1") == "sendrecv" })
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		if local {
			e.onHook("aaln/2")
			e.noConnections("aaln/2")
			e.recordsN(2)
		} else {
			e.record()
		}
	}
}

// TestReferHangupWhileTargetRings: the PBX REFERs line 1's call to a
// target that rings (local line 1002, then the SIP number 2999) and the
// phone hangs up meanwhile: the attempt is given up (line 2 stops
// ringing, or CANCEL) and the transferor gets a final NOTIFY 487 that
// ends the subscription (RFC 3515 §2.4.5) before our BYE.
func TestReferHangupWhileTargetRings(t *testing.T) {
	e := newEnv(t, envOptions{register: true, realm: "pbx.test", uas: func(in siptest.Incoming) siptest.Script {
		return siptest.Script{Ring: 20 * time.Second}
	}})
	for i, target := range []string{"1002", "2999"} {
		out := pbxCallAnswered(t, e, "aaln/1", "1001")
		if st, err := out.Refer(context.Background(), "<sip:"+target+"@pbx.test>"); err != nil || st != 202 {
			t.Fatalf("REFER: %d %v", st, err)
		}
		if target == "1002" {
			e.waitSignal("aaln/2", "L/rg")
		}
		want := strings.Repeat("100 180 487 ", i) + "100 180"
		e.waitFor("NOTIFY 180", func() bool { return sipfrags(e) == want })
		e.onHook("aaln/1")
		e.waitFor("BYE", func() bool { return len(e.pbx.Received("BYE")) == i+1 })
		e.noConnections("aaln/1")
		if target == "1002" {
			e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return armed(st) && !hasSignal(st, "L/rg") })
		} else {
			e.waitFor("CANCEL", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
		}
		e.waitFor("final NOTIFY", func() bool { return sipfrags(e) == want+" 487" })
		seq := sipSeq(e.pbx.Messages())
		if k, j := strings.LastIndex(seq, "NOTIFY"), strings.LastIndex(seq, "BYE"); j < k {
			t.Errorf("%s: BYE before the final NOTIFY: %s", target, seq)
		}
		notifies := e.pbx.Received("NOTIFY")
		if last := string(notifies[len(notifies)-1].Data); !strings.Contains(last, "Subscription-State: terminated") {
			t.Errorf("%s: the final NOTIFY does not end the subscription:\n%s", target, last)
		}
		e.recordsN(2)
	}
}

// TestHandedReinvitePendingHangUp: after the SIP consultation 2000 is
// handed to line 2 (line 1, the transferor, hangs up), line 2 hangs up
// while the hand-over's re-INVITE is pending: the far end never answers
// it, or answers 491. The BYE goes at once (RFC 3261 §15: a confirmed
// dialog may be ended while a re-INVITE is pending), the re-INVITE is
// abandoned (no retransmission, no retry after the 491).
func TestHandedReinvitePendingHangUp(t *testing.T) {
	for _, status := range []int{-1, 491} {
		var answerNow atomic.Bool
		e := newEnv(t, envOptions{lines: 2, reinvite: func(int) int {
			if answerNow.Load() {
				return 0
			}
			return status
		}})
		e.localTalk("aaln/1", "aaln/2", "1002")
		answerNow.Store(true) // the hold of line 2's leg is local; the consultation's own re-INVITEs pass
		e.consult("2000")
		e.waitFor("2 held, 2000 talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
		answerNow.Store(false)
		n := len(e.pbx.Received("INVITE"))
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		e.waitFor("the hand-over's re-INVITE", func() bool { return len(e.pbx.Received("INVITE")) > n })
		e.recordsN(3)
		e.onHook("aaln/2")
		e.noConnections("aaln/2")
		// Before the fix the BYE waited for the re-INVITE's transaction
		// (32 s) or for three 491s (two retries, 2.1-4 s apart).
		e.waitFor("BYE", func() bool { return len(e.pbx.Received("BYE")) == 1 })
		e.record()
		if got := len(e.pbx.Received("INVITE")) - n; status == 491 && got != 1 {
			t.Errorf("491: %d re-INVITEs, want 1 (no retry once the call ended)", got)
		}
		// Abandoned: no retransmission after the BYE (T1 is 500 ms: the
		// next ones would come within 2 s).
		time.Sleep(2500 * time.Millisecond)
		seq := sipSeq(e.pbx.Messages())
		if _, after, _ := strings.Cut(seq, "BYE"); strings.Contains(after, "INVITE") {
			t.Errorf("status %d: INVITE after the BYE: %s", status, seq)
		}
	}
}
