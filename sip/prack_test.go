package sip_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/sip"
)

// capture records the SIP messages a stack's UDP socket reads and writes.
type capture struct {
	net.PacketConn
	mu   sync.Mutex
	msgs []captured
}

type captured struct {
	out bool
	msg string
}

func (c *capture) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if n > 0 {
		c.mu.Lock()
		c.msgs = append(c.msgs, captured{false, string(b[:n])})
		c.mu.Unlock()
	}
	return n, a, err
}

func (c *capture) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	c.msgs = append(c.msgs, captured{true, string(b)})
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, a)
}

// wrap makes c the recorder of the socket it wraps (for
// WithPacketConnWrapper when the capture exists first).
func (c *capture) wrap(pc net.PacketConn) net.PacketConn { c.PacketConn = pc; return c }

// request returns the first request received with this method whose
// text contains all of want, waiting for it.
func (c *capture) request(t *testing.T, method string, want ...string) *gosip.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		var msgs []string
		for _, m := range c.msgs {
			if !m.out {
				msgs = append(msgs, m.msg)
			}
		}
		c.mu.Unlock()
	next:
		for _, m := range msgs {
			if !strings.HasPrefix(m, method+" ") {
				continue
			}
			for _, w := range want {
				if !strings.Contains(m, w) {
					continue next
				}
			}
			parsed, err := gosip.ParseMessage([]byte(m))
			if err != nil {
				t.Fatal(err)
			}
			return parsed.(*gosip.Request)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s containing %q received", method, want)
	return nil
}

// find returns the messages in one direction whose first line starts with
// prefix.
func (c *capture) find(out bool, prefix string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r []string
	for _, m := range c.msgs {
		if m.out == out && strings.HasPrefix(m.msg, prefix) {
			r = append(r, m.msg)
		}
	}
	return r
}

// hdr returns the value of the first header called name in a message.
func hdr(msg, name string) string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func cseqNum(t *testing.T, msg string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.Fields(hdr(msg, "CSeq"))[0])
	if err != nil {
		t.Fatalf("bad CSeq in %q", msg)
	}
	return n
}

func capturedStack(t *testing.T) (*sip.Stack, *capture) {
	t.Helper()
	var cp *capture
	s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}},
		sip.WithPacketConnWrapper(func(c net.PacketConn) net.PacketConn { cp = &capture{PacketConn: c}; return cp }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, s))
	return s, cp
}

