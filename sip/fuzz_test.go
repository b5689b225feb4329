package sip_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// memConn is a UDP listener socket in memory: datagrams are injected, and
// what the stack writes is recorded by destination address.
type memConn struct {
	local  net.Addr
	in     chan datagram
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	out     map[netip.Addr][]string
	written chan struct{} // signalled (without blocking) on every write
}

type datagram struct {
	b    []byte
	from net.Addr
}

func newMemConn(local net.Addr) *memConn {
	return &memConn{local: local, in: make(chan datagram), closed: make(chan struct{}),
		out: map[netip.Addr][]string{}, written: make(chan struct{}, 1)}
}

func (c *memConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(p, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *memConn) WriteTo(p []byte, to net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ap, err := netip.ParseAddrPort(to.String())
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.out[ap.Addr().Unmap()] = append(c.out[ap.Addr().Unmap()], string(p))
	c.mu.Unlock()
	select {
	case c.written <- struct{}{}:
	default:
	}
	return len(p), nil
}

// inject hands the stack a datagram; it fails if the stack does not take
// it within 2 s (its read loop is stuck) or is closed.
func (c *memConn) inject(b []byte, from netip.AddrPort) error {
	select {
	case c.in <- datagram{b: b, from: net.UDPAddrFromAddrPort(from)}:
		return nil
	case <-c.closed:
		return net.ErrClosed
	case <-time.After(2 * time.Second):
		return errors.New("the stack's read loop is stuck")
	}
}

// settle waits until nothing has been written for quiet (at most max).
func (c *memConn) settle(quiet, max time.Duration) {
	deadline := time.After(max)
	for {
		select {
		case <-c.written:
		case <-time.After(quiet):
			return
		case <-deadline:
			return
		}
	}
}

func (c *memConn) sentTo(a netip.Addr) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out[a]
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *memConn) LocalAddr() net.Addr              { return c.local }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// panicHook records log entries that report a panic.
type panicHook struct {
	mu     sync.Mutex
	panics []string
}

func (h *panicHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *panicHook) Fire(e *logrus.Entry) error {
	if strings.Contains(e.Message, "panic") {
		h.mu.Lock()
		h.panics = append(h.panics, e.Message)
		h.mu.Unlock()
	}
	return nil
}

// fuzzSeparator splits one fuzz input into up to four datagrams, each
// sent from its own configured-peer address, so that what the stack writes
// back can be told apart by destination (sipgo and the gate answer the
// source address).
var fuzzSeparator = []byte("\x00\x00")

// FuzzStack drives the whole stack (gate, sipgo's transport and
// transaction layers, the request handlers and a dialog handler) with
// mutated datagrams from configured peers: nothing panics, and nothing is
// ever sent back to the address an ACK came from.
func FuzzStack(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	var mem *memConn
	l := logrus.New()
	l.Out = discard{}
	hook := &panicHook{}
	l.AddHook(hook)
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}},
		// Limits off: every input should reach the handlers.
		Limits: sip.Limits{PeerRate: -1, LineInviteRate: -1, StrangerRate: -1}},
		sip.WithStackLogger(logrus.NewEntry(l)),
		sip.WithAccess(func(a netip.AddrPort) bool { return a.Addr().Is4() && a.Addr().As4()[0] == 127 }),
		sip.WithPacketConnWrapper(func(real net.PacketConn) net.PacketConn {
			mem = newMemConn(real.LocalAddr())
			_ = real.Close()
			return mem
		}))
	if err != nil {
		f.Fatal(err)
	}
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		// Refused calls only: an answered one would send BYEs to whatever
		// host the input's Contact names.
		_ = d.Ring()
		_ = d.Reject(486, "Busy Here")
	}))
	ctx, cancel := contextWithCancel()
	done := make(chan struct{})
	go func() { _ = stack.Serve(ctx); close(done) }()
	<-stack.Ready()
	f.Cleanup(func() { cancel(); <-done })
	var mu sync.Mutex
	next := uint32(1 << 16)
	acks := map[netip.Addr][]byte{}
	f.Fuzz(func(t *testing.T, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		for i, d := range bytes.SplitN(data, fuzzSeparator, 4) {
			next++
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(next >> 16), byte(next >> 8), byte(next)}), uint16(5060+i))
			if first, _, _ := bytes.Cut(bytes.TrimLeft(d, "\r\n"), []byte(" ")); strings.EqualFold(string(first), "ACK") {
				acks[from.Addr()] = d
			}
			if err := mem.inject(d, from); err != nil {
				t.Fatalf("%v (after the datagram before %q)", err, d)
			}
		}
		mem.settle(2*time.Millisecond, 50*time.Millisecond)
		for a, ack := range acks {
			if sent := mem.sentTo(a); len(sent) > 0 {
				t.Fatalf("answered an ACK:\n%q\nwith\n%q", ack, sent[0])
			}
		}
		hook.mu.Lock()
		defer hook.mu.Unlock()
		if len(hook.panics) > 0 {
			t.Fatalf("a handler panicked: %v", hook.panics)
		}
	})
}

