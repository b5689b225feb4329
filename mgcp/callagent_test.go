package mgcp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// recorder wraps a PacketConn and notes when each datagram was sent.
type recorder struct {
	net.PacketConn
	mu    sync.Mutex
	sends []sent
}

type sent struct {
	at time.Time
	b  string
}

func (r *recorder) WriteTo(b []byte, to net.Addr) (int, error) {
	r.mu.Lock()
	r.sends = append(r.sends, sent{time.Now(), string(b)})
	r.mu.Unlock()
	return r.PacketConn.WriteTo(b, to)
}

func (r *recorder) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.sends...)
}

type env struct {
	t   *testing.T
	mn  *mgcptest.MemNet
	ca  *mgcp.CallAgent
	rec *recorder
	gw  *mgcptest.Gateway
}

// newEnv starts a CallAgent and a fake gateway on an in-memory network.
// It must run inside a synctest bubble.
func newEnv(t *testing.T, cfg mgcp.Config, gwcfg mgcptest.GatewayConfig, opts ...mgcp.Option) *env {
	mn := mgcptest.NewMemNet()
	rec := &recorder{PacketConn: mn.MustListen("127.0.0.1:2727")}
	ca := mgcp.New(rec, cfg, opts...)
	go func() { _ = ca.Serve(context.Background()) }()
	gwcfg.Conn = mn.MustListen("127.0.0.1:2427")
	gwcfg.CallAgent = "127.0.0.1:2727"
	gw, err := mgcptest.NewGateway(gwcfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, mn: mn, ca: ca, rec: rec, gw: gw}
	t.Cleanup(func() {
		_ = gw.Close()
		_ = ca.Close()
	})
	return e
}

func (e *env) close() {
	_ = e.gw.Close()
	_ = e.ca.Close()
}

var ep1 = mgcp.EndpointName{Local: "aaln/1", Domain: "gw.test"}

func rqnt() *mgcp.Command {
	return &mgcp.Command{Verb: mgcp.VerbRQNT, Endpoint: ep1, Parameters: mgcp.Parameters{
		RequestID: "1", RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hd"}, Actions: []mgcp.Action{{Code: "N"}}}}}}
}

// dropFirst returns a fault function that drops the first n datagrams.
func dropFirst(n int) func([]byte, net.Addr) mgcptest.Fault {
	var count atomic.Int32
	return func([]byte, net.Addr) mgcptest.Fault {
		return mgcptest.Fault{Drop: count.Add(1) <= int32(n)}
	}
}

func TestRetransmissionBackoffAndAtMostOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Faults: dropFirst(3)})
		start := time.Now()
		r, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
		if err != nil || r.Code != mgcp.CodeOK {
			t.Fatalf("Do: %v %v", r, err)
		}
		// Exponential backoff from the 200ms initial timer (RFC 3435
		// §3.5.3): sends at 0, 200, 600 and 1400ms; the fourth answer
		// gets through.
		var offsets []time.Duration
		for _, s := range e.rec.all() {
			offsets = append(offsets, s.at.Sub(start))
		}
		want := []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond, 1400 * time.Millisecond}
		if len(offsets) != len(want) {
			t.Fatalf("sends at %v, want %v", offsets, want)
		}
		for i := range want {
			if offsets[i] != want[i] {
				t.Fatalf("sends at %v, want %v", offsets, want)
			}
		}
		if n := len(e.gw.Commands()); n != 1 {
			t.Errorf("gateway executed the command %d times, want once", n)
		}
		if s := e.gw.Agent().Stats(); s.Duplicates != 3 {
			t.Errorf("gateway saw %d duplicates, want 3", s.Duplicates)
		}
		if s := e.ca.Stats(); s.Retransmissions != 3 || s.CommandsSent != 1 {
			t.Errorf("stats %+v", s)
		}
		e.close()
	})
}

func TestGiveUpMarksPeerDisconnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		states := make(chan mgcp.PeerState, 4)
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Faults: dropFirst(1 << 20)},
			mgcp.WithPeerStateFunc(func(_ netip.AddrPort, s mgcp.PeerState) { states <- s }))
		start := time.Now()
		_, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
		if !errors.Is(err, mgcp.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
		elapsed := time.Since(start)
		sends := e.rec.all()
		// Max2 = 7 retransmissions after the first send, capped at 4s
		// each, and never beyond T-max = 20s.
		if len(sends) != 8 || elapsed > 20*time.Second {
			t.Fatalf("%d sends in %v", len(sends), elapsed)
		}
		if gap := sends[7].at.Sub(sends[6].at); gap != 4*time.Second {
			t.Errorf("last gap %v, want the 4s cap", gap)
		}
		synctest.Wait()
		if s := <-states; s != mgcp.PeerDisconnected {
			t.Errorf("state %v", s)
		}
		info, _ := e.ca.Peer(netip.MustParseAddrPort("127.0.0.1:2427"))
		if info.State != mgcp.PeerDisconnected || info.Timeouts != 1 {
			t.Errorf("peer %+v", info)
		}
		e.close()
	})
}

func TestRTTEstimateShortensTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Respond: func(c *mgcp.Command) *mgcp.Response {
			time.Sleep(10 * time.Millisecond) // a gateway that answers in 10ms
			return nil
		}})
		for range 5 {
			if _, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt()); err != nil {
				t.Fatal(err)
			}
		}
		info, _ := e.ca.Peer(netip.MustParseAddrPort("127.0.0.1:2427"))
		if info.RTT != 10*time.Millisecond || info.RTO != 50*time.Millisecond {
			t.Errorf("RTT %v RTO %v, want 10ms and the 50ms floor", info.RTT, info.RTO)
		}
		e.close()
	})
}

// rawPeer is a hand-driven MGCP peer on the in-memory network.
type rawPeer struct {
	t    *testing.T
	conn *mgcptest.MemConn
	to   net.Addr
}

func (p *rawPeer) send(s string) {
	p.t.Helper()
	if _, err := p.conn.WriteTo([]byte(strings.ReplaceAll(s, "\n", "\r\n")), p.to); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next datagram or "" if none arrives within a second.
func (p *rawPeer) recv() string {
	_ = p.conn.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 4096)
	n, _, err := p.conn.ReadFrom(b)
	if err != nil {
		return ""
	}
	return string(b[:n])
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// newServed starts a CallAgent whose handler counts executions, and a raw
// peer to talk to it.
func newServed(t *testing.T, cfg mgcp.Config, h mgcp.HandlerFunc, opts ...mgcp.Option) (*mgcp.CallAgent, *rawPeer) {
	mn := mgcptest.NewMemNet()
	ca := mgcp.New(mn.MustListen("127.0.0.1:2727"), cfg, append(opts, mgcp.WithHandler(h))...)
	go func() { _ = ca.Serve(context.Background()) }()
	p := &rawPeer{t: t, conn: mn.MustListen("127.0.0.1:2427"), to: ca.LocalAddr()}
	t.Cleanup(func() { _ = ca.Close() })
	return ca, p
}

func countingHandler(n *atomic.Int32) mgcp.HandlerFunc {
	return func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
		n.Add(1)
		return mgcp.NewResponse(c, mgcp.CodeOK)
	}
}

const ntfy10 = "NTFY 10 aaln/1@gw MGCP 1.0\nX: 1\nO: L/hd\n"

func TestDuplicatesAnsweredFromCacheUntilTHist(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		ca, p := newServed(t, mgcp.Config{}, countingHandler(&n))
		p.send(ntfy10)
		first := p.recv()
		p.send(ntfy10)
		second := p.recv()
		if first == "" || first != second {
			t.Fatalf("answers %q and %q", first, second)
		}
		if n.Load() != 1 {
			t.Fatalf("executed %d times", n.Load())
		}
		// Past T-hist (30s) the transaction is forgotten: a command with
		// the same id is new.
		time.Sleep(31 * time.Second)
		p.send(ntfy10)
		if r := p.recv(); firstLine(r) != "200 10 OK" {
			t.Fatalf("after expiry: %q", r)
		}
		if n.Load() != 2 || ca.Stats().Duplicates != 1 {
			t.Fatalf("executed %d times, %d duplicates", n.Load(), ca.Stats().Duplicates)
		}
		_ = ca.Close()
	})
}

func TestResponseAckForgetsCachedResponse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		ca, p := newServed(t, mgcp.Config{}, countingHandler(&n))
		p.send(ntfy10)
		p.recv()
		p.send("NTFY 11 aaln/1@gw MGCP 1.0\nK: 9-10\nX: 1\nO: L/hu\n")
		p.recv()
		p.send(ntfy10) // confirmed through K:, so executed anew
		p.recv()
		if n.Load() != 3 {
			t.Fatalf("executed %d times, want 3", n.Load())
		}
		_ = ca.Close()
	})
}

