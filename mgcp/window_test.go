package mgcp_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// boundedConn models a gateway's receive buffer in front of its command
// processor: at most capacity commands may be waiting or executing; a new
// command (a transaction id not already held) arriving beyond that is
// lost, as a datagram is when a socket buffer overflows. Retransmissions
// of held commands pass (the transaction layer answers them).
type boundedConn struct {
	net.PacketConn
	capacity int

	mu      sync.Mutex
	held    map[uint32]bool
	dropped int
	peak    int
}

func newBoundedConn(c net.PacketConn, capacity int) *boundedConn {
	return &boundedConn{PacketConn: c, capacity: capacity, held: map[uint32]bool{}}
}

func (b *boundedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := b.PacketConn.ReadFrom(p)
		if err != nil {
			return n, from, err
		}
		m, perr := mgcp.Parse(p[:n])
		cmd, ok := m.(*mgcp.Command)
		if perr != nil || !ok {
			return n, from, err
		}
		b.mu.Lock()
		drop := !b.held[cmd.TransactionID] && len(b.held) >= b.capacity
		if drop {
			b.dropped++
		} else {
			b.held[cmd.TransactionID] = true
			b.peak = max(b.peak, len(b.held))
		}
		b.mu.Unlock()
		if !drop {
			return n, from, nil
		}
	}
}

func (b *boundedConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if m, err := mgcp.Parse(p); err == nil {
		if r, ok := m.(*mgcp.Response); ok && r.Code.IsFinal() {
			b.mu.Lock()
			delete(b.held, r.TransactionID)
			b.mu.Unlock()
		}
	}
	return b.PacketConn.WriteTo(p, to)
}

func (b *boundedConn) stats() (dropped, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped, b.peak
}

// serial returns a Respond hook that executes one command at a time, each
// taking d (a gateway's single control processor), and counts how many
// were executing or waiting to execute at once.
func serial(d time.Duration) (respond func(*mgcp.Command) *mgcp.Response, peak func() int) {
	// A channel, not a mutex: goroutines blocked on a channel let the
	// synctest clock advance.
	cpu := make(chan struct{}, 1)
	var waiting, most atomic.Int32
	return func(*mgcp.Command) *mgcp.Response {
			n := waiting.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			cpu <- struct{}{}
			time.Sleep(d)
			<-cpu
			waiting.Add(-1)
			return nil
		}, func() int {
			return int(most.Load())
		}
}

// windowEnv is a CallAgent and a gateway over MemNet; gwConn wraps the
// gateway's socket.
func windowEnv(t *testing.T, cfg mgcp.Config, gwcfg mgcptest.GatewayConfig, gwConn func(net.PacketConn) net.PacketConn) (*mgcp.CallAgent, *mgcptest.Gateway) {
	mn := mgcptest.NewMemNet()
	ca := mgcp.New(mn.MustListen("127.0.0.1:2727"), cfg)
	go func() { _ = ca.Serve(context.Background()) }()
	var c net.PacketConn = mn.MustListen("127.0.0.1:2427")
	if gwConn != nil {
		c = gwConn(c)
	}
	gwcfg.Conn = c
	gwcfg.CallAgent = "127.0.0.1:2727"
	gwcfg.NoRecord = true
	gw, err := mgcptest.NewGateway(gwcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = gw.Close()
		_ = ca.Close()
	})
	return ca, gw
}

// burst sends n commands at once and returns how many failed and the
// first error.
func burst(ca *mgcp.CallAgent, n int) (failed int, first error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := ca.Do(context.Background(), "127.0.0.1:2427", rqnt())
			if err == nil && r.Code != mgcp.CodeOK {
				err = errors.New(r.Code.String())
			}
			if err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed, first
}

const gwAddr = "127.0.0.1:2427"

func peerOf(t *testing.T, ca *mgcp.CallAgent) mgcp.PeerInfo {
	t.Helper()
	for _, p := range ca.Peers() {
		if p.Addr.String() == gwAddr {
			return p
		}
	}
	t.Fatal("gateway not among the peers")
	return mgcp.PeerInfo{}
}

func TestWindowCapsOutstandingCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		respond, peak := serial(time.Millisecond)
		ca, _ := windowEnv(t, mgcp.Config{WindowInitial: 4, WindowMax: 4}, mgcptest.GatewayConfig{Respond: respond}, nil)
		if failed, err := burst(ca, 100); failed > 0 {
			t.Fatalf("%d of 100 commands failed: %v", failed, err)
		}
		if p := peak(); p != 4 {
			t.Errorf("at most %d commands at the gateway at once, want the window, 4", p)
		}
		st := ca.Stats()
		if st.WindowWaits != 96 {
			t.Errorf("%d commands waited for the window, want 96", st.WindowWaits)
		}
		if st.Retransmissions != 0 || st.WindowDecreases != 0 {
			t.Errorf("%d retransmissions, %d window cuts on a clean path", st.Retransmissions, st.WindowDecreases)
		}
		if p := peerOf(t, ca); p.Outstanding != 0 || p.Queued != 0 || p.Window != 4 {
			t.Errorf("after the burst: window %d, outstanding %d, queued %d; want 4, 0, 0", p.Window, p.Outstanding, p.Queued)
		}
	})
}

func TestWindowGrowsOnCleanAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, _ := windowEnv(t, mgcp.Config{WindowInitial: 2, WindowMax: 64}, mgcptest.GatewayConfig{}, nil)
		if w := peerOfOrInitial(ca); w != 2 {
			t.Fatalf("initial window %d, want 2", w)
		}
		// Slow start: one slot more per clean answer.
		for i := range 10 {
			if _, err := ca.Do(context.Background(), gwAddr, rqnt()); err != nil {
				t.Fatal(err)
			}
			if w := peerOf(t, ca).Window; w != 3+i {
				t.Fatalf("after %d clean answers the window is %d, want %d", i+1, w, 3+i)
			}
		}
		if failed, err := burst(ca, 500); failed > 0 {
			t.Fatalf("%d commands failed: %v", failed, err)
		}
		if w := peerOf(t, ca).Window; w != 64 {
			t.Errorf("window %d after 510 clean answers, want the maximum 64", w)
		}
	})
}

func peerOfOrInitial(ca *mgcp.CallAgent) int {
	for _, p := range ca.Peers() {
		if p.Addr.String() == gwAddr {
			return p.Window
		}
	}
	return ca.Config().WindowInitial
}

func TestWindowHalvesOnRetransmissionOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The first 8 datagrams the gateway sends (the answers to the
		// first 8 of a burst) are lost: one loss event, one cut.
		ca, _ := windowEnv(t, mgcp.Config{WindowInitial: 16, WindowMax: 16},
			mgcptest.GatewayConfig{Faults: dropFirst(8)}, nil)
		if failed, err := burst(ca, 16); failed > 0 {
			t.Fatalf("%d commands failed: %v", failed, err)
		}
		st := ca.Stats()
		if st.Retransmissions < 8 {
			t.Fatalf("%d retransmissions, want at least 8", st.Retransmissions)
		}
		if st.WindowDecreases != 1 {
			t.Errorf("window cut %d times for one burst of losses, want once", st.WindowDecreases)
		}
		if w := peerOf(t, ca).Window; w < 8 || w > 9 {
			// Halved to 8, then congestion avoidance: +1/8 per clean answer.
			t.Errorf("window %d after one loss event from 16, want 8 (or 9)", w)
		}
	})
}

func TestWindowCollapsesOnTimeoutAndOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, gw := windowEnv(t, mgcp.Config{WindowInitial: 16, WindowMax: 64}, mgcptest.GatewayConfig{}, nil)
		gw.Inject(mgcptest.Injection{Verb: mgcp.VerbRQNT, Drop: true, Count: 1})
		if _, err := ca.Do(context.Background(), gwAddr, rqnt()); !errors.Is(err, mgcp.ErrTimeout) {
			t.Fatalf("dropped command: %v, want ErrTimeout", err)
		}
		if w := peerOf(t, ca).Window; w != 1 {
			t.Fatalf("window %d after a timeout, want the minimum 1", w)
		}
		// Slow start again up to half of where it was (8), then linear.
		for range 7 {
			if _, err := ca.Do(context.Background(), gwAddr, rqnt()); err != nil {
				t.Fatal(err)
			}
		}
		if w := peerOf(t, ca).Window; w != 8 {
			t.Fatalf("window %d after 7 clean answers from 1, want 8", w)
		}
		// A 409 (processing overload) halves it.
		gw.Inject(mgcptest.Injection{Verb: mgcp.VerbRQNT, Code: mgcp.CodeOverload, Count: 1})
		if r, err := ca.Do(context.Background(), gwAddr, rqnt()); err != nil || r.Code != mgcp.CodeOverload {
			t.Fatalf("overloaded command: %v %v", r, err)
		}
		if w := peerOf(t, ca).Window; w != 4 {
			t.Errorf("window %d after a 409 at 8, want 4", w)
		}
	})
}

func TestWindowQueueIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		respond := func(*mgcp.Command) *mgcp.Response { <-release; return nil }
		ca, _ := windowEnv(t, mgcp.Config{WindowInitial: 1, WindowMax: 1, WindowQueue: 2, ProvisionalAfter: time.Minute},
			mgcptest.GatewayConfig{Respond: respond, MGCP: mgcp.Config{ProvisionalAfter: time.Minute}}, nil)
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				_, err := ca.Do(context.Background(), gwAddr, rqnt())
				errs <- err
			}()
		}
		synctest.Wait()
		if p := peerOf(t, ca); p.Outstanding != 1 || p.Queued != 2 {
			t.Fatalf("outstanding %d, queued %d; want 1 and 2", p.Outstanding, p.Queued)
		}
		_, err := ca.Do(context.Background(), gwAddr, rqnt())
		if !errors.Is(err, mgcp.ErrQueueFull) {
			t.Fatalf("fourth command: %v, want ErrQueueFull", err)
		}
		if ca.Stats().QueueFull != 1 {
			t.Errorf("QueueFull %d, want 1", ca.Stats().QueueFull)
		}
		close(release)
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("queued command: %v", err)
			}
		}
		if p := peerOf(t, ca); p.Outstanding != 0 || p.Queued != 0 {
			t.Errorf("outstanding %d, queued %d at rest; want 0 and 0", p.Outstanding, p.Queued)
		}
	})
}

func TestWindowCancelledWaiterGivesItsTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hold atomic.Bool
		hold.Store(true)
		release := make(chan struct{})
		respond := func(*mgcp.Command) *mgcp.Response {
			if hold.Load() {
				<-release
			}
			return nil
		}
		ca, _ := windowEnv(t, mgcp.Config{WindowInitial: 1, WindowMax: 1, ProvisionalAfter: time.Minute},
			mgcptest.GatewayConfig{Respond: respond, MGCP: mgcp.Config{ProvisionalAfter: time.Minute}}, nil)
		first := make(chan error, 1)
		go func() { _, err := ca.Do(context.Background(), gwAddr, rqnt()); first <- err }()
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		second := make(chan error, 1)
		go func() { _, err := ca.Do(ctx, gwAddr, rqnt()); second <- err }()
		third := make(chan error, 1)
		go func() { _, err := ca.Do(context.Background(), gwAddr, rqnt()); third <- err }()
		synctest.Wait()
		if p := peerOf(t, ca); p.Queued != 2 {
			t.Fatalf("queued %d, want 2", p.Queued)
		}
		cancel()
		if err := <-second; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter: %v", err)
		}
		if p := peerOf(t, ca); p.Queued != 1 || p.Outstanding != 1 {
			t.Fatalf("after the cancel: queued %d, outstanding %d; want 1 and 1", p.Queued, p.Outstanding)
		}
		hold.Store(false)
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if err := <-third; err != nil {
			t.Fatal(err)
		}
		if p := peerOf(t, ca); p.Queued != 0 || p.Outstanding != 0 {
			t.Errorf("at rest: queued %d, outstanding %d", p.Queued, p.Outstanding)
		}
	})
}

