package mgcp_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// echoServer answers every datagram with a response of the same size: the
// bare UDP ping-pong the CallAgent is compared with.
func echoServer(b *testing.B, reply []byte) (addr net.Addr, stop func()) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(reply, from)
		}
	}()
	return c.LocalAddr(), func() { _ = c.Close(); <-done }
}

// BenchmarkRoundTrip interleaves, in one run, a CallAgent transaction
// (RQNT to the fake gateway, which parses it, runs its handler through its
// own transaction layer and answers) and a bare UDP ping-pong of the same
// request and response sizes, and reports both rates and their ratio.
func BenchmarkRoundTrip(b *testing.B) {
	for _, flows := range []int{1, 8} {
		b.Run(map[int]string{1: "sequential", 8: "8-flows"}[flows], func(b *testing.B) {
			conn, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ca := mgcp.New(conn, mgcp.Config{MaxCachedPerPeer: 1 << 20})
			go func() { _ = ca.Serve(context.Background()) }()
			defer ca.Close()
			gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 8, NoRecord: true, MGCP: mgcp.Config{MaxCachedPerPeer: 1 << 20}})
			if err != nil {
				b.Fatal(err)
			}
			defer gw.Close()
			cmd := &mgcp.Command{Verb: mgcp.VerbRQNT, Endpoint: gw.Endpoint("aaln/1"), Parameters: mgcp.Parameters{
				RequestID: "1a02", RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hu"}, Actions: []mgcp.Action{{Code: "N"}}}}}}
			req := cmd.AppendTo(nil)
			reply := (&mgcp.Response{Code: 200, TransactionID: 123456789, Comment: "OK"}).AppendTo(nil)
			echo, stop := echoServer(b, reply)
			defer stop()
			ctx := context.Background()
			// The gateway's address as a caller holds it (the bridge keeps
			// it in its rules); formatting it is not part of a round trip.
			gwAddr := gw.Addr()

			var mu sync.Mutex
			var caTime, udpTime time.Duration
			var caOps, udpOps int
			per := b.N/flows + 1
			var wg sync.WaitGroup
			b.ResetTimer()
			for f := 0; f < flows; f++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pc, err := net.ListenPacket("udp", "127.0.0.1:0")
					if err != nil {
						b.Error(err)
						return
					}
					defer pc.Close()
					buf := make([]byte, 4096)
					c := *cmd
					var ct, ut time.Duration
					for i := 0; i < per; i++ {
						t0 := time.Now()
						c.TransactionID = 0
						if _, err := ca.Do(ctx, gwAddr, &c); err != nil {
							b.Error(err)
							return
						}
						t1 := time.Now()
						if _, err := pc.WriteTo(req, echo); err != nil {
							b.Error(err)
							return
						}
						if _, _, err := pc.ReadFrom(buf); err != nil {
							b.Error(err)
							return
						}
						t2 := time.Now()
						ct += t1.Sub(t0)
						ut += t2.Sub(t1)
					}
					mu.Lock()
					caTime += ct
					udpTime += ut
					caOps += per
					udpOps += per
					mu.Unlock()
				}()
			}
			wg.Wait()
			b.StopTimer()
			// Rates in round trips per second across all flows.
			caRate := float64(caOps) / caTime.Seconds() * float64(flows)
			udpRate := float64(udpOps) / udpTime.Seconds() * float64(flows)
			b.ReportMetric(caRate, "mgcp-rt/s")
			b.ReportMetric(udpRate, "udp-rt/s")
			b.ReportMetric(100*caRate/udpRate, "%-of-udp")
			if s := ca.Stats(); s.Retransmissions > 0 || s.Timeouts > 0 {
				b.Logf("retransmissions %d timeouts %d", s.Retransmissions, s.Timeouts)
			}
		})
	}
}
