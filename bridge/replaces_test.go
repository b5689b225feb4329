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

// header returns the value of a message's first header called name.
func header(msg []byte, name string) string {
	for _, ln := range strings.Split(string(msg), "\r\n") {
		if k, v, ok := strings.Cut(ln, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestReplacesHeldCall: line 1 talks to 2000 (A); the PBX's call B waits.
// An INVITE whose Replaces names the waiting call (an early dialog the far
// end started) gets 481 and B waits on (RFC 3891 §3). A flash answers B
// and holds A; an INVITE replacing A, the held call, takes A's place and
// state: our answer is a=sendonly, A's connection stays inactive and now
// points at the new far end, A gets a BYE. The next flash resumes the new
// call (re-INVITE a=sendrecv, connection sendrecv) and holds B; the new
// party hanging up brings B back; hanging up ends it, nothing left.
func TestReplacesHeldCall(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	connA := e.conn("aaln/1").ID
	var invA, okA siptest.Message
	e.waitFor("A's INVITE and 200 at the PBX", func() bool {
		r := e.pbx.Received("INVITE")
		if len(r) == 0 {
			return false
		}
		invA = r[0]
		for _, m := range e.pbx.Sent("SIP/2.0 200") {
			if header(m.Data, "Call-ID") == header(invA.Data, "Call-ID") && strings.HasSuffix(header(m.Data, "CSeq"), "INVITE") {
				okA = m
				return true
			}
		}
		return false
	})
	repA := header(invA.Data, "Call-ID") + ";to-tag=" + tagOf(invA.Data, "From") + ";from-tag=" + tagOf(okA.Data, "To")

	waiting := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		waiting <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	var invB, ringB siptest.Message
	e.waitFor("B's INVITE and our 180", func() bool {
		for _, m := range e.pbx.Sent("INVITE") {
			if strings.HasPrefix(m.StartLine(), "INVITE sip:1001@") {
				invB = m
			}
		}
		for _, m := range e.pbx.Messages() {
			if !m.Outgoing && strings.HasPrefix(m.StartLine(), "SIP/2.0 180") {
				ringB = m
			}
		}
		return invB.Data != nil && ringB.Data != nil
	})
	repB := header(invB.Data, "Call-ID") + ";to-tag=" + tagOf(ringB.Data, "To") + ";from-tag=" + tagOf(invB.Data, "From")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdp := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	if c, err := e.pbx.CallWith(ctx, "1001", "5557777", []byte(sdp), map[string]string{"Replaces": repB}); err == nil || c.Status != 481 {
		t.Fatalf("Replaces naming the waiting call: %+v %v, want 481", c, err)
	}
	if m := e.modes("aaln/1"); m != "sendrecv inactive" {
		t.Fatalf("after the refusal: %q, want A talking and B waiting", m)
	}

	e.flash("aaln/1")
	b := <-waiting
	if b == nil || b.Status != 200 {
		t.Fatalf("waiting call: %+v", b)
	}
	e.waitFor("A held, B talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	nc, err := e.pbx.CallWith(ctx, "1001", "5557777", []byte(sdp), map[string]string{"Replaces": repA})
	if err != nil || nc.Status != 200 {
		t.Fatalf("INVITE replacing the held call: %+v %v", nc, err)
	}
	if !strings.Contains(string(nc.SDP), "a=sendonly") {
		t.Errorf("answer %q: want a=sendonly (the call stays held)", nc.SDP)
	}
	e.waitFor("A's BYE", func() bool {
		for _, m := range e.pbx.Received("BYE") {
			if header(m.Data, "Call-ID") == header(invA.Data, "Call-ID") {
				return true
			}
		}
		return false
	})
	st := e.state("aaln/1")
	if len(st.Connections) != 2 {
		t.Fatalf("connections %v", st.Connections)
	}
	held := st.Connections[0]
	if held.ID != connA || held.Mode != mgcp.ModeInactive || !strings.Contains(string(held.RemoteSDP), "m=audio 40200") {
		t.Fatalf("held connection %s mode %s remote %q: want A's, inactive, toward the new far end", held.ID, held.Mode, held.RemoteSDP)
	}

	e.flash("aaln/1")
	e.waitFor("the new call resumed, B held", func() bool { return e.modes("aaln/1") == "sendrecv inactive" })
	e.waitFor("resume re-INVITE to the new call", func() bool {
		for _, m := range e.pbx.Received("INVITE") {
			if header(m.Data, "Call-ID") != header(invA.Data, "Call-ID") && strings.Contains(string(m.Data), "a=sendrecv") &&
				tagOf(m.Data, "To") != "" && strings.Contains(string(m.Data), "5557777") {
				return true
			}
		}
		return false
	})
	if err := nc.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitFor("B back", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("B got no BYE")
	}
}

// TestReplacesOfferless: an INVITE with Replaces and no SDP (RFC 3264 §4)
// gets the gateway's description as the offer in our 200 (a=sendrecv
// toward the connection's port) and its answer from the ACK (RFC 3261
// §13.2.1): only then does the connection go to the new far end. An ACK
// without an answer, or with one the gateway cannot take, ends the new
// call with a BYE and the phone hears reorder; the replaced call is gone
// either way.
func TestReplacesOfferless(t *testing.T) {
	good := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	bad := "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40200 RTP/AVP 98\r\na=rtpmap:98 opus/48000/2\r\n"
	for _, tc := range []struct {
		name   string
		answer string
		works  bool
	}{
		{"answer in the ACK", good, true},
		{"no answer", "", false},
		{"unusable answer", bad, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{register: true})
			first := make(chan *siptest.OutCall, 1)
			go func() {
				c, _ := e.pbx.Call(context.Background(), "1002", "5551234", []byte(siptest.DefaultAnswerSDP))
				first <- c
			}()
			e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
			e.offHook("aaln/2")
			a := <-first
			if a == nil || a.Status != 200 {
				t.Fatalf("first call %+v", a)
			}
			e.waitFor("talking", func() bool { return e.conn("aaln/2").Mode == mgcp.ModeSendRecv })
			conn := e.conn("aaln/2")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var offer []byte
			b, err := e.pbx.CallOfferless(ctx, "1002", "5557777", map[string]string{"Replaces": a.ReplacesValue()},
				func(o []byte) []byte { offer = o; return []byte(tc.answer) })
			if err != nil || b.Status != 200 {
				t.Fatalf("offerless INVITE with Replaces: %+v %v", b, err)
			}
			if !strings.Contains(string(offer), "m=audio "+strconv.Itoa(conn.RTPPort)) || strings.Contains(string(offer), "a=sendonly") ||
				strings.Contains(string(offer), "a=inactive") {
				t.Fatalf("offer %q: want the gateway's port %d, not on hold", offer, conn.RTPPort)
			}
			select {
			case <-a.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the replaced call got no BYE")
			}
			if !tc.works {
				select {
				case <-b.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("the new call was not hung up")
				}
				e.waitSignal("aaln/2", "L/ro")
				e.noConnections("aaln/2")
				e.onHook("aaln/2")
				return
			}
			e.waitFor("the connection toward the answer", func() bool {
				c := e.conn("aaln/2")
				return c.ID == conn.ID && c.Mode == mgcp.ModeSendRecv && strings.Contains(string(c.RemoteSDP), "m=audio 40200")
			})
			e.onHook("aaln/2")
			select {
			case <-b.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("hanging up did not end the new call")
			}
			e.noConnections("aaln/2")
		})
	}
}

// TestReplacesActiveWhileWaiting: line 1 talks to 2000 (A) while the
// PBX's call B waits; an INVITE replacing A takes A's connection and
// talks, A gets a BYE, B waits on (its waiting connection untouched); a
// flash then answers B and holds the new call, as it would have held A.
func TestReplacesActiveWhileWaiting(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	connA := e.conn("aaln/1").ID
	var invA, okA siptest.Message
	e.waitFor("A's INVITE and 200 at the PBX", func() bool {
		r := e.pbx.Received("INVITE")
		if len(r) == 0 {
			return false
		}
		invA = r[0]
		for _, m := range e.pbx.Sent("SIP/2.0 200") {
			if header(m.Data, "Call-ID") == header(invA.Data, "Call-ID") && strings.HasSuffix(header(m.Data, "CSeq"), "INVITE") {
				okA = m
				return true
			}
		}
		return false
	})
	repA := header(invA.Data, "Call-ID") + ";to-tag=" + tagOf(invA.Data, "From") + ";from-tag=" + tagOf(okA.Data, "To")
	waiting := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		waiting <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdp := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	nc, err := e.pbx.CallWith(ctx, "1001", "5557777", []byte(sdp), map[string]string{"Replaces": repA})
	if err != nil || nc.Status != 200 {
		t.Fatalf("INVITE replacing the active call: %+v %v", nc, err)
	}
	e.waitFor("A's BYE", func() bool {
		for _, m := range e.pbx.Received("BYE") {
			if header(m.Data, "Call-ID") == header(invA.Data, "Call-ID") {
				return true
			}
		}
		return false
	})
	st := e.state("aaln/1")
	if len(st.Connections) != 2 || st.Connections[0].ID != connA || st.Connections[0].Mode != mgcp.ModeSendRecv ||
		!strings.Contains(string(st.Connections[0].RemoteSDP), "m=audio 40200") || st.Connections[1].Mode != mgcp.ModeInactive {
		t.Fatalf("connections %v: want A's toward the new far end, B's still waiting", st.Connections)
	}
	e.flash("aaln/1")
	b := <-waiting
	if b == nil || b.Status != 200 {
		t.Fatalf("waiting call: %+v", b)
	}
	e.waitFor("the new call held, B talking", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	if err := b.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the new call back", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	select {
	case <-nc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the new call got no BYE")
	}
}
