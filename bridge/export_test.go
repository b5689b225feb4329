package bridge

import "weak"

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
