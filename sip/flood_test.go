package sip_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// countHook counts log entries.
type countHook struct{ n atomic.Int64 }

func (h *countHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *countHook) Fire(*logrus.Entry) error {
	h.n.Add(1)
	return nil
}

// floodTarget is a stack under test whose configured peers are the given
// addresses: it answers calls to 2002 and refuses the rest with 486. Its
// logger is at debug level and counted.
type floodTarget struct {
	stack   *sip.Stack
	logs    *countHook
	dialogs sync.Map // user -> *atomic.Int64
}

func newFloodTarget(t *testing.T, cfg sip.Config, peers ...netip.AddrPort) *floodTarget {
	t.Helper()
	ft := &floodTarget{logs: &countHook{}}
	l := logrus.New()
	l.Out = discard{}
	l.SetLevel(logrus.DebugLevel)
	l.AddHook(ft.logs)
	cfg.Listeners = []sip.Listener{{Listen: "127.0.0.1:0"}}
	stack, err := sip.NewStack(cfg, sip.WithStackLogger(logrus.NewEntry(l)), sip.WithAccess(func(a netip.AddrPort) bool {
		for _, p := range peers {
			if p == a || (p.Port() == 0 && p.Addr() == a.Addr()) {
				return true
			}
		}
		return false
	}))
	if err != nil {
		t.Fatal(err)
	}
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		n, _ := ft.dialogs.LoadOrStore(d.RequestUser(), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if d.RequestUser() != "2002" {
			_ = d.Reject(486, "Busy Here")
			return
		}
		if err := d.Answer([]byte(answer)); err != nil {
			return
		}
		for range d.Events() {
		}
	}))
	ft.stack = stack
	t.Cleanup(serve(t, stack))
	return ft
}

