package sip_test

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

// response sends msg (with {via} replaced by our address) and returns the
// first final response, whole, or "" if none comes within wait.
func (p *udpPeer) response(to net.Addr, msg string, wait time.Duration) string {
	msg = strings.ReplaceAll(msg, "{via}", p.addr())
	if _, err := p.conn.WriteTo([]byte(msg), to); err != nil {
		p.t.Fatal(err)
	}
	return p.next(wait)
}

// next returns the next final response received within wait, or "".
func (p *udpPeer) next(wait time.Duration) string {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(wait)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return ""
		}
		if strings.HasPrefix(string(buf[:n]), "SIP/2.0 1") {
			continue
		}
		return string(buf[:n])
	}
}

var callIDHeader = regexp.MustCompile(`(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)`)

// answerTo sends msg and returns the first final response carrying msg's
// Call-ID (any, if msg has none), or "".
func (p *udpPeer) answerTo(to net.Addr, msg string, wait time.Duration) string {
	var id string
	if m := callIDHeader.FindStringSubmatch(msg); m != nil {
		id = m[1]
	}
	deadline := time.Now().Add(wait)
	got := p.response(to, msg, wait)
	for got != "" && id != "" {
		if m := callIDHeader.FindStringSubmatch(got); m != nil && m[1] == id {
			break
		}
		got = p.next(time.Until(deadline))
	}
	return got
}

func statusLine(msg string) string {
	line, _, _ := strings.Cut(msg, "\r\n")
	return line
}

// header returns the value of the first header named name in msg.
func header(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// newGatedStack serves a stack on 127.0.0.1:0 whose configured peers are
// the given addresses, with a handler that counts the dialogs it sees and
// answers them as answerWith says.
func newGatedStack(t *testing.T, cfg sip.Config, peers ...string) (*sip.Stack, *atomic.Int64) {
	t.Helper()
	allowed := map[netip.AddrPort]bool{}
	for _, p := range peers {
		allowed[netip.MustParseAddrPort(p)] = true
	}
	if len(cfg.Listeners) == 0 {
		cfg.Listeners = []sip.Listener{{Listen: "127.0.0.1:0"}}
	}
	stack, err := sip.NewStack(cfg, sip.WithAccess(func(a netip.AddrPort) bool { return allowed[a] }))
	if err != nil {
		t.Fatal(err)
	}
	var dialogs atomic.Int64
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		dialogs.Add(1)
		_ = d.Reject(486, "Busy Here")
	}))
	t.Cleanup(serve(t, stack))
	return stack, &dialogs
}

func request(method, callID, extra string) string {
	return method + " sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK" + callID + "\r\n" +
		"From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: " + callID + "\r\nCSeq: 1 " + method + "\r\n" +
		"Contact: <sip:pbx@{via}>\r\nMax-Forwards: 70\r\n" + extra + "Content-Length: 0\r\n\r\n"
}

