package mgcp

import (
	"net/netip"
	"time"
)

// Incoming commands run on workers, not on the read loop: one slow handler
// must not hold up the datagrams of every other gateway. A worker is a
// goroutine that serves one command, then waits a while for the next one
// before it ends. Starting a fresh goroutine for every command cost a
// goroutine start and, above all, the growth of its stack (2 KiB, then
// copied to 4, 8, 16 KiB as the parser's results, the handler and the
// serializer go deeper) on every command; a worker that is reused keeps
// the stack it grew. The number of workers is bounded by
// Config.MaxInFlight like the goroutines were (a command beyond it gets
// 409 in onCommand), and idle ones end after workerIdle, so an idle call
// agent holds no goroutine but its read loop and janitor.

// workerIdle is how long a worker waits for another command before it
// ends.
const workerIdle = 2 * time.Second

// work is one command to execute.
type work struct {
	c    *Command
	from netip.AddrPort
	e    *cached
}

// dispatch hands w to an idle worker, or starts one. The caller has
// counted w in ca.inflight.
func (ca *CallAgent) dispatch(w work) {
	select {
	case ca.work <- w: // an idle worker was waiting on the channel
		return
	default:
	}
	ca.mu.Lock()
	if ca.ctx.Err() != nil {
		// Closed meanwhile: wg may be waited on already.
		ca.inflight--
		ca.mu.Unlock()
		return
	}
	ca.wg.Add(1)
	ca.mu.Unlock()
	go ca.worker(w)
}

// worker executes w, then the commands dispatched to it while it waits,
// until it has been idle for workerIdle or the CallAgent closes.
func (ca *CallAgent) worker(w work) {
	defer ca.wg.Done()
	var idle *time.Timer
	for {
		ca.execute(w.c, w.from, w.e)
		w = work{} // let the command be collected while waiting
		if idle == nil {
			idle = time.NewTimer(workerIdle)
			defer idle.Stop()
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case w = <-ca.work:
		case <-idle.C:
			return
		case <-ca.ctx.Done():
			return
		}
	}
}
