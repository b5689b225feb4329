package bridge

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