// TestPRACKBetweenStacks: mgsip calls mgsip with 100rel supported on both
// sides. The callee's 183 with SDP and its 180 are reliable and each
// PRACKed once, the 180 only after the 183's PRACK, the 200 only after
// the PRACK of the 183 (it carried SDP); the ACK carries the INVITE's
// CSeq and the BYE one above the PRACKs'.
func TestPRACKBetweenStacks(t *testing.T) {
	caller, callerCap := capturedStack(t)
	callee, calleeCap := capturedStack(t)
	errs := make(chan string, 8)
	done := make(chan struct{})
	rang := make(chan struct{})
	callee.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		defer close(done)
		if err := d.SetPRACK(sip.PRACKSupported); err != nil {
			errs <- err.Error()
			return
		}
		if !d.Reliable() {
			errs <- "callee does not use 100rel although the INVITE supports it"
		}
		_ = d.Progress([]byte(answer))
		_ = d.Ring() // goes out once the 183 is PRACKed
		<-rang
		if err := d.Answer([]byte(answer)); err != nil {
			errs <- "answer: " + err.Error()
			calleeCap.mu.Lock()
			for _, m := range calleeCap.msgs {
				t.Logf("out=%v\n%s", m.out, m.msg)
			}
			calleeCap.mu.Unlock()
			return
		}
		for e := range d.Events() {
			if e.Kind == sip.EventBye {
				return
			}
		}
	}))
	d, err := caller.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002",
		Peer: callee.LocalAddr().String(), SDP: []byte(offer), PRACK: sip.PRACKSupported})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for e := range d.Events() {
		kinds = append(kinds, e.Kind.String())
		if e.Kind == sip.EventProgress && !bytes.Equal(e.SDP, []byte(answer)) {
			t.Errorf("early answer %q", e.SDP)
		}
		if e.Kind == sip.EventRinging {
			close(rang)
		}
		if e.Kind == sip.EventAnswered {
			if err := d.Bye(context.Background()); err != nil {
				t.Fatalf("BYE after PRACK: %v", err)
			}
		}
		if e.Kind == sip.EventFailed {
			t.Fatalf("call failed: %+v", e)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("callee never saw the BYE")
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := strings.Join(kinds, ","); got != "progress,ringing,answered" {
		t.Errorf("caller events %s, want progress,ringing,answered", got)
	}
	inv := callerCap.find(true, "INVITE ")
	if len(inv) == 0 || !strings.Contains(hdr(inv[0], "Supported"), "100rel") {
		t.Fatalf("INVITE does not say Supported: 100rel: %q", inv)
	}
	invCSeq := cseqNum(t, inv[0])
	prov := calleeCap.find(true, "SIP/2.0 18")
	if len(prov) < 2 {
		t.Fatalf("callee sent %d provisionals", len(prov))
	}
	rseq183, _ := strconv.Atoi(hdr(prov[0], "RSeq"))
	if !strings.HasPrefix(prov[0], "SIP/2.0 183") || rseq183 == 0 || hdr(prov[0], "Require") != "100rel" {
		t.Fatalf("first provisional is not a reliable 183: %q", prov[0])
	}
	pracks := calleeCap.find(false, "PRACK ")
	if len(pracks) != 2 {
		t.Fatalf("callee received %d PRACKs, want 2", len(pracks))
	}
	for i, p := range pracks {
		want := strconv.Itoa(rseq183+i) + " " + strconv.Itoa(invCSeq) + " INVITE"
		if got := hdr(p, "RAck"); got != want {
			t.Errorf("PRACK %d: RAck %q, want %q", i, got, want)
		}
		if got := cseqNum(t, p); got != invCSeq+1+i {
			t.Errorf("PRACK %d: CSeq %d, want %d", i, got, invCSeq+1+i)
		}
	}
	acks := calleeCap.find(false, "ACK ")
	if len(acks) == 0 || cseqNum(t, acks[0]) != invCSeq {
		t.Fatalf("ACK %q does not carry the INVITE's CSeq %d", acks, invCSeq)
	}
	byes := calleeCap.find(false, "BYE ")
	if len(byes) == 0 || cseqNum(t, byes[0]) <= invCSeq+2 {
		t.Fatalf("BYE %q: CSeq not above the PRACKs'", byes)
	}
	// The 200 left after the 183's PRACK.
	calleeCap.mu.Lock()
	prackAt, okAt := -1, -1
	for i, m := range calleeCap.msgs {
		if !m.out && strings.HasPrefix(m.msg, "PRACK ") && prackAt < 0 {
			prackAt = i
		}
		if m.out && strings.HasPrefix(m.msg, "SIP/2.0 200") && strings.Contains(hdr(m.msg, "CSeq"), "INVITE") && okAt < 0 {
			okAt = i
		}
	}
	calleeCap.mu.Unlock()
	if okAt < prackAt {
		t.Errorf("the 200 to the INVITE (message %d) went before the first PRACK (message %d)", okAt, prackAt)
	}
}

// TestPRACKModes: which side asks for what decides whether the 18x is
// reliable; a callee that requires 100rel refuses an INVITE that does not
// support it with 421 and Require: 100rel.
func TestPRACKModes(t *testing.T) {
	for _, tc := range []struct {
		name           string
		caller, callee sip.PRACKMode
		reliable       bool
		status         int
	}{
		{"both off", sip.PRACKOff, sip.PRACKOff, false, 0},
		{"caller supports, callee off", sip.PRACKSupported, sip.PRACKOff, false, 0},
		{"caller off, callee supports", sip.PRACKOff, sip.PRACKSupported, false, 0},
		{"caller requires, callee off", sip.PRACKRequired, sip.PRACKOff, true, 0},
		{"caller supports, callee requires", sip.PRACKSupported, sip.PRACKRequired, true, 0},
		{"caller off, callee requires", sip.PRACKOff, sip.PRACKRequired, false, 421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caller, _ := capturedStack(t)
			callee, calleeCap := capturedStack(t)
			callee.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
				if err := d.SetPRACK(tc.callee); err != nil {
					return
				}
				_ = d.Ring()
				_ = d.Answer([]byte(answer))
				for range d.Events() {
				}
			}))
			d, err := caller.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002",
				Peer: callee.LocalAddr().String(), SDP: []byte(offer), PRACK: tc.caller})
			if err != nil {
				t.Fatal(err)
			}
			var got []sip.Event
			for e := range d.Events() {
				got = append(got, e)
				if e.Kind == sip.EventAnswered {
					_ = d.Bye(context.Background())
				}
			}
			if tc.status != 0 {
				last := got[len(got)-1]
				if last.Kind != sip.EventFailed || last.Status != tc.status {
					t.Fatalf("events %+v, want a failure %d", got, tc.status)
				}
				refusal := calleeCap.find(true, "SIP/2.0 "+strconv.Itoa(tc.status))
				if len(refusal) == 0 || hdr(refusal[0], "Require") != "100rel" {
					t.Fatalf("refusal %q without Require: 100rel", refusal)
				}
				return
			}
			answered := false
			for _, e := range got {
				answered = answered || e.Kind == sip.EventAnswered
			}
			if !answered {
				t.Fatalf("events %+v, want an answer", got)
			}
			ringing := calleeCap.find(true, "SIP/2.0 180")
			if len(ringing) == 0 {
				t.Fatal("no 180 sent")
			}
			if rel := hdr(ringing[0], "RSeq") != ""; rel != tc.reliable {
				t.Fatalf("180 reliable: %v, want %v\n%s", rel, tc.reliable, ringing[0])
			}
		})
	}
}

