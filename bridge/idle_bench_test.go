package bridge_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
)

// BenchmarkIdleLines measures what an idle, armed line costs (heap and
// goroutines, no SIP registration) and how long a wildcard RSIP of every
// line takes to be audited and re-armed through the gateway's transaction
// window. MGSIP_IDLE_LINES sets the number of lines (default 10,000);
// MGSIP_IDLE_NO_WINDOW=1 runs the call agent without a window, to compare.
// The fake gateway runs in the same process, so the heap figure includes
// its endpoint state; the goroutine figure is mgsip's (the gateway keeps
// none per endpoint).
//
// go test -run '^$' -bench IdleLines -benchtime 1x ./bridge/
func BenchmarkIdleLines(b *testing.B) {
	lines := 10000
	if n, err := strconv.Atoi(os.Getenv("MGSIP_IDLE_LINES")); err == nil && n > 0 {
		lines = n
	}
	for range b.N {
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		g0 := runtime.NumGoroutine()
		var mc mgcp.Config
		if os.Getenv("MGSIP_IDLE_NO_WINDOW") != "" {
			// For comparison: a window larger than any storm.
			mc.WindowInitial, mc.WindowMax = 1<<20, 1<<20
		}
		ca, setBridge := listenCA(b, mc)
		gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: lines, CallAgent: ca.LocalAddr().String(),
			NoRecord: true, DisconnectedInitial: -1})
		if err != nil {
			b.Fatal(err)
		}
		gwHost, gwPort := hostPort(b, gw.Addr())
		rules, err := mapping.New(mapping.Config{
			Peers:     []mapping.Peer{{Name: "pbx", Host: "127.0.0.1", Port: 5060}},
			Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gwPort}},
			DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(xxxx)", Default: true}},
			Lines:     []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1.." + strconv.Itoa(lines) + "}", User: "{n+100000}", Password: "pw"}},
			Routes:    mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"}}},
		}, mapping.Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		startBridgeSIP(b, ca, setBridge, rules, bridge.Config{ToneTimeout: time.Hour}, sip.Config{})
		waitArmed := func(what string) time.Duration {
			t0 := time.Now()
			for i := 1; i <= lines; {
				if st, ok := gw.State("aaln/" + strconv.Itoa(i)); ok && armed(st) {
					i++
					continue
				}
				if time.Since(t0) > 5*time.Minute {
					b.Fatalf("%s: line %d not armed after 5 min (call agent %+v)", what, i, ca.Stats())
				}
				time.Sleep(50 * time.Millisecond)
			}
			return time.Since(t0)
		}
		waitArmed("start-up")
		startup := time.Since(start)
		st0 := ca.Stats()
		time.Sleep(time.Second) // let the lines' goroutines park
		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		g1 := runtime.NumGoroutine()
		b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(lines), "heap-B/line")
		b.ReportMetric(float64(int64(m1.StackInuse)-int64(m0.StackInuse))/float64(lines), "stack-B/line")
		b.ReportMetric(float64(g1-g0)/float64(lines), "goroutines/line")
		b.ReportMetric(startup.Seconds(), "s-startup-armed")
		b.ReportMetric(float64(st0.Retransmissions), "startup-retrans")

		// A wildcard RSIP: every line audited and re-armed.
		if _, err := gw.Restart(context.Background(), "*", mgcp.RestartRestart, 0); err != nil {
			b.Fatal(err)
		}
		storm := waitArmed("after the RSIP")
		st1 := ca.Stats()
		b.ReportMetric(storm.Seconds(), "s-rsip-armed")
		b.ReportMetric(float64(st1.Retransmissions-st0.Retransmissions), "rsip-retrans")
		b.ReportMetric(float64(st1.Timeouts), "timeouts")
		b.ReportMetric(float64(st1.WindowWaits), "window-waits")
		for _, p := range ca.Peers() {
			b.Logf("gateway %s: window %d, outstanding %d, queued %d, rtt %v", p.Addr, p.Window, p.Outstanding, p.Queued, p.RTT)
		}
		_ = gw.Close()
	}
}
