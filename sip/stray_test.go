package sip_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

// respond builds a response of the peer to req (its Via, From, Call-ID
// and CSeq), from the dialog of toTag, with extra header lines and an
// SDP body when sdp is set.
func respond(req, status, toTag string, extra []string, sdp string) string {
	m := "SIP/2.0 " + status + "\r\nVia: " + hdr(req, "Via") + "\r\nFrom: " + hdr(req, "From") + "\r\n"
	to := hdr(req, "To")
	if toTag != "" && !strings.Contains(to, ";tag=") {
		to += ";tag=" + toTag
	}
	m += "To: " + to + "\r\nCall-ID: " + hdr(req, "Call-ID") + "\r\nCSeq: " + hdr(req, "CSeq") + "\r\n"
	for _, h := range extra {
		m += h + "\r\n"
	}
	if sdp != "" {
		return m + "Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp
	}
	return m + "Content-Length: 0\r\n\r\n"
}

// requestURI is the Request-URI of a request's text.
func requestURI(msg string) string {
	f := strings.Fields(statusLine(msg))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// routes lists the Route header lines of a message, in order.
func routes(msg string) []string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	var r []string
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Route") {
			r = append(r, strings.TrimSpace(v))
		}
	}
	return r
}

func toTagOf(msg string) string {
	_, tag, _ := strings.Cut(hdr(msg, "To"), ";tag=")
	tag, _, _ = strings.Cut(tag, ";")
	return tag
}

// remoteTagOf is the far end's tag of a dialog (its Replaces to-tag).
func remoteTagOf(d *sip.Dialog) string {
	_, v, _ := strings.Cut(d.ReplacesValue(), ";to-tag=")
	v, _, _ = strings.Cut(v, ";")
	return v
}

// forkPeer plays a forking proxy with two UASs behind it on one socket:
// the 200 of each fork record-routes through the peer and names its own
// Contact.
type forkPeer struct {
	*udpPeer
	inv string
}

func (p *forkPeer) ok(tag string) string {
	return respond(p.inv, "200 OK", tag, []string{
		"Contact: <sip:" + tag + "@127.0.0.1:9;transport=udp>",
		"Record-Route: <sip:far-proxy.invalid;lr;fork=" + tag + ">",
		"Record-Route: <sip:" + p.addr() + ";lr>",
	}, answer)
}

// checkExtraDialog checks the ACK and the BYE sent in the dialog of the
// 2xx ok (RFC 3261 §13.2.2.4, §12.2.1.1): its To, its Contact as
// Request-URI, its Record-Route reversed as Route, the INVITE's CSeq
// number in the ACK and a higher one in the BYE.
func checkExtraDialog(t *testing.T, inv, ok, msg, method string) {
	t.Helper()
	if !strings.HasPrefix(msg, method+" ") {
		t.Fatalf("got %q, want a %s", statusLine(msg), method)
	}
	if hdr(msg, "To") != hdr(ok, "To") || hdr(msg, "Call-ID") != hdr(inv, "Call-ID") || hdr(msg, "From") != hdr(inv, "From") {
		t.Errorf("%s not in the extra dialog:\n%s", method, msg)
	}
	if got, want := requestURI(msg), strings.Trim(hdr(ok, "Contact"), "<>"); got != want {
		t.Errorf("%s Request-URI %q, want the 2xx's Contact %q", method, got, want)
	}
	rr := []string{}
	for _, l := range strings.Split(ok, "\r\n") {
		if v, found := strings.CutPrefix(l, "Record-Route: "); found {
			rr = append([]string{v}, rr...)
		}
	}
	if got := routes(msg); strings.Join(got, ",") != strings.Join(rr, ",") {
		t.Errorf("%s Route %q, want the Record-Route reversed %q", method, got, rr)
	}
	n := cseqNum(t, msg)
	switch method {
	case "ACK":
		if n != cseqNum(t, inv) || !strings.HasSuffix(hdr(msg, "CSeq"), " ACK") {
			t.Errorf("ACK CSeq %q, INVITE's %q", hdr(msg, "CSeq"), hdr(inv, "CSeq"))
		}
	case "BYE":
		if n <= cseqNum(t, inv) || !strings.HasSuffix(hdr(msg, "CSeq"), " BYE") {
			t.Errorf("BYE CSeq %q, INVITE's %q", hdr(msg, "CSeq"), hdr(inv, "CSeq"))
		}
	}
}

