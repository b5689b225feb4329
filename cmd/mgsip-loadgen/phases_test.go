package main

import (
	"testing"
	"time"
)

// phaseStats gives each phase's percentiles over all calls and its mean
// over the slowest 1 % by total setup time, so a tail can be pinned on
// a phase.
func TestPhaseStats(t *testing.T) {
	var lat []time.Duration
	var ph []phases
	for i := range 200 {
		p := phases{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond}
		if i%100 == 7 {
			p[3] = 500 * time.Millisecond // the two slowest calls wait in the answer phase
		}
		var sum time.Duration
		for _, d := range p {
			sum += d
		}
		lat, ph = append(lat, sum), append(ph, p)
	}
	pcts, slow := phaseStats(lat, ph)
	if got := pcts["answer"]; got[0] != 1 || got[2] != 500 {
		t.Fatalf("answer p50/p95/p99 %v, want p50 1 ms and p99 500 ms", got)
	}
	if got := pcts["digits"]; got != [3]float64{1, 1, 1} {
		t.Fatalf("digits %v, want 1 ms throughout", got)
	}
	if slow["answer"] != 500 || slow["digits"] != 1 {
		t.Fatalf("slowest 1 %%: %v, want the answer phase at 500 ms and the others at 1 ms", slow)
	}
	if p, s := phaseStats(nil, nil); p != nil || s != nil {
		t.Fatal("no calls: want no figures")
	}
}