// fuzzSeeds are requests of every method the stack serves, malformed
// ACKs, and sequences (INVITE then CANCEL, ACK or BYE).
func fuzzSeeds() []string {
	via := "127.0.0.1:5060"
	r := func(method, id, extra string) string {
		return strings.ReplaceAll(request(method, id, extra), "{via}", via)
	}
	sdp := "Content-Type: application/sdp\r\n"
	invite := strings.Replace(r("INVITE", "f1", sdp), "Content-Length: 0\r\n\r\n", "Content-Length: "+strconv.Itoa(len(offer))+"\r\n\r\n"+offer, 1)
	inDialog := func(method, extra string) string {
		return strings.Replace(r(method, "f2", extra), "To: <sip:2001@127.0.0.1>", "To: <sip:2001@127.0.0.1>;tag=abc", 1)
	}
	sep := string(fuzzSeparator)
	return []string{
		invite,
		r("OPTIONS", "f3", ""),
		inDialog("BYE", ""),
		inDialog("INFO", "Content-Type: application/dtmf-relay\r\n"),
		inDialog("UPDATE", ""),
		inDialog("REFER", "Refer-To: <sip:3000@127.0.0.1>\r\n"),
		r("NOTIFY", "f4", "Event: message-summary\r\nContent-Type: application/simple-message-summary\r\n"),
		r("CANCEL", "f5", ""),
		r("ACK", "f6", ""),
		strings.Replace(r("ACK", "f7", ""), ";branch=z9hG4bKf7", "", 1),
		strings.Replace(strings.Replace(r("ACK", "f15", ""), ";branch=z9hG4bKf15", "", 1), ";tag=1", "", 1),
		strings.Replace(r("ACK", "f16", ""), "Via: SIP/2.0/UDP "+via+";branch=z9hG4bKf16\r\n", "", 1),
		strings.Replace(r("ACK", "f17", ""), "CSeq: 1 ACK\r\n", "", 1),
		strings.Replace(r("ACK", "f8", ""), "CSeq: 1 ACK", "CSeq: 1 INVITE", 1),
		strings.Replace(r("ACK", "f9", ""), "ACK sip:", "ack sip:", 1),
		strings.Replace(r("INVITE", "f10", ""), "CSeq: 1 INVITE", "CSeq: 1 BYE", 1),
		strings.Replace(r("OPTIONS", "f11", ""), " SIP/2.0\r\n", " SIP/3.0\r\n", 1),
		strings.Replace(r("INVITE", "f12", ""), "INVITE sip:", "invite sip:", 1),
		r("INVITE", "f13", "Require: 100rel\r\n"),
		r("INVITE", "f14", "Session-Expires: 10\r\nMin-SE: 10\r\n"),
		invite + sep + r("CANCEL", "f1", ""),
		invite + sep + r("ACK", "f1", ""),
		invite + sep + strings.Replace(r("BYE", "f1", ""), "CSeq: 1 BYE", "CSeq: 2 BYE", 1),
	}
}