func (ft *floodTarget) dialogsTo(user string) int64 {
	if n, ok := ft.dialogs.Load(user); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// flood sends n INVITEs (each a new transaction) to user at the target
// from c, paced to about perSecond, and returns the rate achieved.
func flood(t *testing.T, c net.PacketConn, to net.Addr, user string, n, perSecond int) float64 {
	t.Helper()
	start := time.Now()
	const batch = 100
	for i := 0; i < n; i++ {
		id := "flood-" + user + "-" + strconv.Itoa(i)
		msg := strings.ReplaceAll(request("INVITE", id, ""), "{via}", c.LocalAddr().String())
		msg = strings.Replace(msg, "sip:2001@", "sip:"+user+"@", 1)
		if _, err := c.WriteTo([]byte(msg), to); err != nil {
			t.Error(err)
			return 0
		}
		if i%batch == batch-1 {
			// Pace: where the i-th datagram is due.
			if d := time.Duration(float64(i+1) / float64(perSecond) * float64(time.Second)); time.Since(start) < d {
				time.Sleep(d - time.Since(start))
			}
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// drain counts the datagrams c receives (and how many are 503 with
// Retry-After) until stop is closed.
func drain(c net.PacketConn, stop <-chan struct{}) (total, busy *atomic.Int64, done <-chan struct{}) {
	total, busy = new(atomic.Int64), new(atomic.Int64)
	d := make(chan struct{})
	go func() {
		defer close(d)
		buf := make([]byte, 65535)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				continue
			}
			msg := string(buf[:n])
			if strings.HasPrefix(msg, "SIP/2.0 1") {
				continue
			}
			total.Add(1)
			if strings.HasPrefix(msg, "SIP/2.0 503 ") && header(msg, "Retry-After") != "" {
				busy.Add(1)
			}
		}
	}()
	return total, busy, d
}

// placeCall calls 2002 at the target from caller and returns the setup
// time (INVITE to ACK sent), hanging up afterwards.
func placeCall(t *testing.T, caller *sip.Stack, target net.Addr) time.Duration {
	t.Helper()
	start := time.Now()
	d, err := caller.Invite(context.Background(), sip.Call{From: sip.Account{User: "3000"}, To: "2002", Peer: target.String(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	for {
		e := next(t, d)
		if e.Kind == sip.EventAnswered {
			break
		}
		if e.Kind == sip.EventFailed {
			t.Fatalf("call failed: %+v", e)
		}
	}
	setup := time.Since(start)
	_ = d.Bye(context.Background())
	return setup
}

// goroutineWatch samples the goroutine count until stopped and reports
// the highest.
func goroutineWatch() (stop func() int) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() int { close(done); <-finished; return int(peak.Load()) }
}

// TestStrangerFlood: 20,000 INVITEs from a stranger in a few seconds cost
// no goroutine, no transaction and no per-datagram log line; with
// drop_unknown nothing goes back, without it a few 403s; a call from a
// configured peer is set up meanwhile in normal time.
func TestStrangerFlood(t *testing.T) {
	const n = 20000
	for _, drop := range []bool{true, false} {
		t.Run(fmt.Sprintf("drop_unknown=%v", drop), func(t *testing.T) {
			caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(serve(t, caller))
			ft := newFloodTarget(t, sip.Config{DropUnknown: drop}, netip.MustParseAddrPort(caller.LocalAddr().String()))
			stranger := newPeer(t)
			baseline := placeCall(t, caller, ft.stack.LocalAddr()) // warm up, and the normal time

			stopDrain := make(chan struct{})
			answers, _, drained := drain(stranger.conn, stopDrain)
			before := runtime.NumGoroutine()
			peak := goroutineWatch()
			logsBefore := ft.logs.n.Load()
			rate := make(chan float64, 1)
			go func() { rate <- flood(t, stranger.conn, ft.stack.LocalAddr(), "2001", n, 8000) }()
			// The call is placed once the flood is under way.
			for ft.stack.Stats().Refused < n/10 {
				time.Sleep(time.Millisecond)
			}
			setup := placeCall(t, caller, ft.stack.LocalAddr())
			sent := <-rate
			// Let what is in flight arrive.
			deadline := time.Now().Add(2 * time.Second)
			for ft.stack.Stats().Refused < n && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			highest := peak()
			close(stopDrain)
			<-drained
			st := ft.stack.Stats()
			logs := ft.logs.n.Load() - logsBefore
			t.Logf("%d INVITEs at %.0f/s: refused %d, dropped %d, limited %d; %d answers; goroutines %d before, %d at most; %d log lines; call setup %v during the flood (%v before)",
				n, sent, st.Refused, st.Dropped, st.Limited, answers.Load(), before, highest, logs, setup, baseline)
			if st.Refused < n*9/10 {
				t.Errorf("only %d of %d INVITEs seen", st.Refused, n)
			}
			// One action per message: a stranger's INVITE is forbidden or
			// dropped, never "limited" (that is a configured peer's 503).
			if st.Limited != 0 || st.Forbidden+st.StrangerDropped != st.Refused || uint64(answers.Load()) > st.Forbidden {
				t.Errorf("stranger flood counted as limited %d, forbidden %d + dropped %d vs refused %d (answers %d)",
					st.Limited, st.Forbidden, st.StrangerDropped, st.Refused, answers.Load())
			}
			if highest > before+40 {
				t.Errorf("goroutines grew from %d to %d", before, highest)
			}
			if logs > 30 {
				t.Errorf("%d log lines for %d datagrams", logs, n)
			}
			if ft.dialogsTo("2001") != 0 {
				t.Errorf("%d of the stranger's INVITEs reached the handler", ft.dialogsTo("2001"))
			}
			if drop && answers.Load() != 0 {
				t.Errorf("drop_unknown: %d answers went back to the stranger", answers.Load())
			}
			if max := int64(sip.DefaultStrangerRate*10 + 2*sip.DefaultStrangerRate); !drop && (answers.Load() == 0 || answers.Load() > max) {
				t.Errorf("%d 403s to the stranger, want 1..%d (stranger_rate)", answers.Load(), max)
			}
			if setup > time.Second && setup > 10*baseline {
				t.Errorf("call setup took %v during the flood (%v before)", setup, baseline)
			}
		})
	}
}

// TestLineFlood: a configured peer flooding one line with INVITEs gets 503
// with Retry-After beyond line_invite_rate; the flood reaches the handler
// a few times only, and a call from the same address to another line is
// set up meanwhile in normal time.
func TestLineFlood(t *testing.T) {
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, caller))
	flooder := newPeer(t)
	// Both on 127.0.0.1: one peer address, one peer_rate budget.
	ft := newFloodTarget(t, sip.Config{}, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0))
	baseline := placeCall(t, caller, ft.stack.LocalAddr())

	const n = 3000
	stopDrain := make(chan struct{})
	answers, busy, drained := drain(flooder.conn, stopDrain)
	start := time.Now()
	rate := make(chan float64, 1)
	go func() { rate <- flood(t, flooder.conn, ft.stack.LocalAddr(), "2001", n, 3000) }()
	for ft.stack.Stats().Limited < 100 {
		time.Sleep(time.Millisecond)
	}
	setup := placeCall(t, caller, ft.stack.LocalAddr())
	sent := <-rate
	elapsed := time.Since(start)
	deadline := time.Now().Add(2 * time.Second)
	for answers.Load() < n*9/10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopDrain)
	<-drained
	st := ft.stack.Stats()
	reached := ft.dialogsTo("2001")
	t.Logf("%d INVITEs to one line at %.0f/s: %d answers, %d of them 503; %d reached the handler; limited %d; call to another line set up in %v (%v before)",
		n, sent, answers.Load(), busy.Load(), reached, st.Limited, setup, baseline)
	if max := int64(2*sip.DefaultLineInviteRate) + int64(elapsed.Seconds()*sip.DefaultLineInviteRate) + 2; reached > max {
		t.Errorf("%d INVITEs reached the handler, want at most %d", reached, max)
	}
	if busy.Load() < n/2 {
		t.Errorf("only %d of %d INVITEs got 503 with Retry-After", busy.Load(), n)
	}
	if setup > time.Second && setup > 10*baseline {
		t.Errorf("call setup took %v during the flood (%v before)", setup, baseline)
	}
}

