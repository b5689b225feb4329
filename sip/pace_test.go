package sip_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

func manyUsers(n int) map[string]string {
	users := map[string]string{}
	for i := range n {
		users[fmt.Sprint(100000+i)] = "pw"
	}
	return users
}

func (e *regEnv) waitAll(n int, within time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for e.regs.Counts()[sip.RegRegistered] < n {
		if time.Since(start) > within {
			e.t.Fatalf("after %v: %v of %d", within, e.regs.Counts(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestPacingGrowsWithARegistrarThatKeepsUp: started at 50/s, the pace
// grows while every registration is answered, so 1,000 lines take far
// less than the 20 s a fixed 50/s would.
func TestPacingGrowsWithARegistrarThatKeepsUp(t *testing.T) {
	users := manyUsers(1000)
	e := newRegEnv(t, siptest.RegistrarConfig{Users: users, NoRecord: true}, sip.RegistrationConfig{Rate: 5000, StartRate: 50})
	for u := range users {
		e.regs.Add(e.account(u, "pw"))
	}
	took := e.waitAll(len(users), 30*time.Second)
	p := e.regs.Pacing()
	t.Logf("1,000 lines in %v; pace now %.0f/s, %d overloaded, %d cuts", took, p.Rate, p.Overloaded, p.Cuts)
	if took > 10*time.Second {
		t.Errorf("1,000 lines took %v: the pace did not grow from 50/s", took)
	}
	if p.Rate <= 500 || p.Cuts != 0 {
		t.Errorf("pace %.0f/s after 1,000 clean registrations (%d cuts), want above 500/s and no cut", p.Rate, p.Cuts)
	}
}

// TestPacingBacksOffFromAnOverloadedRegistrar: a registrar that takes
// 400 REGISTERs a second and answers 503 to the rest (no Retry-After).
// The pace is cut, stays below the ceiling, and every line registers.
func TestPacingBacksOffFromAnOverloadedRegistrar(t *testing.T) {
	users := manyUsers(1500)
	capacity := rate.NewLimiter(400, 40)
	var refused atomic.Int64
	fail := func(string, int) (int, int) {
		if !capacity.Allow() {
			refused.Add(1)
			return 503, 0
		}
		return 0, 0
	}
	e := newRegEnv(t, siptest.RegistrarConfig{Users: users, NoRecord: true, Fail: fail},
		sip.RegistrationConfig{Rate: 5000, StartRate: 50, RetryMin: 200 * time.Millisecond})
	for u := range users {
		e.regs.Add(e.account(u, "pw"))
	}
	took := e.waitAll(len(users), 60*time.Second)
	p := e.regs.Pacing()
	t.Logf("1,500 lines in %v; %d REGISTERs refused; pace %.0f/s, %d overloaded, %d cuts", took, refused.Load(), p.Rate, p.Overloaded, p.Cuts)
	if p.Cuts == 0 {
		t.Fatalf("the pace was never cut although the registrar refused %d", refused.Load())
	}
	if took > 25*time.Second {
		t.Errorf("1,500 lines took %v against a registrar that takes 200 a second", took)
	}
	// Two REGISTERs per registration (challenge, then the answer): 400/s
	// is 200 registrations a second.
	if p.Rate > 1000 {
		t.Errorf("pace %.0f/s against a registrar that takes 200 registrations/s", p.Rate)
	}
	if n := refused.Load(); n > int64(len(users))/2 {
		t.Errorf("%d REGISTERs refused for %d lines: the pace did not back off", n, len(users))
	}
}

// TestFirstRefreshesAreSpread: lines registered in one burst refresh
// spread over the second half of the refresh time, not all at once.
func TestFirstRefreshesAreSpread(t *testing.T) {
	users := manyUsers(200)
	e := newRegEnv(t, siptest.RegistrarConfig{Users: users, NoRecord: true}, sip.RegistrationConfig{Rate: 5000, StartRate: 5000})
	for u := range users {
		a := e.account(u, "pw")
		a.Expiry = time.Hour
		e.regs.Add(a)
	}
	e.waitAll(len(users), 30*time.Second)
	refresh := 59 * time.Minute // a minute before expiry
	var lo, hi time.Duration
	for u := range users {
		st, _ := e.regs.Status("gw/aaln/" + u)
		d := time.Until(st.NextAttempt)
		if d < refresh/2-time.Minute || d > refresh {
			t.Fatalf("%s refreshes in %v, want within [%v, %v]", u, d, refresh/2, refresh)
		}
		if lo == 0 || d < lo {
			lo = d
		}
		hi = max(hi, d)
	}
	if hi-lo < refresh/4 {
		t.Errorf("200 first refreshes within %v of each other, want them spread over about %v", hi-lo, refresh/2)
	}
}
