package bridge

import (
	"runtime/pprof"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// serving counts the goroutines of runners (runner.go).
func serving() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "bridge.(*runners).serve(")
}

// A runner is reused for the next line's loop while it waits, a loop
// that blocks gets a runner of its own, idle runners end, and close waits
// for them.
func TestRunners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRunners()
		base := serving()
		done := make(chan int, 3)
		r.run(func() { done <- 1 })
		<-done
		synctest.Wait()
		r.run(func() { done <- 2 }) // the first runner waits: reused
		<-done
		synctest.Wait()
		if n := serving() - base; n != 1 {
			t.Fatalf("%d runners after two loops one after the other, want 1", n)
		}
		block := make(chan struct{})
		r.run(func() { <-block })
		synctest.Wait()
		r.run(func() { done <- 3 }) // the only runner is busy: a new one
		<-done
		synctest.Wait()
		if n := serving() - base; n != 2 {
			t.Fatalf("%d runners with one loop blocked, want 2", n)
		}
		close(block)
		time.Sleep(5 * time.Second) // idle for more than two periods
		synctest.Wait()
		if n := serving() - base; n != 0 {
			t.Fatalf("%d runners left after idling, want 0", n)
		}
		r.run(func() {})
		r.close() // ends the waiting runner and waits for it
		if n := serving() - base; n != 0 {
			t.Fatalf("%d runners after close, want 0", n)
		}
	})
}
