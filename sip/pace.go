package sip

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// pacer adapts the rate of REGISTER exchanges to the registrar, the way
// TCP adapts its window (RFC 5681), but on a rate: it starts at a
// modest rate, adds one exchange per second for every exchange answered
// without trouble (so the rate doubles each second) up to half the rate
// at which trouble last began, then a tenth of an exchange per second for
// every clean answer (the rate grows by a tenth each second, so that a
// registrar that recovered is used again within seconds), never above the configured
// ceiling. A 503 (RFC 3261 §21.5.4: the server is overloaded), a 500 or
// 408, or no answer at all halves it, down to a floor; exchanges that
// started before the last cut are part of the same trouble and do not cut
// it again. The registrar's Retry-After still delays the line it was sent
// for.
type pacer struct {
	limiter *rate.Limiter

	mu                sync.Mutex
	rate, ssthresh    float64
	floor, ceiling    float64
	lastCut           time.Time
	cuts, congestions uint64
}

func newPacer(start, floor, ceiling float64) *pacer {
	start = min(max(start, floor), ceiling)
	p := &pacer{rate: start, ssthresh: ceiling, floor: floor, ceiling: ceiling}
	p.limiter = rate.NewLimiter(rate.Limit(start), burstFor(start))
	return p
}

// burstFor allows a tenth of a second's worth at once: enough to keep
// the rate up despite timer granularity, not a burst a registrar notices.
func burstFor(r float64) int { return max(1, int(r/10)) }

// set changes the limiter; must hold p.mu.
func (p *pacer) set(r float64) {
	p.rate = r
	p.limiter.SetLimit(rate.Limit(r))
	p.limiter.SetBurst(burstFor(r))
}

// answered records an exchange answered without sign of overload.
func (p *pacer) answered() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rate >= p.ceiling {
		return
	}
	step := 1.0
	if p.rate >= p.ssthresh {
		step = 0.1 // linear: a tenth of the rate more each second
	}
	p.set(min(p.rate+step, p.ceiling))
}

// overloaded records an exchange that started at start and met a sign of
// overload (503, 500, 408, no answer).
func (p *pacer) overloaded(start time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.congestions++
	if start.Before(p.lastCut) {
		return
	}
	p.lastCut = time.Now()
	p.ssthresh = max(p.rate/2, p.floor)
	p.cuts++
	p.set(p.ssthresh)
}

// PacingStats is the state of the registration pacer.
type PacingStats struct {
	// Rate is the REGISTER exchanges per second allowed now; Ceiling the
	// configured maximum (sip.register_rate).
	Rate, Ceiling float64
	// Overloaded counts exchanges answered 503, 500 or 408, or not at
	// all; Cuts the times the rate was halved for them.
	Overloaded, Cuts uint64
}

func (p *pacer) stats() PacingStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PacingStats{Rate: p.rate, Ceiling: p.ceiling, Overloaded: p.congestions, Cuts: p.cuts}
}