// TestWindowUnderLoss: a gateway that executes one command per 5 ms and
// loses every command beyond 8 waiting (its receive buffer). A burst of
// 400 commands: with the window every one succeeds and the gateway sees
// few losses; without it (a window larger than the burst) most of the
// first wave is lost and retransmitted, and some give up.
func TestWindowUnderLoss(t *testing.T) {
	run := func(t *testing.T, cfg mgcp.Config) (st mgcp.Stats, failed, dropped, peak int) {
		synctest.Test(t, func(t *testing.T) {
			respond, _ := serial(5 * time.Millisecond)
			var bc *boundedConn
			ca, _ := windowEnv(t, cfg, mgcptest.GatewayConfig{Respond: respond},
				func(c net.PacketConn) net.PacketConn { bc = newBoundedConn(c, 8); return bc })
			failed, _ = burst(ca, 400)
			st = ca.Stats()
			dropped, peak = bc.stats()
		})
		return
	}
	var with, without mgcp.Stats
	var failedWith, failedWithout, droppedWith, droppedWithout int
	t.Run("window", func(t *testing.T) {
		var peak int
		with, failedWith, droppedWith, peak = run(t, mgcp.Config{})
		t.Logf("window: %d failed, %d lost at the gateway, %d retransmissions, %d cuts, peak %d held",
			failedWith, droppedWith, with.Retransmissions, with.WindowDecreases, peak)
	})
	t.Run("no-window", func(t *testing.T) {
		without, failedWithout, droppedWithout, _ = run(t, mgcp.Config{WindowInitial: 1000, WindowMax: 1000})
		t.Logf("no window: %d failed, %d lost at the gateway, %d retransmissions", failedWithout, droppedWithout, without.Retransmissions)
	})
	if failedWith != 0 {
		t.Errorf("%d commands failed with the window", failedWith)
	}
	if with.WindowDecreases == 0 {
		t.Errorf("the window was never cut although the gateway lost %d commands", droppedWith)
	}
	if with.Retransmissions*4 > without.Retransmissions {
		t.Errorf("retransmissions: %d with the window, %d without; want at most a quarter", with.Retransmissions, without.Retransmissions)
	}
	if droppedWith*4 > droppedWithout {
		t.Errorf("commands lost at the gateway: %d with the window, %d without; want at most a quarter", droppedWith, droppedWithout)
	}
}

// BenchmarkWindowBurst sends bursts of 1,000 commands at once over
// loopback to the fake gateway behind a 32-command receive buffer (more
// are lost), with the default window and with one larger than the burst,
// and reports commands per second, retransmissions and failures per
// 1,000 commands.
func BenchmarkWindowBurst(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  mgcp.Config
	}{{"window", mgcp.Config{}}, {"no-window", mgcp.Config{WindowInitial: 2000, WindowMax: 2000}}} {
		b.Run(bc.name, func(b *testing.B) {
			conn, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ca := mgcp.New(conn, bc.cfg)
			go func() { _ = ca.Serve(context.Background()) }()
			defer ca.Close()
			gc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: newBoundedConn(gc, 32), NoRecord: true,
				MGCP: mgcp.Config{MaxCachedPerPeer: 1 << 20}})
			if err != nil {
				b.Fatal(err)
			}
			defer gw.Close()
			cmd := rqnt()
			cmd.Endpoint = gw.Endpoint("aaln/1")
			const n = 1000
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				var wg sync.WaitGroup
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c := *cmd
						if r, err := ca.Do(context.Background(), gw.Addr(), &c); err != nil || r.Code != mgcp.CodeOK {
							failed.Add(1)
						}
					}()
				}
				wg.Wait()
			}
			el := time.Since(start)
			b.StopTimer()
			st := ca.Stats()
			b.ReportMetric(float64(n*b.N)/el.Seconds(), "cmds/s")
			b.ReportMetric(float64(st.Retransmissions)/float64(b.N), "retrans/1000")
			b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/1000")
		})
	}
}