// TestForkedSecond2xx: our INVITE forks behind a proxy and both forks
// answer. The dialog of the 200 the call takes stays up; the other 200
// gets its own ACK, then a BYE in its dialog (RFC 3261 §13.2.2.4), and
// every repetition of it the same ACK again, byte for byte. The kept
// call never gets an ACK for the other fork's 200, and hangs up
// normally afterwards.
func TestForkedSecond2xx(t *testing.T) {
	for _, tc := range []struct {
		name        string
		backToBack  bool // both 200s before our first ACK
		prack       sip.PRACKMode
		reliable183 bool
	}{
		{name: "after the first ACK"},
		{name: "back to back", backToBack: true},
		{name: "after a PRACK", prack: sip.PRACKRequired, reliable183: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stack, cp := capturedStack(t)
			p := &forkPeer{udpPeer: newPeer(t)}
			d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(),
				SDP: []byte(offer), PRACK: tc.prack})
			if err != nil {
				t.Fatal(err)
			}
			if p.inv = p.expect("INVITE ", 5*time.Second); p.inv == "" {
				t.Fatal("no INVITE")
			}
			to := stack.LocalAddr()
			if tc.reliable183 {
				p.send(to, respond(p.inv, "183 Session Progress", "forkA", []string{"Contact: <sip:forkA@" + p.addr() + ">",
					"Require: 100rel", "RSeq: 1"}, answer))
				pr := p.expect("PRACK ", 5*time.Second)
				if pr == "" {
					t.Fatal("no PRACK")
				}
				p.send(to, respond(pr, "200 OK", "", nil, ""))
			}
			okA, okB := p.ok("forkA"), p.ok("forkB")
			acks, count := map[string]string{}, map[string]int{}
			var bye string
			take := func(m string) {
				switch {
				case strings.HasPrefix(m, "ACK "):
					if prev, dup := acks[toTagOf(m)]; dup && prev != m {
						t.Fatalf("two different ACKs for the 200 of %s", toTagOf(m))
					}
					acks[toTagOf(m)] = m
					count[toTagOf(m)]++
				case strings.HasPrefix(m, "BYE "):
					if bye != "" {
						t.Fatal("second BYE")
					}
					bye = m
					p.send(to, respond(m, "200 OK", "", nil, ""))
				}
			}
			p.send(to, okA)
			if tc.backToBack {
				p.send(to, okB)
			} else {
				take(p.expect("ACK ", 5*time.Second))
				if acks["forkA"] == "" {
					t.Fatal("no ACK for the first 200")
				}
				p.send(to, okB)
			}
			// Whichever 200 the call took, the other is the extra dialog.
			deadline := time.Now().Add(5 * time.Second)
			for (len(acks) < 2 || bye == "") && time.Now().Before(deadline) {
				take(p.expect("", time.Until(deadline)))
			}
			if e := next(t, d); tc.reliable183 && e.Kind == sip.EventProgress {
				e = next(t, d)
				if e.Kind != sip.EventAnswered {
					t.Fatalf("event %v, want answered", e.Kind)
				}
			} else if e.Kind != sip.EventAnswered {
				t.Fatalf("event %v, want answered", e.Kind)
			}
			kept := remoteTagOf(d)
			extra, extraOK := "forkB", okB
			if kept == "forkB" {
				extra, extraOK = "forkA", okA
			}
			if kept != "forkA" && kept != "forkB" {
				t.Fatalf("kept dialog's tag %q", kept)
			}
			if !tc.backToBack && kept != "forkA" {
				t.Fatalf("the call took the second 200 (%s)", kept)
			}
			if acks[kept] == "" || acks[extra] == "" || bye == "" {
				t.Fatalf("ACKs for %v and BYE %q; want an ACK for each 200 and a BYE for %s", keys(acks), statusLine(bye), extra)
			}
			// Back to back, the second 200 may reach sipgo's transaction
			// before we know which dialog the call keeps, and sipgo's
			// session then sends the kept dialog's ACK again for it (the
			// same bytes, which its UAS absorbs); in order, never.
			if count[extra] != 1 || (!tc.backToBack && count[kept] != 1) {
				t.Errorf("ACKs sent per dialog %v", count)
			}
			checkExtraDialog(t, p.inv, extraOK, acks[extra], "ACK")
			checkExtraDialog(t, p.inv, extraOK, bye, "BYE")
			if toTagOf(bye) != extra {
				t.Fatalf("BYE to %s, the kept dialog is %s", toTagOf(bye), kept)
			}

			// The extra 200 repeated: the same ACK again, and nothing for
			// the kept dialog.
			for i := 0; i < 2; i++ {
				p.send(to, extraOK)
				if again := p.expect("", 5*time.Second); again != acks[extra] {
					t.Fatalf("after the extra 200 again, got\n%s\nwant its ACK again\n%s", again, acks[extra])
				}
			}
			// The kept 200 repeated: its own ACK again.
			keptOK := okA
			if kept == "forkB" {
				keptOK = okB
			}
			p.send(to, keptOK)
			if again := p.expect("", 5*time.Second); !strings.HasPrefix(again, "ACK ") || toTagOf(again) != kept {
				t.Fatalf("after the kept 200 again, got %q", statusLine(again))
			}
			if n := p.quiet(300 * time.Millisecond); n != "" {
				t.Fatalf("unexpected message:\n%s", n)
			}
			for _, a := range cp.find(true, "ACK ") {
				if toTagOf(a) == kept && cseqNum(t, a) == cseqNum(t, p.inv) && a != acks[kept] {
					t.Errorf("kept dialog's ACK changed:\n%s", a)
				}
			}
			if n := len(cp.find(true, "BYE ")); n != 1 {
				t.Errorf("%d BYEs sent, want the extra dialog's only", n)
			}

			// The kept call goes on: our BYE ends it in its own dialog.
			select {
			case e, ok := <-d.Events():
				t.Fatalf("kept call disturbed: event %v (open %v)", e.Kind, ok)
			default:
			}
			byeDone := make(chan error, 1)
			go func() { byeDone <- d.Bye(context.Background()) }()
			b := p.expect("BYE ", 5*time.Second)
			if b == "" || toTagOf(b) != kept {
				t.Fatalf("BYE of the kept call %q", b)
			}
			p.send(to, respond(b, "200 OK", "", nil, ""))
			if err := <-byeDone; err != nil {
				t.Fatalf("BYE: %v", err)
			}
		})
	}
}