// rawUAS reads from a raw peer until a message whose first line starts
// with prefix arrives, or wait passes ("").
func (p *udpPeer) expect(prefix string, wait time.Duration) string {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(wait)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return ""
		}
		if m := string(buf[:n]); strings.HasPrefix(m, prefix) {
			return m
		}
	}
}

func (p *udpPeer) send(to net.Addr, msg string) {
	p.t.Helper()
	msg = strings.ReplaceAll(msg, "{via}", p.addr())
	if _, err := p.conn.WriteTo([]byte(msg), to); err != nil {
		p.t.Fatal(err)
	}
}

// TestPRACKUASRetransmitsAndMatches: a strict caller that requires 100rel
// sees the reliable 183 repeated until it PRACKs; a PRACK naming another
// RSeq gets 481, one without RAck 400, the right one 200; the repetitions
// stop and the 200 to the INVITE follows.
func TestPRACKUASRetransmitsAndMatches(t *testing.T) {
	stack, _ := capturedStack(t)
	answered := make(chan error, 1)
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		_ = d.SetPRACK(sip.PRACKOff) // the INVITE's Require decides
		_ = d.Progress([]byte(answer))
		answered <- d.Answer([]byte(answer))
		for range d.Events() {
		}
	}))
	p := newPeer(t)
	to := stack.LocalAddr()
	invite := "INVITE sip:2002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKprack1\r\n" +
		"From: <sip:2001@127.0.0.1>;tag=a1\r\nTo: <sip:2002@127.0.0.1>\r\nCall-ID: prack-uas-1\r\nCSeq: 10 INVITE\r\n" +
		"Contact: <sip:2001@{via}>\r\nMax-Forwards: 70\r\nRequire: 100rel\r\nContent-Type: application/sdp\r\n" +
		"Content-Length: " + strconv.Itoa(len(offer)) + "\r\n\r\n" + offer
	p.send(to, invite)
	first := p.expect("SIP/2.0 183", 5*time.Second)
	if first == "" || hdr(first, "Require") != "100rel" || hdr(first, "RSeq") == "" {
		t.Fatalf("no reliable 183: %q", first)
	}
	again := p.expect("SIP/2.0 183", 5*time.Second)
	if again == "" || hdr(again, "RSeq") != hdr(first, "RSeq") {
		t.Fatalf("the reliable 183 was not repeated with its RSeq: %q", again)
	}
	select {
	case err := <-answered:
		t.Fatalf("Answer returned before the PRACK: %v", err)
	default:
	}
	rseq, _ := strconv.Atoi(hdr(first, "RSeq"))
	toHdr := hdr(first, "To")
	prack := func(branch string, cseq int, rack string) string {
		m := "PRACK sip:2002@" + to.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK" + branch + "\r\n" +
			"From: <sip:2001@127.0.0.1>;tag=a1\r\nTo: " + toHdr + "\r\nCall-ID: prack-uas-1\r\nCSeq: " + strconv.Itoa(cseq) + " PRACK\r\n" +
			"Max-Forwards: 70\r\n"
		if rack != "" {
			m += "RAck: " + rack + "\r\n"
		}
		return m + "Content-Length: 0\r\n\r\n"
	}
	if got := p.request(to, prack("pr1", 11, strconv.Itoa(rseq+5)+" 10 INVITE"), 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 481") {
		t.Fatalf("PRACK of an unknown RSeq: %q, want 481", got)
	}
	if got := p.request(to, prack("pr2", 12, ""), 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 400") {
		t.Fatalf("PRACK without RAck: %q, want 400", got)
	}
	if got := p.request(to, prack("pr3", 13, strconv.Itoa(rseq)+" 10 INVITE"), 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("PRACK: %q, want 200", got)
	}
	ok := p.expect("SIP/2.0 200", 5*time.Second)
	if ok == "" || !strings.Contains(hdr(ok, "CSeq"), "INVITE") {
		t.Fatalf("no 200 to the INVITE after the PRACK: %q", ok)
	}
	if got := p.request(to, prack("pr4", 14, strconv.Itoa(rseq)+" 10 INVITE"), 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 481") {
		t.Fatalf("second PRACK of the same RSeq: %q, want 481", got)
	}
	p.send(to, "ACK sip:2002@"+to.String()+" SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKack1\r\n"+
		"From: <sip:2001@127.0.0.1>;tag=a1\r\nTo: "+toHdr+"\r\nCall-ID: prack-uas-1\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("Answer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Answer did not return after the ACK (with the INVITE's CSeq, below the PRACKs')")
	}
	if got := p.request(to, "BYE sip:2002@"+to.String()+" SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKbye1\r\n"+
		"From: <sip:2001@127.0.0.1>;tag=a1\r\nTo: "+toHdr+"\r\nCall-ID: prack-uas-1\r\nCSeq: 15 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("BYE: %q", got)
	}
}