func TestSlowHandlerGetsProvisionalAndFinalAck(t *testing.T) {
	for _, dropAck := range []bool{false, true} {
		t.Run(map[bool]string{false: "ack", true: "ack lost"}[dropAck], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var n atomic.Int32
				ca, p := newServed(t, mgcp.Config{}, func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
					n.Add(1)
					time.Sleep(time.Second)
					return mgcp.NewResponse(c, mgcp.CodeOK)
				})
				p.send(ntfy10)
				if r := p.recv(); firstLine(r) != "100 10 In progress" {
					t.Fatalf("want provisional, got %q", r)
				}
				p.send(ntfy10) // retransmission while executing: another 100
				if r := p.recv(); !strings.HasPrefix(r, "100 10") {
					t.Fatalf("want provisional for duplicate, got %q", r)
				}
				final := p.recv()
				if firstLine(final) != "200 10 OK" || !strings.Contains(final, "\r\nK:\r\n") {
					t.Fatalf("final %q must carry an empty K:", final)
				}
				if dropAck {
					// Without "000" the final response is repeated.
					if again := p.recv(); again != final {
						t.Fatalf("repeat %q", again)
					}
				}
				p.send("000 10\n")
				if r := p.recv(); r != "" {
					t.Fatalf("after 000 got %q", r)
				}
				if n.Load() != 1 {
					t.Fatalf("executed %d times", n.Load())
				}
				_ = ca.Close()
			})
		})
	}
}

func TestDoHandlesProvisionalThenFinalAndAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Respond: func(c *mgcp.Command) *mgcp.Response {
			time.Sleep(3 * time.Second) // the gateway sends 100 after 200ms
			return nil
		}})
		r, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
		if err != nil || r.Code != mgcp.CodeOK {
			t.Fatalf("%v %v", r, err)
		}
		synctest.Wait()
		var acks int
		for _, s := range e.rec.all() {
			if strings.HasPrefix(s.b, "000 ") {
				acks++
			}
		}
		// One "000" for the final response that asked for it, and no
		// retransmission of the command after the provisional response.
		if acks != 1 || e.ca.Stats().Retransmissions != 0 || e.ca.Stats().AcksSent != 1 {
			t.Fatalf("acks %d stats %+v", acks, e.ca.Stats())
		}
		e.close()
	})
}

func TestResponseAckPiggybackedOnNextCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{})
		first := rqnt()
		first.TransactionID = 500
		if _, err := e.ca.Do(context.Background(), "127.0.0.1:2427", first); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt()); err != nil {
			t.Fatal(err)
		}
		cmds := e.gw.Commands()
		if len(cmds) != 2 || len(cmds[1].ResponseAck) != 1 || cmds[1].ResponseAck[0] != (mgcp.AckRange{From: 500, To: 500}) {
			t.Fatalf("second command K: %v", cmds[1].ResponseAck)
		}
		if first.ResponseAck != nil || first.TransactionID != 500 {
			t.Error("Do modified the caller's command")
		}
		e.close()
	})
}

func TestReorderedAndDuplicatedResponses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The gateway is slow (so it sends 100), its 100s are held back
		// and overtaken by the final 200, which is duplicated.
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{
			Respond: func(*mgcp.Command) *mgcp.Response { time.Sleep(time.Second); return nil },
			Faults: func(b []byte, _ net.Addr) mgcptest.Fault {
				if strings.HasPrefix(string(b), "100 ") {
					return mgcptest.Fault{Hold: true}
				}
				return mgcptest.Fault{Duplicate: true}
			},
		})
		r, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
		if err != nil || r.Code != mgcp.CodeOK {
			t.Fatalf("%v %v", r, err)
		}
		synctest.Wait()
		if s := e.ca.Stats(); s.LateResponses < 2 {
			t.Errorf("late responses %d: the duplicate 200 and the late 100 must be absorbed", s.LateResponses)
		}
		e.close()
	})
}

