package bridge

import (
	"weak"

	"github.com/mgsip/mgsip/sip"
)

// StormQueued and RunningLines let the external tests watch the storm
// queue (storm.go).
func (b *Bridge) StormQueued() int { return b.stormQueued() }

// RunningLines counts the lines whose goroutine runs.
func (b *Bridge) RunningLines() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		if l.running.Load() {
			n++
		}
	}
	return n
}

// StormInFlight is the storm queue's bound.
const StormInFlight = stormInFlight

// WeakCall is a weak pointer to the active call of the line on endpoint
// ep (read on the line's goroutine), to see when an ended call is freed.
func (b *Bridge) WeakCall(ep string) weak.Pointer[call] {
	l := b.lineByEndpoint(ep)
	ch := make(chan weak.Pointer[call], 1)
	l.postWait(func() { ch <- weak.Make(l.call) })
	return <-ch
}

// LineConns are the connections the line on endpoint ep holds, as it
// published them after its last input (active call and held or waiting
// call): connection id and MGCP call id of each.
func (b *Bridge) LineConns(ep string) [][2]string {
	l := b.lineByEndpoint(ep)
	if l == nil {
		return nil
	}
	var out [][2]string
	if refs := l.conns.Load(); refs != nil {
		for _, r := range *refs {
			out = append(out, [2]string{r.conn, r.call})
		}
	}
	return out
}

// LineDialogs are the SIP Call-IDs of the line's calls (active and held
// or waiting), as published after its last input.
func (b *Bridge) LineDialogs(ep string) []string {
	l := b.lineByEndpoint(ep)
	if l == nil {
		return nil
	}
	var out []string
	if p := l.referPolicy.Load(); p != nil {
		for _, d := range []*sip.Dialog{p.dialog, p.other} {
			if d != nil {
				out = append(out, d.CallID)
			}
		}
	}
	return out
}