func keys(m map[string]string) []string {
	var r []string
	for k := range m {
		r = append(r, k)
	}
	return r
}

// quiet returns the next datagram received within wait, or "".
func (p *udpPeer) quiet(wait time.Duration) string { return p.expect("", wait) }

// TestCancelCrossed2xx: we cancel our INVITE and the far end's 200
// crosses the CANCEL: the call is over for us, and that 200 still gets
// an ACK and a BYE (RFC 3261 §9.1, §13.2.2.4).
func TestCancelCrossed2xx(t *testing.T) {
	stack, _ := capturedStack(t)
	p := &forkPeer{udpPeer: newPeer(t)}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := stack.Invite(ctx, sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	if p.inv = p.expect("INVITE ", 5*time.Second); p.inv == "" {
		t.Fatal("no INVITE")
	}
	to := stack.LocalAddr()
	p.send(to, respond(p.inv, "180 Ringing", "uas", []string{"Contact: <sip:uas@" + p.addr() + ">"}, ""))
	if e := next(t, d); e.Kind != sip.EventRinging {
		t.Fatalf("event %v, want ringing", e.Kind)
	}
	cancel()
	c := p.expect("CANCEL ", 5*time.Second)
	if c == "" {
		t.Fatal("no CANCEL")
	}
	ok := p.ok("uas")
	p.send(to, ok) // the 200 was on its way
	p.send(to, respond(c, "200 OK", "", nil, ""))
	ack := p.expect("ACK ", 5*time.Second)
	if ack == "" {
		t.Fatal("the 200 that crossed our CANCEL was not acknowledged")
	}
	checkExtraDialog(t, p.inv, ok, ack, "ACK")
	bye := p.expect("BYE ", 5*time.Second)
	if bye == "" {
		t.Fatal("the 200 that crossed our CANCEL was not hung up")
	}
	checkExtraDialog(t, p.inv, ok, bye, "BYE")
	p.send(to, respond(bye, "200 OK", "", nil, ""))
	for e := range d.Events() {
		if e.Kind == sip.EventAnswered {
			t.Fatal("a cancelled call reported answered")
		}
	}
	p.send(to, ok)
	if again := p.expect("ACK ", 5*time.Second); again != ack {
		t.Fatalf("repeated 200: got\n%s\nwant the same ACK\n%s", again, ack)
	}
}

// establish places a call to p and answers it from the peer; it returns
// the dialog once answered.
func establish(t *testing.T, stack *sip.Stack, p *udpPeer) (*sip.Dialog, string) {
	t.Helper()
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	inv := p.expect("INVITE ", 5*time.Second)
	if inv == "" {
		t.Fatal("no INVITE")
	}
	p.send(stack.LocalAddr(), respond(inv, "200 OK", "uas", []string{"Contact: <sip:uas@" + p.addr() + ">"}, answer))
	if p.expect("ACK ", 5*time.Second) == "" {
		t.Fatal("no ACK")
	}
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("event %v, want answered", e.Kind)
	}
	return d, inv
}

