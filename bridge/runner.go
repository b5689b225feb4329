package bridge

import (
	"sync"
	"time"
)

// A line's owner goroutine ends when the line has no call and nothing is
// queued, so that idle lines cost no goroutine; the next call starts it
// again. Started afresh, a goroutine begins with a small stack and grows
// it (copying it each time it doubles) as the call's work goes deeper:
// that was about a third of the stack growth of mgsip's CPU profile under
// call load. The runners below keep the goroutines, and with them their
// grown stacks, for a while: a line that needs its goroutine takes an
// idle runner if one waits, and starts one otherwise; a runner that has
// served nothing for one to two runnerIdle periods ends. So the number of
// goroutines follows the lines busy in the last seconds, not the lines
// configured.

// runnerIdle is how long a runner waits for another line before it ends
// (it may wait up to twice that after a busy spell).
const runnerIdle = 2 * time.Second

// runners starts and reuses the goroutines that run lines' loops.
type runners struct {
	idle chan func() // runners waiting for work receive here
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newRunners() *runners {
	return &runners{idle: make(chan func()), stop: make(chan struct{})}
}

// run runs f on an idle runner, or on a new one.
func (r *runners) run(f func()) {
	select {
	case r.idle <- f:
		return
	default:
	}
	r.wg.Add(1)
	go r.serve(f)
}

func (r *runners) serve(f func()) {
	defer r.wg.Done()
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	served := 0
	for {
		f()
		served++
		f = nil
		for f == nil {
			select {
			case f = <-r.idle:
			case <-idle.C:
				if served == 0 {
					return
				}
				// Busy since the last tick: one more period. The timer
				// is not re-armed per line served (that costs more).
				served = 0
				idle.Reset(runnerIdle)
			case <-r.stop:
				return
			}
		}
	}
}

// close ends the idle runners and waits for them; the caller has waited
// for every line's loop already, so none is busy.
func (r *runners) close() {
	r.once.Do(func() { close(r.stop) })
	r.wg.Wait()
}