// TestPRACKUACIgnoresRepeats: a strict provider repeats its reliable 183
// (same RSeq) before our PRACK is answered, then sends a reliable 180
// with the next RSeq, then one out of order: exactly one PRACK each for
// the first two and none for the third; the ACK carries the INVITE's
// CSeq and our BYE one above the PRACKs'.
func TestPRACKUACIgnoresRepeats(t *testing.T) {
	stack, _ := capturedStack(t)
	p := newPeer(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(),
		SDP: []byte(offer), PRACK: sip.PRACKRequired})
	if err != nil {
		t.Fatal(err)
	}
	inv := p.expect("INVITE ", 5*time.Second)
	if inv == "" || hdr(inv, "Require") != "100rel" {
		t.Fatalf("INVITE without Require: 100rel: %q", inv)
	}
	to := stack.LocalAddr()
	resp := func(status, rseq, body string) string {
		m := "SIP/2.0 " + status + "\r\nVia: " + hdr(inv, "Via") + "\r\nFrom: " + hdr(inv, "From") + "\r\n" +
			"To: " + hdr(inv, "To") + ";tag=uas1\r\nCall-ID: " + hdr(inv, "Call-ID") + "\r\nCSeq: " + hdr(inv, "CSeq") + "\r\n" +
			"Contact: <sip:2002@" + p.addr() + ">\r\n"
		if rseq != "" {
			m += "Require: 100rel\r\nRSeq: " + rseq + "\r\n"
		}
		if body != "" {
			return m + "Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		}
		return m + "Content-Length: 0\r\n\r\n"
	}
	p.send(to, resp("183 Session Progress", "7", answer))
	p.send(to, resp("183 Session Progress", "7", answer))
	pr := p.expect("PRACK ", 5*time.Second)
	wantRAck := "7 " + hdr(inv, "CSeq")
	if pr == "" || hdr(pr, "RAck") != wantRAck {
		t.Fatalf("PRACK %q, want RAck %q", pr, wantRAck)
	}
	answerPRACK := func(pr string) {
		p.send(to, "SIP/2.0 200 OK\r\nVia: "+hdr(pr, "Via")+"\r\nFrom: "+hdr(pr, "From")+"\r\nTo: "+hdr(pr, "To")+
			"\r\nCall-ID: "+hdr(pr, "Call-ID")+"\r\nCSeq: "+hdr(pr, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
	}
	answerPRACK(pr)
	p.send(to, resp("180 Ringing", "8", ""))
	pr2 := p.expect("PRACK ", 5*time.Second)
	if pr2 == "" || hdr(pr2, "RAck") != "8 "+hdr(inv, "CSeq") {
		t.Fatalf("second PRACK %q, want RAck 8 (the repeated 183 is not PRACKed)", pr2)
	}
	answerPRACK(pr2)
	if hdr(pr2, "CSeq") == hdr(pr, "CSeq") {
		t.Fatalf("both PRACKs have CSeq %s", hdr(pr, "CSeq"))
	}
	p.send(to, resp("180 Ringing", "10", "")) // out of order: 9 is missing
	p.send(to, resp("200 OK", "", answer))
	// Whatever order the stack reads these in, the next request is the
	// ACK: no PRACK for RSeq 10.
	ack := p.expect("", 5*time.Second)
	if strings.HasPrefix(ack, "PRACK ") {
		t.Fatalf("the out-of-order 180 was PRACKed: %q", ack)
	}
	if !strings.HasPrefix(ack, "ACK ") {
		t.Fatalf("want the ACK, got %q", ack)
	}
	if ack == "" || strings.Fields(hdr(ack, "CSeq"))[0] != strings.Fields(hdr(inv, "CSeq"))[0] {
		t.Fatalf("ACK %q does not carry the INVITE's CSeq %s", ack, hdr(inv, "CSeq"))
	}
	var kinds []string
	byeDone := make(chan error, 1)
	for e := range d.Events() {
		kinds = append(kinds, e.Kind.String())
		if e.Kind == sip.EventProgress && !bytes.Equal(e.SDP, []byte(answer)) {
			t.Errorf("early answer %q", e.SDP)
		}
		if e.Kind == sip.EventAnswered {
			go func() { byeDone <- d.Bye(context.Background()) }()
			bye := p.expect("BYE ", 5*time.Second)
			if bye == "" || cseqNum(t, bye) <= cseqNum(t, pr2) {
				t.Fatalf("BYE %q not above the PRACKs' CSeq", bye)
			}
			p.send(to, "SIP/2.0 200 OK\r\nVia: "+hdr(bye, "Via")+"\r\nFrom: "+hdr(bye, "From")+"\r\nTo: "+hdr(bye, "To")+
				"\r\nCall-ID: "+hdr(bye, "Call-ID")+"\r\nCSeq: "+hdr(bye, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
		}
	}
	if err := <-byeDone; err != nil {
		t.Fatalf("BYE: %v", err)
	}
	if got := strings.Join(kinds, ","); got != "progress,ringing,answered" {
		t.Errorf("events %s, want progress,ringing,answered (repeats not reported)", got)
	}
}

// TestInteropSIPpRequires100rel: SIPp as a provider that requires 100rel
// (reliable 183 with SDP, then a reliable 180) checks the RAck of each of
// our PRACKs; we report the early answer, the ringing and the answer, and
// our ACK carries the INVITE's CSeq.
func TestInteropSIPpRequires100rel(t *testing.T) {
	sipp := startSIPp(t, "-sf", "testdata/sipp/uas_requires_100rel.xml")
	stack, cp := capturedStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr,
		SDP: []byte(offer), PRACK: sip.PRACKSupported})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
	defer timeout.Stop()
	var kinds []string
	for e := range d.Events() {
		kinds = append(kinds, e.Kind.String())
		switch e.Kind {
		case sip.EventProgress:
			if !strings.Contains(string(e.SDP), "o=sipp") {
				t.Errorf("early answer %q", e.SDP)
			}
		case sip.EventAnswered:
			if err := d.Bye(context.Background()); err != nil {
				t.Fatalf("BYE: %v\n%s", err, sipp.Output.String())
			}
		case sip.EventFailed:
			t.Fatalf("call failed: %+v\n%s", e, sipp.Output.String())
		}
	}
	sipp.Wait(t)
	if got := strings.Join(kinds, ","); got != "progress,ringing,answered" {
		t.Errorf("events %s, want progress,ringing,answered", got)
	}
	inv, acks := cp.find(true, "INVITE "), cp.find(true, "ACK ")
	if len(inv) == 0 || len(acks) == 0 || cseqNum(t, acks[0]) != cseqNum(t, inv[0]) {
		t.Fatalf("ACK %q does not carry the INVITE's CSeq", acks)
	}
}

// TestInteropSIPpCallsWithRequire100rel: SIPp calls us with Require:
// 100rel; our 183 with SDP is reliable, SIPp PRACKs it (RAck from our
// RSeq), and only then does our 200 come; SIPp hangs up.
func TestInteropSIPpCallsWithRequire100rel(t *testing.T) {
	stack, cp := capturedStack(t)
	answered := make(chan error, 1)
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		if err := d.SetPRACK(sip.PRACKOff); err != nil {
			answered <- err
			return
		}
		_ = d.Progress([]byte(answer))
		answered <- d.Answer([]byte(answer))
		for range d.Events() {
		}
	}))
	sipp := startSIPp(t, "-sf", "testdata/sipp/uac_requires_100rel.xml", "-s", "2002", stack.LocalAddr().String())
	sipp.Wait(t)
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("Answer: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Answer did not return")
	}
	prov := cp.find(true, "SIP/2.0 183")
	if len(prov) == 0 || hdr(prov[0], "RSeq") == "" || hdr(prov[0], "Require") != "100rel" {
		t.Fatalf("183 not reliable: %q", prov)
	}
}

