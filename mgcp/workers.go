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

// worker is one goroutine serving commands. Its provisional-response
// timer is made once and re-armed for each command it serves.
type worker struct {
	ca *CallAgent
	// Guarded by ca.mu: the command being served and when it started.
	cur   work
	start time.Time
	prov  *time.Timer
}

// worker executes w, then the commands dispatched to it while it waits,
// until it has been idle for workerIdle or the CallAgent closes.
func (ca *CallAgent) worker(w work) {
	defer ca.wg.Done()
	wk := &worker{ca: ca}
	wk.prov = time.AfterFunc(time.Hour, wk.provisional)
	wk.prov.Stop()
	defer wk.prov.Stop()
	// The idle timer is not re-armed for every command (a timer change
	// per command costs more than it saves): when it fires after a busy
	// spell the worker waits one period more, so an idle worker ends
	// after one to two periods.
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	served := 0
	for {
		wk.execute(w)
		served++
		w = work{} // let the command be collected while waiting
		for w.c == nil {
			select {
			case w = <-ca.work:
			case <-idle.C:
				if served == 0 {
					return
				}
				served = 0
				idle.Reset(workerIdle)
			case <-ca.ctx.Done():
				return
			}
		}
	}
}

// execute serves one command with the worker's provisional timer armed.
func (wk *worker) execute(w work) {
	ca := wk.ca
	ca.mu.Lock()
	wk.cur, wk.start = w, time.Now()
	ca.mu.Unlock()
	wk.prov.Reset(ca.cfg.ProvisionalAfter)
	ca.execute(w.c, w.from, w.e)
	wk.prov.Stop()
	ca.mu.Lock()
	wk.cur = work{}
	ca.mu.Unlock()
}

// provisional sends "100 In progress" for a command still executing after
// Config.ProvisionalAfter (RFC 3435 §3.5.6). The timer may fire late for a
// command already answered, or for the previous one while the next has
// just begun: the checks below make those firings do nothing.
func (wk *worker) provisional() {
	ca := wk.ca
	ca.mu.Lock()
	w := wk.cur
	send := w.e != nil && w.e.wire == nil && !w.e.provSent && time.Since(wk.start) >= ca.cfg.ProvisionalAfter
	if send {
		w.e.provSent = true
	}
	ca.mu.Unlock()
	if send {
		ca.stats.provisionalSent.Add(1)
		_ = ca.write(provisional(w.c.TransactionID), w.from)
	}
}
