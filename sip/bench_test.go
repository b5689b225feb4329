package sip_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

// benchRegister registers n lines (SHA-256 digest: two transactions each)
// at rate per second and reports the time until all are registered and the
// heap kept per registered line.
func benchRegister(b *testing.B, registrar string, n int, rate float64, password func(string) string) {
	for b.Loop() {
		stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
		if err != nil {
			b.Fatal(err)
		}
		sctx, stopStack := context.WithCancel(context.Background())
		go func() { _ = stack.Serve(sctx) }()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		regs := stack.NewRegistrations(sip.RegistrationConfig{Rate: rate, MaxInFlight: 1024})
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- regs.Run(ctx) }()
		start := time.Now()
		for i := 0; i < n; i++ {
			u := strconv.Itoa(100000 + i)
			regs.Add(sip.Account{ID: u, User: u, Password: password(u), Registrar: registrar, Expiry: 3600 * time.Second})
		}
		for regs.Counts()[sip.RegRegistered] < n {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("counts %v", regs.Counts())
			}
			time.Sleep(10 * time.Millisecond)
		}
		elapsed := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(elapsed.Seconds(), "s-to-all-registered")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "registrations/s")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/line")
		stop()
		<-done // unregisters all
		stopStack()
		_ = stack.Close()
	}
}

// BenchmarkRegister10kKamailio registers 10,000 lines against a real
// Kamailio (SHA-256 digest).
func BenchmarkRegister10kKamailio(b *testing.B) {
	kam := startKamailioB(b, "SHA-256", 3600)
	benchRegister(b, kam.Addr, 10000, 100000, func(u string) string { return "pw-" + u })
}

// BenchmarkRegister10kSiptest registers 10,000 lines against the siptest
// registrar.
func BenchmarkRegister10kSiptest(b *testing.B) {
	users := map[string]string{}
	for i := 0; i < 10000; i++ {
		users[strconv.Itoa(100000+i)] = "pw"
	}
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: users, Algorithms: []string{"SHA-256"}})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	benchRegister(b, reg.Addr(), 10000, 100000, func(string) string { return "pw" })
}

// BenchmarkDialogsSiptest places calls at the siptest PBX (answered at
// once) and hangs each up: INVITE, 200, ACK, BYE, 200 per dialog, 16 in
// flight.
func BenchmarkDialogsSiptest(b *testing.B) {
	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{NoRecord: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pbx.Close()
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = stack.Serve(ctx) }()
	defer stack.Close()
	b.SetParallelism(8) // 8 per core: 16 calls in flight on two cores
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := stack.Invite(ctx, sip.Call{From: sip.Account{User: "2001"}, To: "3000", Peer: pbx.Addr(), SDP: []byte(offer)})
			if err != nil {
				b.Error(err)
				return
			}
			e := <-d.Events()
			if e.Kind != sip.EventAnswered {
				b.Errorf("call: %+v", e)
				return
			}
			if err := d.Bye(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "dialogs/s")
}