// TestPeerRateLimit: beyond peer_rate a configured peer's requests get 503
// with Retry-After; a stranger's 403s are limited by stranger_rate and the
// rest dropped; ACKs are never limited nor answered.
func TestPeerRateLimit(t *testing.T) {
	peer, stranger := newPeer(t), newPeer(t)
	stack, _ := newGatedStack(t, sip.Config{Limits: sip.Limits{PeerRate: 1, PeerBurst: 5, StrangerRate: 1, StrangerBurst: 3, RetryAfter: 7 * time.Second}}, peer.addr())
	statuses := map[string]int{}
	for i := 0; i < 10; i++ {
		got := peer.response(stack.LocalAddr(), options("rl-"+strconv.Itoa(i)), time.Second)
		statuses[statusLine(got)]++
		if strings.HasPrefix(got, "SIP/2.0 503 ") && header(got, "Retry-After") != "7" {
			t.Errorf("503 with Retry-After %q", header(got, "Retry-After"))
		}
	}
	if statuses["SIP/2.0 200 OK"] < 5 || statuses["SIP/2.0 200 OK"] > 6 || statuses["SIP/2.0 503 Service Unavailable"] < 4 {
		t.Errorf("answers %v, want 5 (or 6) 200 and the rest 503", statuses)
	}
	for i := 0; i < 5; i++ {
		if got := peer.response(stack.LocalAddr(), request("ACK", "rl-ack"+strconv.Itoa(i), ""), 50*time.Millisecond); got != "" {
			t.Errorf("an ACK over the limit was answered: %q", statusLine(got))
		}
	}
	forbidden := 0
	for i := 0; i < 10; i++ {
		if got := stranger.response(stack.LocalAddr(), options("rl-s"+strconv.Itoa(i)), 100*time.Millisecond); statusLine(got) == "SIP/2.0 403 Forbidden" {
			forbidden++
		}
	}
	if forbidden < 3 || forbidden > 4 {
		t.Errorf("%d 403s to the stranger, want 3 (or 4)", forbidden)
	}
	// The peer's requests over the limit are limited (503); the stranger's 10 are
	// forbidden (403, the first 3) or dropped past stranger_rate, never
	// counted as limited.
	if st := stack.Stats(); st.Limited != uint64(statuses["SIP/2.0 503 Service Unavailable"]) || st.Forbidden != uint64(forbidden) || st.StrangerDropped != uint64(10-forbidden) {
		t.Errorf("stats %+v", st)
	}
}