// TestAckNeverAnswered: however malformed, an ACK gets no answer, from a
// configured peer and from a stranger (RFC 3261 §17.2.1: ACK is never
// answered; a peer that ACKs our 400 would otherwise loop with us).
func TestAckNeverAnswered(t *testing.T) {
	peer, stranger := newPeer(t), newPeer(t)
	stack, _ := newGatedStack(t, sip.Config{}, peer.addr())
	acks := map[string]string{
		"branchless, no From tag": "ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\nFrom: <sip:pbx@127.0.0.1>\r\nTo: <sip:2001@127.0.0.1>\r\n" +
			"Call-ID: ack1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"no Via": "ACK sip:2001@127.0.0.1 SIP/2.0\r\nFrom: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <sip:2001@127.0.0.1>\r\n" +
			"Call-ID: ack2\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"no CSeq": "ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKack3\r\nFrom: <sip:pbx@127.0.0.1>;tag=1\r\n" +
			"To: <sip:2001@127.0.0.1>\r\nCall-ID: ack3\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"CSeq method INVITE": strings.Replace(request("ACK", "ack4", ""), "CSeq: 1 ACK", "CSeq: 1 INVITE", 1),
		"lower case":         strings.Replace(request("ACK", "ack5", ""), "ACK sip:", "ack sip:", 1),
		"SIP/3.0":            strings.Replace(request("ACK", "ack6", ""), " SIP/2.0\r\n", " SIP/3.0\r\n", 1),
		"Require":            request("ACK", "ack7", "Require: foo\r\n"),
		"unknown scheme":     strings.Replace(request("ACK", "ack8", ""), "ACK sip:2001@127.0.0.1", "ACK http://x", 1),
		"well formed":        request("ACK", "ack9", ""),
	}
	for name, msg := range acks {
		for who, p := range map[string]*udpPeer{"peer": peer, "stranger": stranger} {
			if got := p.response(stack.LocalAddr(), msg, 150*time.Millisecond); got != "" {
				t.Errorf("%s from a %s answered: %q", name, who, statusLine(got))
			}
		}
	}
	if got := peer.request(stack.LocalAddr(), options("ack-alive"), time.Second); got != "SIP/2.0 200 OK" {
		t.Fatalf("after the ACKs OPTIONS got %q", got)
	}
}

// TestRequestDispositions: the answers RFC 3261 and RFC 4475 name for
// requests a UAS must refuse, and the refused ones are not acted on.
func TestRequestDispositions(t *testing.T) {
	peer := newPeer(t)
	stack, dialogs := newGatedStack(t, sip.Config{}, peer.addr())
	for _, c := range []struct {
		name, msg, want string
		allow           bool // the answer carries Allow
	}{
		{"CSeq method mismatch (RFC 4475 §3.4.1)", strings.Replace(request("INVITE", "d1", ""), "CSeq: 1 INVITE", "CSeq: 1 BYE", 1), "SIP/2.0 400 ", false},
		{"CANCEL of nothing (RFC 3261 §9.2)", request("CANCEL", "d2", ""), "SIP/2.0 481 ", false},
		{"SIP/3.0 (RFC 3261 §8.2.2)", strings.Replace(request("OPTIONS", "d3", ""), " SIP/2.0\r\n", " SIP/3.0\r\n", 1), "SIP/2.0 505 ", false},
		{"lower-case invite (RFC 3261 §8.2.1)", strings.Replace(strings.Replace(request("INVITE", "d4", ""), "INVITE sip:", "invite sip:", 1), "CSeq: 1 INVITE", "CSeq: 1 invite", 1), "SIP/2.0 501 ", true},
		{"lower-case options", strings.Replace(options("d5"), "OPTIONS sip:", "options sip:", 1), "SIP/2.0 501 ", true},
		{"unknown method", request("FOO", "d6", ""), "SIP/2.0 405 ", true},
	} {
		got := peer.response(stack.LocalAddr(), c.msg, time.Second)
		if !strings.HasPrefix(statusLine(got), c.want) {
			t.Errorf("%s: got %q, want %q", c.name, statusLine(got), c.want)
		}
		if a := header(got, "Allow"); c.allow && !strings.Contains(a, "INVITE") {
			t.Errorf("%s: Allow %q", c.name, a)
		}
	}
	// A CANCEL with the CSeq of another method is refused the same way.
	got := peer.response(stack.LocalAddr(), strings.Replace(request("CANCEL", "d7", ""), "CSeq: 1 CANCEL", "CSeq: 1 INVITE", 1), time.Second)
	if !strings.HasPrefix(statusLine(got), "SIP/2.0 400 ") {
		t.Errorf("CANCEL with CSeq INVITE: %q", statusLine(got))
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d refused INVITEs reached the handler", n)
	}
	// A well-formed INVITE still does.
	if got := peer.response(stack.LocalAddr(), request("INVITE", "d8", ""), time.Second); !strings.HasPrefix(statusLine(got), "SIP/2.0 486 ") || dialogs.Load() != 1 {
		t.Errorf("a good INVITE: %q, %d dialogs", statusLine(got), dialogs.Load())
	}
}