// TestInteropKamailioSIPpPRACK: a line registered at Kamailio is called by
// SIPp through Kamailio (record-routed) with Require: 100rel. Our reliable
// 183 goes back through the proxy, SIPp's PRACK follows the route set to
// us and is answered, and only then does our 200 go out; ACK and BYE come
// the same way.
func TestInteropKamailioSIPpPRACK(t *testing.T) {
	kam := startKamailio(t, "SHA-256", 3600)
	stack, cp := capturedStack(t)
	answered := make(chan error, 1)
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		if err := d.SetPRACK(sip.PRACKSupported); err != nil {
			answered <- err
			return
		}
		_ = d.Progress([]byte(answer))
		answered <- d.Answer([]byte(answer))
		for range d.Events() {
		}
	}))
	regs := stack.NewRegistrations(sip.RegistrationConfig{})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- regs.Run(ctx) }()
	defer func() { stop(); <-done }()
	regs.Add(sip.Account{ID: "l2", User: "2002", Password: "pw-2002", Registrar: kam.Addr})
	deadline := time.Now().Add(10 * time.Second)
	for st, _ := regs.Status("l2"); st.State != sip.RegRegistered; st, _ = regs.Status("l2") {
		if time.Now().After(deadline) {
			t.Fatalf("registration: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sipp := startSIPp(t, "-sf", "testdata/sipp/uac_requires_100rel.xml", "-s", "2002", kam.Addr)
	sipp.Wait(t)
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("Answer: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Answer did not return")
	}
	pracks := cp.find(false, "PRACK ")
	if len(pracks) != 1 {
		t.Fatalf("PRACKs that reached us: %q", pracks)
	}
	if n := strings.Count(pracks[0], "\r\nVia:"); n < 2 {
		t.Errorf("the PRACK did not come through Kamailio (%d Via headers)", n)
	}
}

// TestInteropSIPpRepeats200: SIPp answers our INVITE and sends the 200
// three times, each after our ACK of the one before, as a UAS does when
// the ACKs are lost (RFC 3261 §13.3.1.4); it requires an ACK for each.
// Without 100rel sipgo's session repeats its ACK; after a PRACK the ACK
// is ours and the stack repeats it. Either way the three ACKs are the
// same message (§13.2.2.4: the ACK is passed to the transport again, so
// same branch and the INVITE's CSeq number), and no more than three go
// out.
func TestInteropSIPpRepeats200(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scenario string
		prack    sip.PRACKMode
	}{
		{"plain", "testdata/sipp/uas_repeats_200.xml", sip.PRACKOff},
		{"100rel", "testdata/sipp/uas_repeats_200_100rel.xml", sip.PRACKSupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// -nr: SIPp would otherwise take our repeated ACK for a
			// repetition of the first and answer it with the 200 it sent
			// after that one, without end.
			sipp := startSIPp(t, "-nr", "-sf", tc.scenario)
			stack, cp := capturedStack(t)
			d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr,
				SDP: []byte(offer), PRACK: tc.prack})
			if err != nil {
				t.Fatal(err)
			}
			timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
			defer timeout.Stop()
			var kinds []string
			for e := range d.Events() {
				kinds = append(kinds, e.Kind.String())
				if e.Kind == sip.EventFailed {
					t.Fatalf("call failed: %+v\n%s", e, sipp.Output.String())
				}
			}
			sipp.Wait(t)
			if got, want := kinds[len(kinds)-2:], []string{"answered", "bye"}; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("events %v, want them to end with %v", kinds, want)
			}
			if n := len(cp.find(true, "PRACK ")); (tc.prack != sip.PRACKOff) != (n > 0) {
				t.Fatalf("%d PRACKs sent", n)
			}
			inv, acks := cp.find(true, "INVITE "), cp.find(true, "ACK ")
			if len(acks) != 3 {
				t.Fatalf("%d ACKs sent for three 200s, want 3: %q", len(acks), acks)
			}
			if cseqNum(t, acks[0]) != cseqNum(t, inv[0]) || !strings.HasSuffix(hdr(acks[0], "CSeq"), "ACK") {
				t.Errorf("ACK CSeq %q, INVITE's %q", hdr(acks[0], "CSeq"), hdr(inv[0], "CSeq"))
			}
			for i, a := range acks[1:] {
				if a != acks[0] {
					t.Errorf("ACK %d differs from the first:\n%s\n----\n%s", i+2, a, acks[0])
				}
			}
		})
	}
}

