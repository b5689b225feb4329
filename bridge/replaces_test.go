package bridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestInviteWithReplaces: the PBX calls line 2, the phone answers; a
// second INVITE whose Replaces names that dialog takes the line's
// connection (one MDCX to its SDP), is answered with the gateway's SDP,
// and the first call gets a BYE. Replaces naming no dialog gets 481,
// early-only on a confirmed dialog 486; the phone hanging up ends the
// new call and leaves no connection.
func TestInviteWithReplaces(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	first := make(chan *siptest.OutCall, 1)
	go func() {
		c, err := e.pbx.Call(context.Background(), "1002", "5551234", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		first <- c
	}()
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	e.offHook("aaln/2")
	a := <-first
	if a == nil {
		t.FailNow()
	}
	e.waitFor("talking", func() bool { return e.conn("aaln/2").Mode == mgcp.ModeSendRecv })
	connID := e.conn("aaln/2").ID

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := e.pbx.CallWith(ctx, "1002", "5550000", []byte(siptest.DefaultAnswerSDP),
		map[string]string{"Replaces": "no-such-call;to-tag=x;from-tag=y"}); err == nil || c.Status != 481 {
		t.Fatalf("Replaces naming nothing: %+v %v, want 481", c, err)
	}
	if c, err := e.pbx.CallWith(ctx, "1002", "5550000", []byte(siptest.DefaultAnswerSDP),
		map[string]string{"Replaces": a.ReplacesValue() + ";early-only"}); err == nil || c.Status != 486 {
		t.Fatalf("early-only on a confirmed dialog: %+v %v, want 486", c, err)
	}

	sdp := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	b, err := e.pbx.CallWith(ctx, "1002", "5557777", []byte(sdp), map[string]string{"Replaces": a.ReplacesValue()})
	if err != nil || b.Status != 200 {
		t.Fatalf("INVITE with Replaces: %+v %v", b, err)
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced call got no BYE")
	}
	c := e.conn("aaln/2")
	if c.ID != connID || c.Mode != mgcp.ModeSendRecv || !strings.Contains(string(c.RemoteSDP), "m=audio 40200") {
		t.Fatalf("connection %s mode %s remote %q: want the same connection toward the new far end", c.ID, c.Mode, c.RemoteSDP)
	}
	if !strings.Contains(string(b.SDP), "m=audio "+strconv.Itoa(c.RTPPort)) {
		t.Errorf("answer %q does not carry the gateway's port %d", b.SDP, c.RTPPort)
	}
	e.onHook("aaln/2")
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hanging up did not end the new call")
	}
	e.noConnections("aaln/2")
}

// tagOf returns the tag parameter of a message's header (From or To).
func tagOf(msg []byte, header string) string {
	for _, ln := range strings.Split(string(msg), "\r\n") {
		if k, v, ok := strings.Cut(ln, ":"); ok && strings.EqualFold(strings.TrimSpace(k), header) {
			if _, tag, ok := strings.Cut(v, ";tag="); ok {
				tag, _, _ = strings.Cut(tag, ";")
				return strings.TrimSpace(tag)
			}
		}
	}
	return ""
}

// TestReplacesEarlyDialogs: RFC 3891 §3 on early dialogs. The line calls
// 2000, which rings: an INVITE whose Replaces names that early dialog
// (ours) is accepted: our INVITE is cancelled, the line's connection goes
// to the new caller and talks. The PBX then calls line 2, which rings: an
// INVITE replacing that early dialog (the far end's) gets 481 and line 2
// rings on.
func TestReplacesEarlyDialogs(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		return siptest.Script{Ring: 8 * time.Second}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	var inv, ringing siptest.Message
	e.waitFor("the PBX rings", func() bool {
		r, s := e.pbx.Received("INVITE"), e.pbx.Sent("SIP/2.0 180")
		if len(r) == 0 || len(s) == 0 {
			return false
		}
		inv, ringing = r[0], s[0]
		return true
	})
	connID := e.conn("aaln/1").ID
	callID := ""
	for _, ln := range strings.Split(string(inv.Data), "\r\n") {
		if v, ok := strings.CutPrefix(ln, "Call-ID: "); ok {
			callID = v
		}
	}
	rep := callID + ";to-tag=" + tagOf(inv.Data, "From") + ";from-tag=" + tagOf(ringing.Data, "To")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdp := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	b, err := e.pbx.CallWith(ctx, "1001", "5557777", []byte(sdp), map[string]string{"Replaces": rep})
	if err != nil || b.Status != 200 {
		t.Fatalf("INVITE replacing our early dialog: %+v %v", b, err)
	}
	e.waitFor("our INVITE cancelled", func() bool { return e.pbx.Calls()[487] == 1 })
	c := e.conn("aaln/1")
	if c.ID != connID || c.Mode != mgcp.ModeSendRecv || !strings.Contains(string(c.RemoteSDP), "m=audio 40200") {
		t.Fatalf("connection %s mode %s remote %q", c.ID, c.Mode, c.RemoteSDP)
	}
	e.onHook("aaln/1")
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hanging up did not end the new call")
	}
	e.noConnections("aaln/1")

	ringingCall := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1002", "5551234", []byte(siptest.DefaultAnswerSDP))
		ringingCall <- c
	}()
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	var out, got180 siptest.Message
	e.waitFor("line 2's 180 at the PBX", func() bool {
		for _, m := range e.pbx.Sent("INVITE") {
			if strings.HasPrefix(m.StartLine(), "INVITE sip:1002@") {
				out = m
			}
		}
		for _, m := range e.pbx.Messages() {
			if !m.Outgoing && strings.HasPrefix(m.StartLine(), "SIP/2.0 180") {
				got180 = m
			}
		}
		return out.Data != nil && got180.Data != nil
	})
	callID = ""
	for _, ln := range strings.Split(string(out.Data), "\r\n") {
		if v, ok := strings.CutPrefix(ln, "Call-ID: "); ok {
			callID = v
		}
	}
	rep = callID + ";to-tag=" + tagOf(got180.Data, "To") + ";from-tag=" + tagOf(out.Data, "From")
	if c, err := e.pbx.CallWith(ctx, "1002", "5557777", []byte(sdp), map[string]string{"Replaces": rep}); err == nil || c.Status != 481 {
		t.Fatalf("INVITE replacing the far end's early dialog: %+v %v, want 481", c, err)
	}
	if st := e.state("aaln/2"); !hasSignal(st, "L/rg") || len(st.Connections) != 1 {
		t.Fatalf("line 2 stopped ringing: %v %v", st.Signals, st.Connections)
	}
	e.offHook("aaln/2")
	if c := <-ringingCall; c == nil || c.Status != 200 {
		t.Fatalf("the ringing call: %+v", c)
	} else if err := c.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
}
