package sip_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

type regEnv struct {
	t     *testing.T
	reg   *siptest.Registrar
	stack *sip.Stack
	regs  *sip.Registrations
	stop  context.CancelFunc
	done  chan error
}

func newRegEnv(t *testing.T, rc siptest.RegistrarConfig, cfg sip.RegistrationConfig) *regEnv {
	t.Helper()
	reg, err := siptest.NewRegistrar(rc)
	if err != nil {
		t.Fatal(err)
	}
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The stack outlives the registrations, so that they can unregister.
	stackCtx, stopStack := context.WithCancel(context.Background())
	go func() { _ = stack.Serve(stackCtx) }()
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.RetryMin == 0 {
		cfg.RetryMin = 50 * time.Millisecond
	}
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	e := &regEnv{t: t, reg: reg, stack: stack, regs: stack.NewRegistrations(cfg), stop: cancel, done: make(chan error, 1)}
	go func() { e.done <- e.regs.Run(ctx) }()
	t.Cleanup(func() {
		e.shutdown()
		stopStack()
		_ = stack.Close()
		_ = reg.Close()
	})
	return e
}

func (e *regEnv) shutdown() {
	if e.stop != nil {
		e.stop()
		<-e.done
		e.stop = nil
	}
}

func (e *regEnv) account(user, password string) sip.Account {
	return sip.Account{ID: "gw/aaln/" + user, User: user, Password: password, Registrar: e.reg.Addr(), Expiry: 300 * time.Second}
}

// waitState polls until the account reaches state.
func (e *regEnv) waitState(id string, want sip.RegState) sip.RegStatus {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := e.regs.Status(id)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: state %v (%s), want %v", id, st.State, st.Reason, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRegisterWithDigest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		offered []string
		want    string
	}{
		{"md5", []string{"MD5"}, "MD5"},
		{"sha-256", []string{"SHA-256"}, "SHA-256"},
		{"both offered, strongest taken", []string{"MD5", "SHA-256"}, "SHA-256"},
		{"no algorithm parameter", []string{""}, "MD5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []sip.RegState
			e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "s3cret"}, Algorithms: tt.offered},
				sip.RegistrationConfig{OnChange: func(_ string, st sip.RegStatus) {
					mu.Lock()
					seen = append(seen, st.State)
					mu.Unlock()
				}})
			e.regs.Add(e.account("2001", "s3cret"))
			st := e.waitState("gw/aaln/2001", sip.RegRegistered)
			mu.Lock()
			for _, s := range seen {
				if s == sip.RegRetrying {
					t.Errorf("a first registration needed a retry: states %v", seen)
				}
			}
			mu.Unlock()
			if st.Algorithm != tt.want || st.Code != 200 || time.Until(st.Expires) < 290*time.Second {
				t.Errorf("status %+v", st)
			}
			b, ok := e.reg.Binding("2001")
			port := e.stack.ContactURI().Port
			if !ok || !strings.Contains(b.Contact, fmt.Sprintf(":%d", port)) {
				t.Errorf("binding %+v (our port %d)", b, port)
			}
			reqs := e.reg.RequestsFor("2001")
			if len(reqs) != 2 || reqs[0].Authorized || !reqs[1].Authorized || reqs[1].Algorithm != tt.want {
				t.Errorf("requests %+v", reqs)
			}
			// Requests leave from the listener, so answers come back to it.
			if !strings.HasSuffix(reqs[0].Source, fmt.Sprintf(":%d", port)) {
				t.Errorf("REGISTER came from %s, not our listener port %d", reqs[0].Source, port)
			}
		})
	}
}

func TestWrongPasswordFailsAndStops(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "right", "2002": "fine"}}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "wrong"))
	st := e.waitState("gw/aaln/2001", sip.RegFailed)
	if st.Reason != "credentials refused" || st.Code != 401 {
		t.Errorf("status %+v", st)
	}
	// Other lines go on, and the failed one is not retried.
	e.regs.Add(e.account("2002", "fine"))
	e.waitState("gw/aaln/2002", sip.RegRegistered)
	time.Sleep(300 * time.Millisecond) // six retry periods
	if n := len(e.reg.RequestsFor("2001")); n != 2 {
		t.Errorf("%d REGISTERs for the refused account, want 2", n)
	}
	// A corrected account registers.
	e.regs.Add(e.account("2001", "right"))
	e.waitState("gw/aaln/2001", sip.RegRegistered)
}

func TestIntervalTooBrief(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"}, MinExpires: 600}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "pw"))
	st := e.waitState("gw/aaln/2001", sip.RegRegistered)
	reqs := e.reg.RequestsFor("2001")
	last := reqs[len(reqs)-1]
	if last.Expires != 600 || time.Until(st.Expires) < 590*time.Second {
		t.Errorf("asked %d, status %+v", last.Expires, st)
	}
}