// TestLateReinvite2xx: the call ends while our re-INVITE is pending (its
// wait abandoned, the BYE sent at once, RFC 3261 §15); the far end's 200
// to that re-INVITE comes after the BYE and still gets its ACK, and each
// repetition the same ACK again (§13.2.2.4). A 200 to a re-INVITE that
// was answered in time is repeated too: its ACK goes again.
func TestLateReinvite2xx(t *testing.T) {
	t.Run("abandoned", func(t *testing.T) {
		stack, _ := capturedStack(t)
		p := newPeer(t)
		d, _ := establish(t, stack, p)
		to := stack.LocalAddr()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := d.Reinvite(ctx, []byte(offer)); done <- err }()
		re := p.expect("INVITE ", 5*time.Second)
		if re == "" {
			t.Fatal("no re-INVITE")
		}
		p.send(to, respond(re, "100 Trying", "", nil, ""))
		cancel() // the call ends: the wait is abandoned
		if err := <-done; err == nil {
			t.Fatal("abandoned re-INVITE returned no error")
		}
		byeDone := make(chan error, 1)
		go func() { byeDone <- d.Bye(context.Background()) }()
		bye := p.expect("BYE ", 5*time.Second)
		if bye == "" {
			t.Fatal("no BYE")
		}
		ok := respond(re, "200 OK", "", []string{"Contact: <sip:uas@" + p.addr() + ">"}, answer)
		p.send(to, ok) // crossed our BYE
		p.send(to, respond(bye, "200 OK", "", nil, ""))
		if err := <-byeDone; err != nil {
			t.Fatalf("BYE: %v", err)
		}
		ack := p.expect("ACK ", 5*time.Second)
		if ack == "" {
			t.Fatal("the late 200 to the abandoned re-INVITE was not acknowledged")
		}
		if cseqNum(t, ack) != cseqNum(t, re) || !strings.HasSuffix(hdr(ack, "CSeq"), " ACK") ||
			hdr(ack, "To") != hdr(ok, "To") || hdr(ack, "From") != hdr(re, "From") || hdr(ack, "Call-ID") != hdr(re, "Call-ID") {
			t.Fatalf("ACK does not acknowledge the re-INVITE's 200:\n%s\nre-INVITE:\n%s", ack, re)
		}
		if requestURI(ack) != "sip:uas@"+p.addr() {
			t.Errorf("ACK Request-URI %q, want the Contact", requestURI(ack))
		}
		for i := 0; i < 2; i++ {
			p.send(to, ok)
			if again := p.expect("", 5*time.Second); again != ack {
				t.Fatalf("repeated 200: got\n%s\nwant the same ACK\n%s", again, ack)
			}
		}
	})
	t.Run("answered in time", func(t *testing.T) {
		stack, _ := capturedStack(t)
		p := newPeer(t)
		d, _ := establish(t, stack, p)
		to := stack.LocalAddr()
		done := make(chan error, 1)
		go func() { _, err := d.Reinvite(context.Background(), []byte(offer)); done <- err }()
		re := p.expect("INVITE ", 5*time.Second)
		if re == "" {
			t.Fatal("no re-INVITE")
		}
		ok := respond(re, "200 OK", "", []string{"Contact: <sip:uas@" + p.addr() + ">"}, answer)
		p.send(to, ok)
		ack := p.expect("ACK ", 5*time.Second)
		if ack == "" || cseqNum(t, ack) != cseqNum(t, re) {
			t.Fatalf("ACK of the re-INVITE's 200: %q", ack)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		p.send(to, ok)
		if again := p.expect("", 5*time.Second); again != ack {
			t.Fatalf("repeated 200: got\n%s\nwant the same ACK\n%s", again, ack)
		}
		select {
		case e := <-d.Events():
			t.Fatalf("event %v", e.Kind)
		default:
		}
	})
}