func TestProtocolErrorsGetTheRightCode(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown verb", "MESG 20 aaln/1@gw MGCP 1.0\n", "504 20"},
		{"critical extension", "NTFY 21 aaln/1@gw MGCP 1.0\nX+Critical: 1\nO: L/hd\n", "511 21"},
		{"unknown parameter", "NTFY 22 aaln/1@gw MGCP 1.0\nQQ: 1\n", "539 22"},
		{"vendor extension ignored", "NTFY 23 aaln/1@gw MGCP 1.0\nX-Vendor: 1\nX: 1\nO: L/hd\n", "200 23"},
		{"malformed parameter", "NTFY 24 aaln/1@gw MGCP 1.0\nO: L/hd(\n", "510 24"},
		{"bad version", "NTFY 25 aaln/1@gw MGCP 9.9\n", "528 25"},
		{"bad LCO", "CRCX 26 aaln/1@gw MGCP 1.0\nL: e:sometimes\n", "532 26"},
		{"handler panics", "NTFY 27 aaln/1@gw MGCP 1.0\nX: dead\n", "400 27"},
		{"garbage has no answer", "hello there\n", ""},
	}
	synctest.Test(t, func(t *testing.T) {
		ca, p := newServed(t, mgcp.Config{}, func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			if c.RequestID == "dead" {
				panic("bug in handler")
			}
			return mgcp.NewResponse(c, mgcp.CodeOK)
		})
		for _, tt := range tests {
			p.send(tt.in)
			got := p.recv()
			if tt.want == "" {
				if got != "" {
					t.Errorf("%s: answered %q", tt.name, got)
				}
				continue
			}
			if !strings.HasPrefix(got, tt.want+" ") {
				t.Errorf("%s: got %q, want %s", tt.name, firstLine(got), tt.want)
			}
		}
		// The call agent still works after all that.
		p.send(ntfy10)
		if r := p.recv(); firstLine(r) != "200 10 OK" {
			t.Errorf("after errors: %q", r)
		}
		_ = ca.Close()
	})
}

func TestAuthorizerAndOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		ca, p := newServed(t, mgcp.Config{MaxInFlight: 1}, func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			<-release
			return mgcp.NewResponse(c, mgcp.CodeOK)
		}, mgcp.WithAuthorizer(func(a netip.AddrPort) bool { return a.Port() == 2427 }))
		p.send(ntfy10)
		if r := p.recv(); !strings.HasPrefix(r, "100 10") {
			t.Fatalf("got %q", r)
		}
		p.send("NTFY 11 aaln/1@gw MGCP 1.0\nX: 1\nO: L/hu\n")
		if r := p.recv(); firstLine(r) != "409 11 Overload" {
			t.Fatalf("second command while one runs: %q", r)
		}
		close(release)
		// A stranger gets nothing.
		mn := p.conn
		_ = mn
		stranger := &rawPeer{t: t, to: p.to}
		stranger.conn = mustListen(t, p)
		stranger.send("NTFY 12 aaln/1@gw MGCP 1.0\nX: 1\nO: L/hd\n")
		if r := stranger.recv(); r != "" {
			t.Fatalf("stranger answered %q", r)
		}
		if ca.Stats().Refused != 1 {
			t.Errorf("refused %d", ca.Stats().Refused)
		}
		_ = ca.Close()
	})
}

// mustListen opens another socket on the same in-memory network as p.
func mustListen(t *testing.T, p *rawPeer) *mgcptest.MemConn {
	t.Helper()
	c, err := p.conn.Network().Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type flipResolver struct {
	calls atomic.Int32
	addrs []netip.Addr
}

func (f *flipResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	i := min(int(f.calls.Add(1))-1, len(f.addrs)-1)
	return []netip.Addr{f.addrs[i]}, nil
}

func TestReResolveAfterMax1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The name first points at an address where nobody listens; the
		// second lookup (after Max1 retransmissions, RFC 3435 §4.3) finds
		// the gateway.
		res := &flipResolver{addrs: []netip.Addr{netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("127.0.0.1")}}
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{}, mgcp.WithResolver(res))
		r, err := e.ca.Do(context.Background(), "gw.test:2427", rqnt())
		if err != nil || r.Code != mgcp.CodeOK {
			t.Fatalf("%v %v", r, err)
		}
		if res.calls.Load() != 2 || e.ca.Stats().Retransmissions != 5 {
			t.Errorf("lookups %d retransmissions %d", res.calls.Load(), e.ca.Stats().Retransmissions)
		}
		e.close()
	})
}

func TestCloseFailsOutstandingTransactions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Faults: dropFirst(1 << 20)})
		errc := make(chan error)
		go func() {
			_, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
			errc <- err
		}()
		time.Sleep(time.Second)
		if err := e.ca.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, mgcp.ErrClosed) {
			t.Fatalf("got %v", err)
		}
		_ = e.ca.Close() // idempotent
		if _, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt()); !errors.Is(err, mgcp.ErrClosed) {
			t.Fatalf("Do after Close: %v", err)
		}
		e.close()
	})
}

