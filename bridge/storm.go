package bridge

import (
	"sync"
	"time"
)

// stormInFlight bounds how many lines run their start-up audit, restart
// or return-of-the-gateway work at once. Above the transaction window's
// ceiling (mgcp window_max, 256 by default) so that the window, not this
// bound, sets the pace toward the gateway; far below 100,000 lines, each
// of which would otherwise wake its goroutine at once and park it in the
// window's queue (about 9.5 KB of stack each: 950 MB for a wildcard RSIP
// on 100,000 lines).
const stormInFlight = 1024

// stormSlotTimeout frees a slot whose work never ran (the line was
// retired by a reload, or the bridge stopped, with the work queued).
const stormSlotTimeout = 2 * time.Minute

// storm queues the work that a start, an RSIP or a gateway's return
// gives to many lines at once, and hands it to the lines at most
// stormInFlight at a time, first come first served. Work for one line
// keeps its order; only its start waits. An idle line waiting here costs
// an entry in a slice, not a goroutine.
type storm struct {
	mu       sync.Mutex
	inFlight int
	queue    []stormWork
	head     int
	waited   int // works that waited in the queue since nothing ran
	total    int // works posted since nothing ran
}

type stormWork struct {
	l *line
	f func()
}

// stormPost runs f on l's goroutine when a slot is free.
func (b *Bridge) stormPost(l *line, f func()) {
	s := &b.storm
	s.mu.Lock()
	s.total++
	if s.inFlight >= stormInFlight {
		s.queue = append(s.queue, stormWork{l, f})
		s.waited++
		s.mu.Unlock()
		return
	}
	s.inFlight++
	s.mu.Unlock()
	b.stormRun(stormWork{l, f})
}

// stormRun posts w and, behind it, the release of its slot: the slot is
// held until the line has run w and brought the gateway in line (run's
// flush), so the bound covers the audit and the request that follows.
func (b *Bridge) stormRun(w stormWork) {
	var mu sync.Mutex
	var t *time.Timer
	released := false
	release := func() {
		mu.Lock()
		if released {
			mu.Unlock()
			return
		}
		released = true
		if t != nil {
			t.Stop()
		}
		mu.Unlock()
		b.stormNext()
	}
	mu.Lock()
	t = time.AfterFunc(stormSlotTimeout, release)
	mu.Unlock()
	f := w.f
	if !w.l.post(f) {
		go func() {
			w.l.postWait(f)
			w.l.postWait(release)
		}()
		return
	}
	if !w.l.post(release) {
		go w.l.postWait(release)
	}
}

// stormNext gives a freed slot to the next queued work, if any.
func (b *Bridge) stormNext() {
	s := &b.storm
	s.mu.Lock()
	if b.ctx != nil && b.ctx.Err() != nil {
		s.queue, s.head, s.inFlight = nil, 0, 0 // stopping: nothing more runs
		s.mu.Unlock()
		return
	}
	if s.head == len(s.queue) {
		s.inFlight--
		s.queue, s.head = nil, 0
		waited, total := 0, 0
		if s.inFlight == 0 {
			waited, total = s.waited, s.total
			s.waited, s.total = 0, 0
		}
		s.mu.Unlock()
		if waited > 0 && b.cfg.OnStormOver != nil {
			go b.cfg.OnStormOver(total)
		}
		return
	}
	w := s.queue[s.head]
	s.queue[s.head] = stormWork{}
	s.head++
	if s.head > 4096 && s.head*2 > len(s.queue) {
		s.queue = append(s.queue[:0:0], s.queue[s.head:]...) // let the drained front go
		s.head = 0
	}
	s.mu.Unlock()
	b.stormRun(w)
}

// stormQueued is how many lines wait for a slot (for tests).
func (b *Bridge) stormQueued() int {
	s := &b.storm
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) - s.head
}
