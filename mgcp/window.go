package mgcp

import (
	"context"
	"fmt"
	"net/netip"
)

// The transaction window.
//
// Every command the CallAgent sends to a peer holds one slot of that
// peer's window from its first transmission until its final response (or
// until it gives up); commands beyond the window wait in a bounded FIFO
// queue. The window adapts like TCP's congestion window (RFC 5681):
//
//   - it starts at WindowInitial and grows by one slot for every command
//     answered without a retransmission until it reaches the slow-start
//     threshold, then by about one slot per window's worth of clean
//     answers (additive increase), up to WindowMax;
//   - a retransmission halves it (multiplicative decrease), and so does a
//     409 "processing overload" or 403 "insufficient resources" answer:
//     RFC 3435 backs retransmissions off exponentially because a missing
//     answer is taken as congestion (§3.5.3, §4.3) and asks a sender to
//     slow down when its peer reports overload (§4.4.8); a gateway
//     flooded by more commands than it can execute (a restart avalanche,
//     §4.4.6, or the call agent's start-up audit of every endpoint) loses
//     them first;
//   - a transaction that gives up (Max2 / T-max) shrinks it to WindowMin.
//
// One loss event halves the window once: the transactions already in
// flight when the window was cut are likely to have been lost in the same
// burst, so their retransmissions do not cut it again (the "recovery
// point" of NewReno, RFC 6582 §3.2). The window is counted in commands,
// not bytes: what a gateway runs out of is the CPU to execute them.

// windowSlot is one acquired slot; release gives it back. The zero value
// (p nil) is no slot: the peer table was full. It is a value, so that
// acquiring one allocates nothing.
type windowSlot struct {
	p   *peer
	seq uint64 // send sequence number, for the recovery point
}

// waiter is a command queued behind a full window.
type waiter struct {
	ready chan struct{} // closed when granted a slot
	seq   uint64        // set with the grant
	gone  bool          // gave up waiting (its context ended) before the grant
}

// acquire takes a slot of addr's window, waiting in the peer's queue when
// the window is full. A zero slot with a nil error means the peer is not
// tracked (peer table full): the command goes unwindowed.
func (ca *CallAgent) acquire(ctx context.Context, addr netip.AddrPort) (windowSlot, error) {
	ca.mu.Lock()
	p := ca.getPeer(addr)
	if p == nil {
		ca.mu.Unlock()
		return windowSlot{}, nil
	}
	ca.initWindow(p)
	if p.outstanding < p.windowSize() && p.queued == 0 {
		p.outstanding++
		p.sendSeq++
		seq := p.sendSeq
		ca.mu.Unlock()
		return windowSlot{p: p, seq: seq}, nil
	}
	if p.queued >= ca.cfg.WindowQueue {
		ca.mu.Unlock()
		ca.stats.queueFull.Add(1)
		return windowSlot{}, fmt.Errorf("%w: %d commands queued for %s", ErrQueueFull, ca.cfg.WindowQueue, addr)
	}
	w := &waiter{ready: make(chan struct{})}
	p.queue = append(p.queue, w)
	p.queued++
	ca.stats.windowWaits.Add(1)
	ca.mu.Unlock()

	select {
	case <-w.ready:
		return windowSlot{p: p, seq: w.seq}, nil
	case <-ctx.Done():
		return windowSlot{}, ca.abandon(p, w, ctx.Err())
	case <-ca.ctx.Done():
		return windowSlot{}, ca.abandon(p, w, ErrClosed)
	}
}

// abandon takes a waiter out of the queue after its caller stopped
// waiting; a slot granted meanwhile is given back.
func (ca *CallAgent) abandon(p *peer, w *waiter, err error) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	select {
	case <-w.ready:
		p.outstanding--
		ca.grant(p)
	default:
		w.gone = true
		p.queued--
	}
	return err
}

// release gives a slot back and lets the next queued commands go.
func (ca *CallAgent) release(s *windowSlot) {
	if s.p == nil {
		return
	}
	ca.mu.Lock()
	s.p.outstanding--
	ca.grant(s.p)
	ca.mu.Unlock()
}

// grant hands free slots to queued commands, oldest first. Must hold ca.mu.
func (ca *CallAgent) grant(p *peer) {
	for p.queued > 0 && p.outstanding < p.windowSize() {
		w := p.queue[p.qhead]
		p.queue[p.qhead] = nil
		p.qhead++
		if w.gone {
			continue
		}
		p.queued--
		p.outstanding++
		p.sendSeq++
		w.seq = p.sendSeq
		close(w.ready)
	}
	if p.qhead == len(p.queue) {
		p.queue, p.qhead = p.queue[:0], 0
	} else if p.qhead > 1024 && p.qhead > len(p.queue)/2 {
		n := copy(p.queue, p.queue[p.qhead:])
		clear(p.queue[n:])
		p.queue, p.qhead = p.queue[:n], 0
	}
}

// initWindow sets a new peer's window. Must hold ca.mu.
func (ca *CallAgent) initWindow(p *peer) {
	if p.cwnd == 0 {
		p.cwnd = float64(ca.cfg.WindowInitial)
		p.ssthresh = float64(ca.cfg.WindowMax)
	}
}

// windowSize is the whole number of slots the window allows now.
func (p *peer) windowSize() int { return int(p.cwnd) }

// onAnswered grows the window after a command answered without a
// retransmission. Must hold ca.mu.
func (ca *CallAgent) onAnswered(s *windowSlot) {
	p := s.p
	if p.cwnd < p.ssthresh {
		p.cwnd++ // slow start: doubles per round trip
	} else {
		p.cwnd += 1 / p.cwnd // congestion avoidance: one slot per round trip
	}
	p.cwnd = min(p.cwnd, float64(ca.cfg.WindowMax))
	ca.grant(p)
}

// onCongestion halves the window (retransmission, overload answer) or,
// when collapse is set (a transaction gave up), shrinks it to the
// minimum; only once per loss event. Must hold ca.mu.
func (ca *CallAgent) onCongestion(s *windowSlot, collapse bool) {
	p := s.p
	if s.seq <= p.recoverSeq {
		if collapse && p.cwnd > float64(ca.cfg.WindowMin) {
			// Still the same loss event, but a transaction gave up
			// altogether: the peer is not keeping up even with half.
			p.cwnd = float64(ca.cfg.WindowMin)
			ca.stats.windowDecreases.Add(1)
		}
		return
	}
	p.recoverSeq = p.sendSeq
	p.ssthresh = max(p.cwnd/2, float64(ca.cfg.WindowMin))
	if collapse {
		p.cwnd = float64(ca.cfg.WindowMin)
	} else {
		p.cwnd = p.ssthresh
	}
	ca.stats.windowDecreases.Add(1)
}