func TestContextCancelStopsDo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Faults: dropFirst(1 << 20)})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if _, err := e.ca.Do(ctx, "127.0.0.1:2427", rqnt()); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
		e.close()
	})
}

func TestPeerRejectingResponseAckGetsNoMore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Like osmo-mgw: any command carrying K: is refused with 539.
		e := newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Respond: func(c *mgcp.Command) *mgcp.Response {
			if c.ResponseAck != nil {
				return mgcp.NewResponse(c, mgcp.CodeInvalidParameter)
			}
			return nil
		}})
		for i := range 3 {
			r, err := e.ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
			if err != nil || r.Code != mgcp.CodeOK {
				t.Fatalf("command %d: %v %v", i, r, err)
			}
		}
		var withK int
		for _, c := range e.gw.Commands() {
			if c.ResponseAck != nil {
				withK++
			}
		}
		// The second command carried K: once, was refused and re-sent
		// without it; the third never tried.
		if withK != 1 || len(e.gw.Commands()) != 4 {
			t.Fatalf("%d commands, %d with K:", len(e.gw.Commands()), withK)
		}
		e.close()
	})
}

func TestGatewayDisconnectedProcedureReachesCallAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The call agent's answers are lost for the first 40 seconds.
		var cut atomic.Bool
		cut.Store(true)
		mn := mgcptest.NewMemNet()
		caConn := mgcptest.NewFaultConn(mn.MustListen("127.0.0.1:2727"), func([]byte, net.Addr) mgcptest.Fault {
			return mgcptest.Fault{Drop: cut.Load()}
		})
		rsips := make(chan *mgcp.Command, 64)
		ca := mgcp.New(caConn, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			if c.Verb == mgcp.VerbRSIP {
				rsips <- c
			}
			return mgcp.NewResponse(c, mgcp.CodeOK)
		})))
		go func() { _ = ca.Serve(context.Background()) }()
		gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: mn.MustListen("127.0.0.1:2427"), CallAgent: "127.0.0.1:2727"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gw.OffHook(context.Background(), "aaln/1"); !errors.Is(err, mgcp.ErrTimeout) {
			t.Fatalf("NTFY while cut off: %v", err)
		}
		if !gw.Disconnected() {
			t.Fatal("gateway did not enter the disconnected state")
		}
		time.Sleep(40 * time.Second)
		cut.Store(false)
		// Within the doubled waiting delays an RSIP "disconnected" gets an
		// answer through and the gateway leaves the state.
		deadline := time.Now().Add(20 * time.Minute)
		for gw.Disconnected() && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		}
		if gw.Disconnected() {
			t.Fatal("gateway still disconnected 20 minutes after the link came back")
		}
		if len(rsips) == 0 {
			t.Fatal("the call agent saw no RSIP")
		}
		for len(rsips) > 0 {
			if c := <-rsips; c.RestartMethod != mgcp.RestartDisconnected || c.Endpoint.Local != "*" {
				t.Errorf("RSIP %s RM %s", c.Endpoint, c.RestartMethod)
			}
		}
		_ = gw.Close()
		_ = ca.Close()
	})
}

func TestMemoryCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		ca, p := newServed(t, mgcp.Config{MaxCachedPerPeer: 4, MaxPeers: 1}, countingHandler(&n))
		for i := 1; i <= 10; i++ {
			p.send(fmt.Sprintf("NTFY %d aaln/1@gw MGCP 1.0\nX: 1\nO: L/hd\n", 100+i))
			p.recv()
		}
		info, _ := ca.Peer(netip.MustParseAddrPort("127.0.0.1:2427"))
		if info.CachedResponses > 4 {
			t.Errorf("%d cached responses, cap 4", info.CachedResponses)
		}
		// A second peer does not fit the table: it is not served.
		other := &rawPeer{t: t, to: p.to, conn: mustListen(t, p)}
		other.send(ntfy10)
		if r := other.recv(); r != "" {
			t.Errorf("peer beyond the cap answered %q", r)
		}
		if ca.Stats().Overloaded != 1 || n.Load() != 10 {
			t.Errorf("overloaded %d, executed %d", ca.Stats().Overloaded, n.Load())
		}
		_ = ca.Close()
	})
}

