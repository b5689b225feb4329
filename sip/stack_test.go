package sip_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

// udpPeer is a raw UDP socket on loopback that sends SIP text.
type udpPeer struct {
	t    *testing.T
	conn net.PacketConn
}

func newPeer(t *testing.T) *udpPeer {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &udpPeer{t: t, conn: c}
}

func (p *udpPeer) addr() string { return p.conn.LocalAddr().String() }

// request sends msg (with {via} replaced by our address) and returns the
// status line of the answer, or "" if none comes within wait.
func (p *udpPeer) request(to net.Addr, msg string, wait time.Duration) string {
	msg = strings.ReplaceAll(msg, "{via}", p.addr())
	if _, err := p.conn.WriteTo([]byte(msg), to); err != nil {
		p.t.Fatal(err)
	}
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(wait))
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return ""
		}
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		if strings.HasPrefix(line, "SIP/2.0 1") {
			continue // provisional
		}
		return line
	}
}

func options(callID string) string {
	return "OPTIONS sip:mgsip@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK" + callID + "\r\n" +
		"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:mgsip@127.0.0.1>\r\nCall-ID: " + callID + "\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

func TestAccessControl(t *testing.T) {
	for _, drop := range []bool{false, true} {
		peer, stranger := newPeer(t), newPeer(t)
		allowed := netip.MustParseAddrPort(peer.addr())
		stack, err := sip.NewStack(sip.Config{DropUnknown: drop, Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}},
			sip.WithAccess(func(a netip.AddrPort) bool { return a == allowed }))
		if err != nil {
			t.Fatal(err)
		}
		stop := serve(t, stack)
		if got := peer.request(stack.LocalAddr(), options("acl-ok"), time.Second); got != "SIP/2.0 200 OK" {
			t.Errorf("configured peer: %q", got)
		}
		want := "SIP/2.0 403 Forbidden"
		wait := time.Second
		if drop {
			want, wait = "", 300*time.Millisecond
		}
		if got := stranger.request(stack.LocalAddr(), options("acl-no"), wait); got != want {
			t.Errorf("drop=%v stranger: %q, want %q", drop, got, want)
		}
		if stack.Refused() != 1 {
			t.Errorf("refused %d", stack.Refused())
		}
		stop()
	}
}

func serve(t *testing.T, stack *sip.Stack) func() {
	done := make(chan struct{})
	ctx, cancel := contextWithCancel()
	go func() { _ = stack.Serve(ctx); close(done) }()
	<-stack.Ready()
	return func() { cancel(); <-done }
}

var viaSentBy = regexp.MustCompile(`(?im)^((?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*[a-z]+[ \t]+)([^;\s]+)`)

// rfc4475 gives, for the torture messages that are requests a UAS acts
// on, the answer RFC 4475 asks for ("" = any final response; "none" = no
// answer, e.g. an ACK). Messages not listed are ones a parser must reject
// or that are responses: they must never be accepted with 2xx.
var rfc4475 = map[string]string{
	// valid (RFC 4475 §3.1.1)
	"dblreq": "", "esc01": "", "esc02": "", "escnull": "", "intmeth": "", "longreq": "",
	"lwsdisp": "", "mpart01": "", "semiuri": "", "transports": "", "wsinv": "",
	// well-formed requests in sipgo's invalid set that RFC 4475 says to process
	"badbranch": "SIP/2.0 200 OK", "zeromf": "SIP/2.0 200 OK",
	// semantically invalid (§3.3): the answers RFC 4475 names
	"unkscm": "SIP/2.0 416 Unsupported URI Scheme", "bext01": "SIP/2.0 420 Bad Extension",
	"mcl01": "SIP/2.0 400 Conflicting Content-Length",
}

var finalStatus = regexp.MustCompile(`^SIP/2\.0 [2-6]\d\d`)

// TestTortureMessages sends the RFC 4475 torture messages that sipgo ships
// to our listener (over TCP when their Via says so): the stack must survive
// all of them, answer the requests it acts on as RFC 4475 says, and never
// accept anything else.
func TestTortureMessages(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatalf("locating sipgo: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.dat"))
	if len(files) < 50 {
		t.Fatalf("found %d torture messages in %s", len(files), dir)
	}
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}, {Transport: "tcp", Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer serve(t, stack)()
	tcpAddr := stack.ListenerAddr(1)
	peer := newPeer(t)
	checked := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".dat")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if m := viaSentBy.FindStringSubmatch(string(b)); m != nil && strings.Contains(strings.ToUpper(m[1]), "TCP") {
			got = tcpRequest(t, tcpAddr, string(b))
		} else {
			// Answers go to the Via address: point it at our socket so
			// every packet stays on loopback; the rest is untouched.
			msg := viaSentBy.ReplaceAllString(string(b), "${1}"+peer.addr())
			// Several messages share the branch kdjuw; with the same
			// sent-by they would be one transaction.
			msg = strings.ReplaceAll(msg, "branch=z9hG4bK", "branch=z9hG4bK"+name+".")
			// Only an answer with the message's Call-ID counts: the
			// retransmitted final responses to earlier INVITEs (which
			// this peer never ACKs) keep arriving.
			got = statusLine(peer.answerTo(stack.LocalAddr(), msg, 100*time.Millisecond))
		}
		want, acted := rfc4475[name]
		isAck := strings.HasPrefix(string(b), "ACK ")
		switch {
		case acted && isAck && got != "":
			t.Errorf("%s: an ACK was answered: %q", name, got)
		case acted && !isAck && want == "" && !finalStatus.MatchString(got):
			t.Errorf("%s: got %q, want a final response", name, got)
		case acted && want != "" && got != want:
			t.Errorf("%s: got %q, want %q", name, got, want)
		case !acted && strings.HasPrefix(got, "SIP/2.0 2"):
			t.Errorf("%s: accepted: %q", name, got)
		}
		if acted {
			checked++
		}
	}
	// Still alive and serving.
	if got := peer.request(stack.LocalAddr(), options("after-torture"), time.Second); got != "SIP/2.0 200 OK" {
		t.Fatalf("after the torture messages OPTIONS got %q", got)
	}
	t.Logf("%d torture messages sent, %d requests checked against RFC 4475", len(files), checked)
}

// tcpRequest sends one message over a TCP connection and reads the first
// final status line.
func tcpRequest(t *testing.T, to net.Addr, msg string) string {
	c, err := net.DialTimeout("tcp", to.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return ""
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65535)
	var acc string
	for {
		n, err := c.Read(buf)
		acc += string(buf[:n])
		for _, line := range strings.Split(acc, "\r\n") {
			if finalStatus.MatchString(line) {
				return line
			}
		}
		if err != nil {
			return ""
		}
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// TestContactFollowsFirstListener: with a TCP listener first and a UDP
// one second, Contact carries the TCP listener's address.
func TestContactFollowsFirstListener(t *testing.T) {
	s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Transport: "tcp", Listen: "127.0.0.1:0"}, {Transport: "udp", Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tcp := s.ListenerAddr(1).String() // UDP sockets are numbered first
	c := s.ContactURI()
	if got := c.HostPort(); got != tcp {
		t.Fatalf("Contact %s, want the TCP listener %s (UDP is %s)", got, tcp, s.ListenerAddr(0))
	}
}