func TestServerErrorsBackOff(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"},
		Fail: func(_ string, n int) (int, int) {
			if n <= 3 {
				return 503, 0
			}
			return 0, 0
		}}, sip.RegistrationConfig{RetryMin: 100 * time.Millisecond})
	e.regs.Add(e.account("2001", "pw"))
	e.waitState("gw/aaln/2001", sip.RegRegistered)
	reqs := e.reg.RequestsFor("2001")
	if len(reqs) != 5 {
		t.Fatalf("%d requests", len(reqs))
	}
	// Delays double from RetryMin (±20% jitter): at least 80, 160 and
	// 320 ms. Only lower bounds: a loaded machine may add delay, never
	// remove it.
	for i, want := range []time.Duration{100, 200, 400} {
		gap := reqs[i+1].At.Sub(reqs[i].At)
		if lo := want * time.Millisecond * 8 / 10; gap < lo {
			t.Errorf("retry %d after %v, want at least %v", i+1, gap, lo)
		}
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"},
		Fail: func(_ string, n int) (int, int) {
			if n == 1 {
				return 503, 1
			}
			return 0, 0
		}}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "pw"))
	st := e.waitState("gw/aaln/2001", sip.RegRetrying)
	if st.Code != 503 || time.Until(st.NextAttempt) < 800*time.Millisecond {
		t.Errorf("status %+v", st)
	}
	e.waitState("gw/aaln/2001", sip.RegRegistered)
}

func TestRefreshBeforeExpiry(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"}, MaxExpires: 2}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "pw"))
	e.waitState("gw/aaln/2001", sip.RegRegistered)
	// Granted 2s and refreshed half-way: two refreshes come, and each
	// finds the binding still in place (never a lapse between them).
	deadline := time.Now().Add(15 * time.Second)
	for {
		var authorized []siptest.Request
		for _, r := range e.reg.RequestsFor("2001") {
			if r.Authorized {
				authorized = append(authorized, r)
			}
		}
		if len(authorized) >= 3 {
			for i := 1; i < len(authorized); i++ {
				if gap := authorized[i].At.Sub(authorized[i-1].At); gap >= 2*time.Second {
					t.Errorf("refresh %d came %v after the previous one: the 2s binding lapsed", i, gap)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d authorized REGISTERs, want 3 (initial and two refreshes)", len(authorized))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := e.reg.Binding("2001"); !ok {
		t.Fatal("binding expired")
	}
	if st, _ := e.regs.Status("gw/aaln/2001"); st.State != sip.RegRegistered {
		t.Errorf("status %+v", st)
	}
}

func TestRemoveAndShutdownUnregister(t *testing.T) {
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw", "2002": "pw"}}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "pw"))
	e.regs.Add(e.account("2002", "pw"))
	e.waitState("gw/aaln/2001", sip.RegRegistered)
	e.waitState("gw/aaln/2002", sip.RegRegistered)
	e.regs.Remove("gw/aaln/2001")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, known := e.regs.Status("gw/aaln/2001")
		_, bound := e.reg.Binding("2001")
		if !known && !bound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still known %v / bound %v", known, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.shutdown()
	if _, bound := e.reg.Binding("2002"); bound {
		t.Error("shutdown left 2002 bound")
	}
	reqs := e.reg.RequestsFor("2002")
	if last := reqs[len(reqs)-1]; last.Expires != 0 || !last.Authorized {
		t.Errorf("last REGISTER %+v", last)
	}
}

func TestRegistrationRateIsLimited(t *testing.T) {
	users := map[string]string{}
	for i := 0; i < 20; i++ {
		users[fmt.Sprint(3000+i)] = "pw"
	}
	e := newRegEnv(t, siptest.RegistrarConfig{Users: users}, sip.RegistrationConfig{Rate: 10})
	for u := range users {
		e.regs.Add(e.account(u, "pw"))
	}
	for u := range users {
		e.waitState("gw/aaln/"+u, sip.RegRegistered)
	}
	first := map[string]time.Time{}
	for _, r := range e.reg.Requests() {
		if _, ok := first[r.User]; !ok {
			first[r.User] = r.At
		}
	}
	var lo, hi time.Time
	for _, at := range first {
		if lo.IsZero() || at.Before(lo) {
			lo = at
		}
		if at.After(hi) {
			hi = at
		}
	}
	// 20 accounts at 10/s with a burst of 10: the last starts about 1s
	// after the first.
	if span := hi.Sub(lo); span < 800*time.Millisecond {
		t.Errorf("20 first REGISTERs within %v at 10/s", span)
	}
	if c := e.regs.Counts(); c[sip.RegRegistered] != 20 {
		t.Errorf("counts %v", c)
	}
}

// TestRemoveWhileRegisteringUnregisters: the account is removed while its
// REGISTER is at the registrar; the 200 that follows created a binding,
// so it is followed by an Expires: 0 REGISTER (issue 16: the entry was
// forgotten and the binding left to expire).
func TestRemoveWhileRegisteringUnregisters(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e := newRegEnv(t, siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"},
		Fail: func(user string, n int) (int, int) {
			if n == 2 { // the authorized REGISTER
				once.Do(func() { close(arrived) })
				<-release
			}
			return 0, 0
		}}, sip.RegistrationConfig{})
	e.regs.Add(e.account("2001", "pw"))
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no authorized REGISTER")
	}
	e.regs.Remove("gw/aaln/2001")
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, known := e.regs.Status("gw/aaln/2001")
		_, bound := e.reg.Binding("2001")
		if !known && !bound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still known %v / bound %v; requests %+v", known, bound, e.reg.RequestsFor("2001"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	reqs := e.reg.RequestsFor("2001")
	if last := reqs[len(reqs)-1]; last.Expires != 0 {
		t.Errorf("last REGISTER %+v, want an un-REGISTER", last)
	}
}