func TestAuthorizerDropsForeignResponses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mgcptest.NewMemNet()
		ca := mgcp.New(mn.MustListen("127.0.0.1:2727"), mgcp.Config{},
			mgcp.WithAuthorizer(func(a netip.AddrPort) bool { return a.Port() == 2427 }))
		go func() { _ = ca.Serve(context.Background()) }()
		gwConn := mn.MustListen("127.0.0.1:2427") // silent gateway
		spoofer := mn.MustListen("127.0.0.1:6666")
		errc := make(chan error, 1)
		go func() {
			c := rqnt()
			c.TransactionID = 4242
			_, err := ca.Do(context.Background(), "127.0.0.1:2427", c)
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		_, _ = spoofer.WriteTo([]byte("200 4242 OK\r\n"), ca.LocalAddr())
		if err := <-errc; !errors.Is(err, mgcp.ErrTimeout) {
			t.Fatalf("a spoofed response was accepted: %v", err)
		}
		if ca.Stats().Refused != 1 {
			t.Errorf("refused %d", ca.Stats().Refused)
		}
		_ = gwConn.Close()
		_ = spoofer.Close()
		_ = ca.Close()
	})
}

// TestResponsesMatchedPerPeer: a response from another known gateway that
// carries the transaction id of a command sent elsewhere is not taken as
// its answer (RFC 3435 §5: each gateway speaks for itself); the real
// gateway's answer, even from another port, is.
func TestResponsesMatchedPerPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mgcptest.NewMemNet()
		ca := mgcp.New(mn.MustListen("127.0.0.1:2727"), mgcp.Config{})
		go func() { _ = ca.Serve(context.Background()) }()
		gwConn := mn.MustListen("127.0.0.1:2427")
		gwOther := mn.MustListen("127.0.0.1:2428") // the same gateway, another socket
		other := mn.MustListen("127.0.0.2:2427")   // another gateway
		errc := make(chan error, 1)
		go func() {
			c := rqnt()
			c.TransactionID = 4343
			_, err := ca.Do(context.Background(), "127.0.0.1:2427", c)
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		_, _ = other.WriteTo([]byte("200 4343 OK\r\n"), ca.LocalAddr())
		time.Sleep(10 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("another gateway's answer was taken: %v", err)
		default:
		}
		_, _ = gwOther.WriteTo([]byte("200 4343 OK\r\n"), ca.LocalAddr())
		if err := <-errc; err != nil {
			t.Fatalf("the gateway's own answer: %v", err)
		}
		if ca.Stats().Refused != 1 {
			t.Errorf("refused %d", ca.Stats().Refused)
		}
		for _, c := range []net.PacketConn{gwConn, gwOther, other} {
			_ = c.Close()
		}
		_ = ca.Close()
	})
}

// TestPeerCountersSurviveForgetting: a peer forgotten while idle keeps
// its retransmission count (a Prometheus counter must never go back). The
// gateway refuses K: (539), so that no acknowledgement keeps it.
func TestPeerCountersSurviveForgetting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mgcptest.NewMemNet()
		ca := mgcp.New(mn.MustListen("127.0.0.1:2727"), mgcp.Config{THist: 100 * time.Millisecond})
		go func() { _ = ca.Serve(context.Background()) }()
		gw := mn.MustListen("127.0.0.1:2427")
		go func() { // answers the second copy of each command; 539 to K:
			buf := make([]byte, 2048)
			seen := map[string]int{}
			for {
				k, from, err := gw.ReadFrom(buf)
				if err != nil {
					return
				}
				msg := string(buf[:k])
				tx := strings.Fields(msg)[1]
				if strings.Contains(msg, "\nK:") {
					_, _ = gw.WriteTo([]byte("539 "+tx+" Unsupported parameter K\r\n"), from)
					continue
				}
				if seen[tx]++; seen[tx] == 2 {
					_, _ = gw.WriteTo([]byte("200 "+tx+" OK\r\n"), from)
				}
			}
		}()
		count := func() (uint64, int) {
			for _, p := range ca.Peers() {
				if p.Addr.String() == "127.0.0.1:2427" {
					return p.Retransmissions, len(ca.Peers())
				}
			}
			return 0, 0
		}
		for range 3 {
			if _, err := ca.Do(context.Background(), "127.0.0.1:2427", rqnt()); err != nil {
				t.Fatal(err)
			}
		}
		n, _ := count()
		if n < 3 {
			t.Fatalf("retransmissions %d", n)
		}
		time.Sleep(10 * time.Second) // idle far beyond 10 × THist: forgotten
		if m, _ := count(); m != n {
			t.Errorf("after the peer was idle: %d retransmissions, want %d", m, n)
		}
		_ = gw.Close()
		_ = ca.Close()
	})
}
