package bridge

// Graceful stop in a cluster (docs/cluster.md, "Graceful stop: hand-over"):
// instead of hanging up, the node leaves its connected calls to the next
// owners of its gateways, who adopt them from the store as after a crash,
// but at once (the daemon revokes the node's lease right after).

import (
	"context"
	"sync"
	"time"
)

// HandOver prepares the node's exit for a hand-over: it waits (up to
// flush) until the store holds the newest state of every stored call, then
// each line forgets its calls another node can keep (connected, with a
// dialog and a connection: what the store holds) without a BYE or a DLCX,
// and ends the others (being set up, local, transfer legs) as a shutdown
// does, while this node still owns their gateways. The lines wait,
// unarmed, as after a loss. It returns the calls handed over; it waits
// for the lines until ctx ends. Call Drain first, so that no new call
// starts meanwhile.
func (b *Bridge) HandOver(ctx context.Context, flush time.Duration) int {
	if b.persist != nil {
		b.persist.flush(flush)
	}
	b.mu.Lock()
	lines := make([]*line, 0, len(b.lines))
	for _, l := range b.lines {
		lines = append(lines, l)
	}
	b.mu.Unlock()
	var mu sync.Mutex
	kept := 0
	var wg sync.WaitGroup
	for _, l := range lines {
		if !b.owns(l.rule.Gateway) {
			continue
		}
		wg.Add(1)
		done := func(n int) {
			mu.Lock()
			kept += n
			mu.Unlock()
			wg.Done()
		}
		select {
		case l.in <- func() { done(l.handOver()) }:
			l.kick()
		case <-ctx.Done():
			wg.Done()
		case <-l.ctx.Done():
			wg.Done()
		}
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	return kept
}

// handOver is HandOver on the line's goroutine: the calls the store holds
// are forgotten (the next owner keeps them), the others ended.
func (l *line) handOver() int {
	for _, c := range []*call{l.other, l.call} {
		if c != nil && !c.ended && (!storable(l, c) || !l.isPersisted(c)) {
			l.endCallOf(c, "shutdown", false)
		}
	}
	kept := 0
	for _, c := range []*call{l.other, l.call} {
		if c != nil && !c.ended {
			kept++
		}
	}
	if kept > 0 {
		l.forgetCalls()
	}
	return kept
}

func (l *line) isPersisted(c *call) bool {
	_, ok := l.persisted[c]
	return ok
}
