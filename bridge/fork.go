package bridge

import (
	"sync"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// Ring-all hunt groups: an incoming call rings every idle line of the
// group at once; the first to go off hook takes it and the others stop
// ringing. A coordinator goroutine owns the dialog's events until a line
// wins, then forwards them to that line.

type fork struct {
	d    *sip.Dialog
	done chan struct{} // closed when the call is over: releases ServeDialog

	mu         sync.Mutex
	lines      []*line
	winner     *line
	winnerCall *call
	over       bool // no line may take it any more
}

// claim makes l the line that answers; false when another was first or
// the call is over.
func (f *fork) claim(l *line, c *call) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.winner != nil || f.over {
		return false
	}
	f.winner, f.winnerCall = l, c
	return true
}

// stopOthers tells every ringing line but the winner to stop.
func (f *fork) stopOthers() {
	f.mu.Lock()
	lines, winner := append([]*line(nil), f.lines...), f.winner
	f.mu.Unlock()
	for _, l := range lines {
		if l != winner {
			l.postWait(func() { l.onForkStop(f) })
		}
	}
}

// serveRingAll offers the call to every idle line of the group.
func (b *Bridge) serveRingAll(d *sip.Dialog, hg *mapping.HuntGroupRule) {
	lines := b.huntLines(hg)
	f := &fork{d: d, done: make(chan struct{})}
	// Ring the caller first: sipgo's session may not be written from two
	// goroutines unordered, and the lines answer from theirs.
	_ = d.Ring()
	for _, l := range lines {
		taken := make(chan bool, 1)
		if !l.post(func() { taken <- l.onForkOffer(f) }) {
			continue
		}
		if b.awaitTaken(taken) {
			f.mu.Lock()
			f.lines = append(f.lines, l)
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	n := len(f.lines)
	f.mu.Unlock()
	if n == 0 {
		_ = d.Reject(486, "Busy Here")
		return
	}
	go b.coordinate(f)
	b.await(f.done)
}

// coordinate handles the dialog's events for a forked call: before a
// line wins, a cancel or the ring timeout stops every line; after, events
// go to the winner.
func (b *Bridge) coordinate(f *fork) {
	timeout := time.NewTimer(b.cfg.RingTimeout)
	defer timeout.Stop()
	events := f.d.Events()
	finish := func() {
		f.mu.Lock()
		f.over = true
		won := f.winner != nil
		f.mu.Unlock()
		f.stopOthers()
		if !won {
			close(f.done)
		}
	}
	for {
		select {
		case e, ok := <-events:
			f.mu.Lock()
			w, c := f.winner, f.winnerCall
			f.mu.Unlock()
			if w != nil {
				if !ok {
					w.postWait(func() { w.onSIPEnd(c) })
					return
				}
				w.postWait(func() { w.onSIP(c, e) })
				continue
			}
			if !ok || e.Kind == sip.EventCancelled || e.Kind == sip.EventBye || e.Kind == sip.EventFailed {
				finish()
				return
			}
		case <-timeout.C:
			f.mu.Lock()
			won := f.winner != nil
			f.mu.Unlock()
			if !won {
				_ = f.d.Reject(480, "Temporarily Unavailable")
				finish()
				return
			}
		}
	}
}

// onForkOffer: ring this line for a forked call if it is free.
func (l *line) onForkOffer(f *fork) bool {
	if !l.free() || !l.b.accepting(l.rule.Gateway) {
		return false
	}
	c, remote, err := l.newIncoming(f.d)
	if err != nil {
		return false
	}
	// Not this line's dialog until it wins (claim).
	c.dialog, c.fork = nil, f
	l.adopt(c)
	l.state = stRinging
	c.ring = l.ringSignals(f.d)
	if err := l.createConnection(c, mgcp.ModeRecvOnly, remote); err != nil {
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return false
	}
	return true
}

// takeFork: the phone went off hook while a forked call rings it. The
// first line takes the call; a later one gets an ordinary dial tone.
func (l *line) takeFork(c *call) {
	f := c.fork
	if !f.claim(l, c) {
		c.result = "answered elsewhere"
		c.fork = nil
		l.endCall(c.result, true)
		l.arm()
		l.onOffHook() // an ordinary dial tone
		return
	}
	c.dialog, c.done, c.fork = f.d, f.done, nil
	f.stopOthers()
	l.answer()
}

// onForkStop: the forked call was taken by another line or ended.
func (l *line) onForkStop(f *fork) {
	c := l.call
	if c == nil || c.fork != f {
		return
	}
	f.mu.Lock()
	taken := f.winner != nil
	f.mu.Unlock()
	c.result = "cancelled"
	if taken {
		c.result = "answered elsewhere"
	}
	c.fork = nil
	l.endCall(c.result, true)
	l.settle("L/ro")
}