// TestPRACKUACRepeatsAck: after a PRACK the ACK of the 2xx is built by
// the stack; a strict provider repeats the 200 twice, as if our ACKs were
// lost (RFC 3261 §13.3.1.4), and each time gets the same ACK again
// (§13.2.2.4). A 200 naming another dialog (a different To tag: another
// fork, which gets its own ACK and a BYE, stray.go) or another CSeq does
// not get this dialog's ACK: the datagram after each such stray 200 (and
// the other fork's ACK and BYE) is the ACK of the repeated one, with the
// same bytes.
func TestPRACKUACRepeatsAck(t *testing.T) {
	stack, _ := capturedStack(t)
	p := newPeer(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(),
		SDP: []byte(offer), PRACK: sip.PRACKRequired})
	if err != nil {
		t.Fatal(err)
	}
	inv := p.expect("INVITE ", 5*time.Second)
	if inv == "" {
		t.Fatal("no INVITE")
	}
	to := stack.LocalAddr()
	resp := func(status, tag, cseq, rseq, body string) string {
		m := "SIP/2.0 " + status + "\r\nVia: " + hdr(inv, "Via") + "\r\nFrom: " + hdr(inv, "From") + "\r\n" +
			"To: " + hdr(inv, "To") + ";tag=" + tag + "\r\nCall-ID: " + hdr(inv, "Call-ID") + "\r\nCSeq: " + cseq + "\r\n" +
			"Contact: <sip:2002@" + p.addr() + ">\r\n"
		if rseq != "" {
			m += "Require: 100rel\r\nRSeq: " + rseq + "\r\n"
		}
		if body != "" {
			return m + "Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		}
		return m + "Content-Length: 0\r\n\r\n"
	}
	p.send(to, resp("183 Session Progress", "uas1", hdr(inv, "CSeq"), "1", answer))
	pr := p.expect("PRACK ", 5*time.Second)
	if pr == "" {
		t.Fatal("no PRACK")
	}
	p.send(to, "SIP/2.0 200 OK\r\nVia: "+hdr(pr, "Via")+"\r\nFrom: "+hdr(pr, "From")+"\r\nTo: "+hdr(pr, "To")+
		"\r\nCall-ID: "+hdr(pr, "Call-ID")+"\r\nCSeq: "+hdr(pr, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
	ok200 := resp("200 OK", "uas1", hdr(inv, "CSeq"), "", answer)
	p.send(to, ok200)
	first := p.expect("ACK ", 5*time.Second)
	if first == "" || cseqNum(t, first) != cseqNum(t, inv) {
		t.Fatalf("ACK %q, INVITE CSeq %s", first, hdr(inv, "CSeq"))
	}
	if e := next(t, d); e.Kind != sip.EventProgress {
		t.Fatalf("event %v, want progress", e.Kind)
	}
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("event %v, want answered", e.Kind)
	}
	otherCSeq := strconv.Itoa(cseqNum(t, inv)+7) + " INVITE"
	for i, stray := range []string{resp("200 OK", "uas2", hdr(inv, "CSeq"), "", answer), resp("200 OK", "uas1", otherCSeq, "", answer)} {
		p.send(to, stray)
		if i == 0 {
			if a := p.expect("", 5*time.Second); !strings.HasPrefix(a, "ACK ") || !strings.Contains(hdr(a, "To"), "tag=uas2") {
				t.Fatalf("after the other fork's 200, got %q, want its ACK", a)
			}
			b := p.expect("", 5*time.Second)
			if !strings.HasPrefix(b, "BYE ") || !strings.Contains(hdr(b, "To"), "tag=uas2") {
				t.Fatalf("after the other fork's ACK, got %q, want its BYE", b)
			}
			p.send(to, "SIP/2.0 200 OK\r\nVia: "+hdr(b, "Via")+"\r\nFrom: "+hdr(b, "From")+"\r\nTo: "+hdr(b, "To")+
				"\r\nCall-ID: "+hdr(b, "Call-ID")+"\r\nCSeq: "+hdr(b, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
		}
		p.send(to, ok200)
		again := p.expect("", 5*time.Second)
		if again != first {
			t.Fatalf("after stray 200 #%d and the repeated 200, got\n%s\nwant the first ACK again\n%s", i+1, again, first)
		}
	}
	byeDone := make(chan error, 1)
	go func() { byeDone <- d.Bye(context.Background()) }()
	bye := p.expect("BYE ", 5*time.Second)
	if bye == "" {
		t.Fatal("no BYE")
	}
	p.send(to, "SIP/2.0 200 OK\r\nVia: "+hdr(bye, "Via")+"\r\nFrom: "+hdr(bye, "From")+"\r\nTo: "+hdr(bye, "To")+
		"\r\nCall-ID: "+hdr(bye, "Call-ID")+"\r\nCSeq: "+hdr(bye, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
	if err := <-byeDone; err != nil {
		t.Fatalf("BYE: %v", err)
	}
}
