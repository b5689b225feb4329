package bridge_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mgcp"
)

// TestStormBounded: a wildcard RSIP on more lines than the storm queue's
// bound wakes at most that many line goroutines while the gateway is slow
// to answer the audits; the others wait in the queue (no goroutine each)
// and every line ends audited and armed once the gateway answers.
func TestStormBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("1,300 lines")
	}
	const lines = bridge.StormInFlight + 276
	var hold atomic.Bool
	release := make(chan struct{})
	over := make(chan int, 4)
	// A gateway slow to answer the start-up audits (50 ms each), so that
	// they outlast the handing out of the lines' work even on a loaded
	// machine and the start-up must queue (a quick gateway could finish
	// the first lines' audits while later lines were still handed out).
	var starting atomic.Bool
	starting.Store(true)
	e := newEnv(t, envOptions{lines: lines, respond: func(cmd *mgcp.Command) *mgcp.Response {
		if cmd.Verb == mgcp.VerbAUEP && starting.Load() {
			time.Sleep(50 * time.Millisecond)
		}
		if cmd.Verb == mgcp.VerbAUEP && hold.Load() {
			<-release
		}
		return nil
	}, stormOver: func(n int) { over <- n }})
	starting.Store(false)
	// The start-up audits were a storm too (more lines than the bound).
	select {
	case n := <-over:
		if n != lines {
			t.Errorf("start-up storm over with %d lines, want %d", n, lines)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the start-up storm never ended")
	}
	hold.Store(true)
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.Restart(ctx, "*", mgcp.RestartRestart, 0)
	})
	deadline := time.Now().Add(20 * time.Second)
	for e.b.StormQueued() != lines-bridge.StormInFlight {
		if time.Now().After(deadline) {
			t.Fatalf("%d lines queued, want %d", e.b.StormQueued(), lines-bridge.StormInFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.b.RunningLines(); n > bridge.StormInFlight {
		t.Errorf("%d line goroutines run, want at most %d", n, bridge.StormInFlight)
	}
	hold.Store(false)
	close(release)
	for i := 1; i <= lines; i++ {
		e.waitSignalState("aaln/"+strconv.Itoa(i), armed)
	}
	if n := e.b.StormQueued(); n != 0 {
		t.Errorf("%d lines still queued", n)
	}
	select {
	case n := <-over:
		if n != lines {
			t.Errorf("RSIP storm over with %d lines, want %d", n, lines)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the RSIP storm never ended")
	}
	// One line's RSIP waits for nobody: no storm.
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.Restart(ctx, "aaln/7", mgcp.RestartRestart, 0)
	})
	e.waitSignalState("aaln/7", armed)
	select {
	case n := <-over:
		t.Errorf("one line's RSIP reported as a storm of %d", n)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestEndedCallReleased: once a call is over nothing keeps it: its
// no-answer (3 min) and ring (60 s) time-outs are stopped with it, so an
// ended call's state, dialog and messages are garbage at once instead of
// piling up for minutes under load (issue 12: tens of KB per call).
func TestEndedCallReleased(t *testing.T) {
	e := newEnv(t, envOptions{register: true, lines: 3})
	// Through the PBX: the caller's call had a no-answer time-out.
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	out := e.b.WeakCall("aaln/1@gw.test")
	// Line to line: the callee's call had a ring time-out.
	e.offHook("aaln/2")
	e.dial("aaln/2", "1003")
	e.waitSignal("aaln/3", "L/rg")
	e.offHook("aaln/3")
	e.waitFor("local answer", func() bool { return e.conn("aaln/2").Mode == mgcp.ModeSendRecv })
	in := e.b.WeakCall("aaln/3@gw.test")
	if out.Value() == nil || in.Value() == nil {
		t.Fatal("no active calls to watch")
	}
	for _, ep := range []string{"aaln/1", "aaln/2", "aaln/3"} {
		e.onHook(ep)
	}
	for range 3 {
		e.record()
	}
	for _, ep := range []string{"aaln/1", "aaln/2", "aaln/3"} {
		e.waitSignalState(ep, armed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for out.Value() != nil || in.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("ended calls still referenced 10 s later: outgoing %v, incoming %v", out.Value() != nil, in.Value() != nil)
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}
