package bridge_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

// BenchmarkCallLoad is the load run of `make bench-calls`: MGSIP_LOAD_LINES
// simulated lines (default 2000) register to the siptest PBX; calls go
// off hook -> dial tone -> digits -> INVITE -> 200 from the PBX -> MDCX
// send-receive -> talk MGSIP_LOAD_TALK (default 1s) -> on hook -> BYE and
// DLCX, at stepped rates (MGSIP_LOAD_RATES, calls per second, default
// 100,...,1500) for MGSIP_LOAD_STEP each (default 5s).
// Idle memory is read MGSIP_LOAD_SETTLE (default 35s) after the lines
// registered.
// Setup latency runs from the off-hook NTFY leaving the gateway to the
// gateway receiving MDCX send-receive (the 200 OK applied). Everything
// (gateway, mgsip, PBX) runs in this process on loopback.
func BenchmarkCallLoad(b *testing.B) {
	lines := envInt("MGSIP_LOAD_LINES", 2000)
	talk := envDuration("MGSIP_LOAD_TALK", time.Second)
	step := envDuration("MGSIP_LOAD_STEP", 5*time.Second)
	var rates []int
	for _, f := range strings.Split(envString("MGSIP_LOAD_RATES", "100,200,300,400,500,600,800,1000,1200,1500"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			rates = append(rates, n)
		}
	}
	for b.Loop() {
		runLoad(b, lines, talk, step, rates)
	}
}

type loadGateway struct {
	mu       sync.Mutex
	dialTone map[string]chan struct{} // endpoint -> signalled on RQNT with L/dl
	answered map[string]chan struct{} // endpoint -> signalled on MDCX sendrecv
}

func (g *loadGateway) watch(cmd *mgcp.Command) *mgcp.Response {
	var ch chan struct{}
	g.mu.Lock()
	switch cmd.Verb {
	case mgcp.VerbRQNT:
		for _, s := range cmd.Signals {
			if s.Is("L", "dl") {
				ch = g.dialTone[cmd.Endpoint.Local]
			}
		}
	case mgcp.VerbMDCX:
		if cmd.Mode == mgcp.ModeSendRecv {
			ch = g.answered[cmd.Endpoint.Local]
		}
	}
	g.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil // the built-in behaviour answers
}

func runLoad(b *testing.B, lines int, talk, step time.Duration, rates []int) {
	users := map[string]string{}
	for i := 1; i <= lines; i++ {
		users[strconv.Itoa(100000+i)] = "pw"
	}
	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: users, NoRecord: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pbx.Close()
	lg := &loadGateway{dialTone: map[string]chan struct{}{}, answered: map[string]chan struct{}{}}
	for i := 1; i <= lines; i++ {
		ep := "aaln/" + strconv.Itoa(i)
		lg.dialTone[ep] = make(chan struct{}, 1)
		lg.answered[ep] = make(chan struct{}, 1)
	}
	ca, setBridge := listenCA(b, mgcp.Config{})
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: lines, CallAgent: ca.LocalAddr().String(),
		NoRecord: true, Respond: lg.watch, DisconnectedInitial: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer gw.Close()
	gwHost, gwPort := hostPort(b, gw.Addr())
	pbxHost, pbxPort := hostPort(b, pbx.Addr())
	yes := true
	rules, err := mapping.New(mapping.Config{
		Peers:     []mapping.Peer{{Name: "pbx", Host: pbxHost, Port: pbxPort, Register: &yes}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gwPort}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(xxxx)", Default: true}},
		Lines:     []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1.." + strconv.Itoa(lines) + "}", User: "{n+100000}", Password: "pw"}},
		Routes:    mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"}}},
	}, mapping.Options{})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var failed atomic.Int64
	br, _ := startBridgeSIP(b, ca, setBridge, rules, bridge.Config{Register: true, ToneTimeout: time.Hour,
		OnCall: func(r bridge.CallRecord) {
			if !r.Answered {
				failed.Add(1)
			}
		}}, sip.Config{RegisterRate: 5000})

	start := time.Now()
	for br.Registrations().Counts()[sip.RegRegistered] < lines {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("registrations: %v", br.Registrations().Counts())
		}
		time.Sleep(20 * time.Millisecond)
	}
	regTime := time.Since(start)
	// Let the transactions of the registration burst expire (sipgo keeps
	// a non-INVITE server transaction for Timer J, 64*T1 = 32 s), so that
	// what is measured is what idle lines keep.
	time.Sleep(envDuration("MGSIP_LOAD_SETTLE", 35*time.Second))
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	idlePerLine := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(lines)
	if path := os.Getenv("MGSIP_LOAD_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	stackPerLine := float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / float64(lines)
	b.Logf("%d lines registered in %v; per idle registered line: heap %.0f B (mgsip plus the PBX's binding), goroutine stack %.0f B",
		lines, regTime.Round(time.Millisecond), idlePerLine, stackPerLine)
	b.ReportMetric(idlePerLine, "B/idle-line")
	b.ReportMetric(stackPerLine, "B-stack/idle-line")

	free := make(chan string, lines)
	for i := 1; i <= lines; i++ {
		free <- "aaln/" + strconv.Itoa(i)
	}
	best := 0
	for _, rate := range rates {
		res := loadStep(gw, lg, free, rate, step, talk, &failed)
		b.Logf("rate %4d/s: %5d calls, %d failed (%d for want of a free line), setup p50 %6.2f ms p99 %6.2f ms, CPU %.2f cores, peak %d calls, heap per call %.0f B",
			rate, res.calls, res.failed, res.noLine, ms(res.p50), ms(res.p99), res.cores, res.peak, res.perCall)
		if res.failed == 0 {
			best = rate
			b.ReportMetric(ms(res.p99), fmt.Sprintf("ms-p99@%d/s", rate))
		} else {
			break
		}
	}
	b.ReportMetric(float64(best), "calls/s-max-0-failed")
}

