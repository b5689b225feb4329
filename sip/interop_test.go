package sip_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/sip"
)

type kamailio = testutil.Kamailio

func startKamailio(t *testing.T, algorithm string, maxExpires int) *kamailio {
	return testutil.StartKamailio(t, algorithm, maxExpires)
}

func startKamailioB(t testing.TB, algorithm string, maxExpires int) *kamailio {
	return testutil.StartKamailio(t, algorithm, maxExpires)
}

func newStack(t *testing.T) (*sip.Stack, context.CancelFunc) {
	return newStackWith(t, sip.Config{})
}

// newStackWith serves a stack with cfg on 127.0.0.1:0.
func newStackWith(t *testing.T, cfg sip.Config) (*sip.Stack, context.CancelFunc) {
	cfg.Listeners = []sip.Listener{{Listen: "127.0.0.1:0"}}
	stack, err := sip.NewStack(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = stack.Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = stack.Close() })
	return stack, cancel
}

// TestInteropKamailioThousandLines registers 1,000 lines with SHA-256
// digest against Kamailio, keeps them registered through refreshes of a
// 10 s binding, reports a wrong password as failed, and unbinds everything
// on shutdown.
func TestInteropKamailioThousandLines(t *testing.T) {
	kam := startKamailio(t, "SHA-256", 10)
	stack, _ := newStack(t)
	regs := stack.NewRegistrations(sip.RegistrationConfig{Rate: 500})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- regs.Run(ctx) }()
	defer func() { stop(); <-done }()

	const lines = 1000
	start := time.Now()
	for i := 0; i < lines; i++ {
		u := strconv.Itoa(70000 + i)
		regs.Add(sip.Account{ID: "kam/" + u, User: u, Password: "pw-" + u, Registrar: kam.Addr, Expiry: 60 * time.Second})
	}
	waitCount := func(state sip.RegState, n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for regs.Counts()[state] < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d %v after %v (counts %v)", regs.Counts()[state], n, state, within, regs.Counts())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(sip.RegRegistered, lines, 30*time.Second)
	t.Logf("%d lines registered with SHA-256 digest in %v", lines, time.Since(start).Round(time.Millisecond))
	if c, err := kam.Stat("usrloc:location_contacts"); err != nil || c != lines {
		t.Fatalf("kamailio holds %d contacts (%v)", c, err)
	}
	st, _ := regs.Status("kam/70000")
	if st.Algorithm != "SHA-256" || time.Until(st.Expires) > 11*time.Second {
		t.Errorf("status %+v: want SHA-256 and Kamailio's 10 s cap", st)
	}

	// A wrong password: challenged twice, reported failed, not retried.
	regs.Add(sip.Account{ID: "kam/bad", User: "79999", Password: "not-it", Registrar: kam.Addr})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, _ := regs.Status("kam/bad"); st.State == sip.RegFailed {
			break
		}
		if time.Now().After(deadline) {
			st, _ := regs.Status("kam/bad")
			t.Fatalf("wrong password: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Through at least one refresh of every 10 s binding (refreshed after
	// 5 s): past the first expiry, every line is still bound.
	time.Sleep(13 * time.Second)
	if c := regs.Counts()[sip.RegRegistered]; c != lines {
		t.Fatalf("%d registered after the refresh period", c)
	}
	if c, err := kam.Stat("usrloc:location_contacts"); err != nil || c != lines {
		t.Fatalf("kamailio holds %d contacts after the refresh period (%v)", c, err)
	}
	// Every binding was renewed: its expiry lies beyond the first one.
	for i := 0; i < lines; i++ {
		id := "kam/" + strconv.Itoa(70000+i)
		if st, _ := regs.Status(id); !st.Expires.After(time.Now()) {
			t.Fatalf("%s not refreshed: %+v", id, st)
		}
	}

	// Shutdown unregisters every line.
	stop()
	<-done
	done <- nil
	if c, err := kam.Stat("usrloc:location_contacts"); err != nil || c != 0 {
		t.Errorf("kamailio still holds %d contacts after shutdown (%v)", c, err)
	}
}

func TestInteropKamailioMD5(t *testing.T) {
	kam := startKamailio(t, "MD5", 3600)
	stack, _ := newStack(t)
	regs := stack.NewRegistrations(sip.RegistrationConfig{})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- regs.Run(ctx) }()
	defer func() { stop(); <-done }()
	for _, u := range []string{"5001", "5002"} {
		regs.Add(sip.Account{ID: u, User: u, Password: "pw-" + u, Registrar: kam.Addr})
	}
	deadline := time.Now().Add(10 * time.Second)
	for regs.Counts()[sip.RegRegistered] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("counts %v", regs.Counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := regs.Status("5001"); st.Algorithm != "MD5" {
		t.Errorf("status %+v", st)
	}
	if c, _ := kam.Stat("usrloc:location_contacts"); c != 2 {
		t.Errorf("kamailio holds %d contacts", c)
	}
}

// TestInteropKamailioChallengesInvite: Kamailio answers our INVITE with
// 407; the call goes on with credentials and gets Kamailio's final answer
// (486) instead of a second challenge; a wrong password ends on 407.
func TestInteropKamailioChallengesInvite(t *testing.T) {
	kam := startKamailio(t, "SHA-256", 3600)
	stack, _ := newStack(t)
	for _, tt := range []struct {
		password string
		want     int
	}{{"pw-2001", 486}, {"wrong", 407}} {
		d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001", Password: tt.password}, To: "9123", Peer: kam.Addr, SDP: []byte(offer)})
		if err != nil {
			t.Fatal(err)
		}
		var last sip.Event
		for e := range d.Events() {
			last = e
		}
		if last.Kind != sip.EventFailed || last.Status != tt.want {
			t.Errorf("password %q: last event %+v, want failure %d", tt.password, last, tt.want)
		}
	}
}

// TestInteropKamailioAdaptivePacing: 2,000 lines, the pace started at
// 50/s with a ceiling of 5,000/s. Kamailio answers every REGISTER, so the
// pace grows and the lines register in a fraction of the 40 s a fixed
// 50/s takes.
func TestInteropKamailioAdaptivePacing(t *testing.T) {
	kam := startKamailio(t, "SHA-256", 3600)
	stack, _ := newStack(t)
	regs := stack.NewRegistrations(sip.RegistrationConfig{Rate: 5000, StartRate: 50})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- regs.Run(ctx) }()
	defer func() { stop(); <-done }()
	const lines = 2000
	start := time.Now()
	for i := 0; i < lines; i++ {
		u := strconv.Itoa(70000 + i)
		regs.Add(sip.Account{ID: "kam/" + u, User: u, Password: "pw-" + u, Registrar: kam.Addr, Expiry: time.Hour})
	}
	for regs.Counts()[sip.RegRegistered] < lines {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("after 30 s: %v", regs.Counts())
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	p := regs.Pacing()
	t.Logf("%d lines registered in %v; pace %.0f/s (%d overloaded, %d cuts)", lines, took.Round(time.Millisecond), p.Rate, p.Overloaded, p.Cuts)
	if took > 15*time.Second {
		t.Errorf("%d lines took %v: the pace did not grow from 50/s", lines, took)
	}
	if c, err := kam.Stat("usrloc:location_contacts"); err != nil || c != lines {
		t.Fatalf("kamailio holds %d contacts (%v)", c, err)
	}
}