// TestStreamGate: over TCP a stranger's connection is closed at once and
// a peer's messages pass the same checks as datagrams.
func TestStreamGate(t *testing.T) {
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Transport: "tcp", Listen: "127.0.0.1:0"}}},
		sip.WithAccess(func(a netip.AddrPort) bool { return a.Addr() == netip.MustParseAddr("127.0.0.1") }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, stack))
	addr := stack.ListenerAddr(0)
	tcp := func(msg string) string {
		return tcpRequest(t, addr, strings.ReplaceAll(strings.ReplaceAll(msg, "SIP/2.0/UDP", "SIP/2.0/TCP"), "{via}", "127.0.0.1:5999"))
	}
	if got := tcp(options("tcp-ok")); got != "SIP/2.0 200 OK" {
		t.Errorf("OPTIONS over TCP: %q", got)
	}
	if got := tcp(strings.Replace(options("tcp-lc"), "OPTIONS sip:", "options sip:", 1)); got != "SIP/2.0 501 Not Implemented" {
		t.Errorf("lower-case options over TCP: %q", got)
	}
	if got := tcp("ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\nFrom: <sip:pbx@127.0.0.1>\r\nTo: <sip:2001@127.0.0.1>\r\n" +
		"Call-ID: tcp-ack\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"); got != "" {
		t.Errorf("branchless ACK over TCP answered: %q", got)
	}
	// Two messages in one segment, the second with a body.
	two := options("tcp-2a") + strings.Replace(options("tcp-2b"), "Content-Length: 0\r\n\r\n", "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 1)
	if got := tcp(two); got != "SIP/2.0 200 OK" {
		t.Errorf("two messages over TCP: %q", got)
	}

	strangerOnly, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Transport: "tcp", Listen: "127.0.0.1:0"}}},
		sip.WithAccess(func(netip.AddrPort) bool { return false }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, strangerOnly))
	c, err := net.Dial("tcp", strangerOnly.ListenerAddr(0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 100)); err == nil || n != 0 {
		t.Errorf("a stranger's connection was not closed: %d bytes, %v", n, err)
	}
	if got := strangerOnly.Stats().Refused; got != 1 {
		t.Errorf("refused %d", got)
	}
}

// TestStreamTap: the tap sees the messages of a peer's TCP connection,
// read and written, one call each.
func TestStreamTap(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Transport: "tcp", Listen: "127.0.0.1:0"}}},
		sip.WithAccess(func(a netip.AddrPort) bool { return a.Addr() == netip.MustParseAddr("127.0.0.1") }),
		sip.WithStreamTap(func(out bool, _, _ net.Addr, msg []byte) {
			first, _, _ := strings.Cut(string(msg), "\r\n")
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%v %s", out, first))
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, stack))
	msg := strings.ReplaceAll(strings.ReplaceAll(options("tap-1"), "SIP/2.0/UDP", "SIP/2.0/TCP"), "{via}", "127.0.0.1:5999")
	if got := tcpRequest(t, stack.ListenerAddr(0), msg); got != "SIP/2.0 200 OK" {
		t.Fatalf("OPTIONS over TCP: %q", got)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		got := strings.Join(seen, "|")
		mu.Unlock()
		if strings.Contains(got, "false OPTIONS sip:") && strings.Contains(got, "true SIP/2.0 200 OK") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tap saw %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