type stepResult struct {
	calls, failed int
	noLine        int // calls not placed: every line busy
	p50, p99      time.Duration
	cores         float64
	peak          int64
	perCall       float64
}

func loadStep(gw *mgcptest.Gateway, lg *loadGateway, free chan string, rate int, step, talk time.Duration, failed *atomic.Int64) stepResult {
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	failed.Store(0)
	wall := time.Now()
	var mu sync.Mutex
	var lat []time.Duration
	var fails, noLine atomic.Int64
	var firstFail atomic.Value
	var active, peak atomic.Int64
	var heapPeak uint64
	var wg sync.WaitGroup
	total := int(float64(rate) * step.Seconds())
	interval := time.Second / time.Duration(rate)
	tick := time.NewTicker(interval)
	var baseHeap uint64
	{
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		baseHeap = m.HeapAlloc
	}
	for i := 0; i < total; i++ {
		<-tick.C
		var ep string
		select {
		case ep = <-free:
		default:
			noLine.Add(1) // every line is busy: the rate is beyond the line count
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { free <- ep }()
			n := active.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			defer active.Add(-1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+talk)
			defer cancel()
			drain(lg.dialTone[ep])
			drain(lg.answered[ep])
			t0 := time.Now()
			fail := func(stage string, r *mgcp.Response, err error) {
				fails.Add(1)
				firstFail.CompareAndSwap(nil, fmt.Sprintf("%s %s: %v %v", ep, stage, r, err))
			}
			if r, err := gw.OffHook(ctx, ep); err != nil || !r.Code.IsSuccess() {
				fail("off-hook NTFY", r, err)
				return
			}
			if !waitCh(ctx, lg.dialTone[ep]) {
				fail("no dial tone", nil, ctx.Err())
				_, _ = gw.OnHook(context.Background(), ep)
				return
			}
			if r, err := gw.Collect(ctx, ep, "2000"); err != nil || !r.Code.IsSuccess() {
				fail("digits NTFY", r, err)
				return
			}
			if !waitCh(ctx, lg.answered[ep]) {
				fail("no answer", nil, ctx.Err())
				_, _ = gw.OnHook(context.Background(), ep)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
			time.Sleep(talk)
			if r, err := gw.OnHook(ctx, ep); err != nil || !r.Code.IsSuccess() {
				fails.Add(1)
			}
			// The line is free again once mgsip re-armed it.
			time.Sleep(200 * time.Millisecond)
		}()
		if i%rate == rate/2 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			heapPeak = max(heapPeak, m.HeapAlloc)
		}
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(wall)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	if f, ok := firstFail.Load().(string); ok {
		fmt.Println("first failure:", f)
	}
	res := stepResult{calls: total, failed: int(fails.Load() + failed.Load() + noLine.Load()), noLine: int(noLine.Load()), p50: pct(0.50), p99: pct(0.99),
		cores: cpu.Seconds() / elapsed.Seconds(), peak: peak.Load()}
	if res.peak > 0 && heapPeak > baseHeap {
		res.perCall = float64(heapPeak-baseHeap) / float64(res.peak)
	}
	return res
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func waitCh(ctx context.Context, ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil || n <= 0 {
		return def
	}
	return n
}

func envDuration(name string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil || d <= 0 {
		return def
	}
	return d
}
