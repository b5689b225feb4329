package sip_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sipgosip "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/sip"
)

// BenchmarkRetainedPerCall measures the heap a finished call leaves
// behind in mgsip's SIP layer: one stack places calls (the caller's line,
// an outbound dialog), another answers them (the callee's line, an
// inbound dialog), both mgsip's own Stack, so that one call here is what
// mgsip holds for a line-to-line call through a PBX. Each call: INVITE,
// 100, 200, ACK, BYE, 200. The heap is read after every call ended and
// again after sipgo's transaction timers (Timer J/L = 64 x T1; T1 is
// shortened to 100 ms so that they run out in 6.4 s) are over.
//
// go test -run '^$' -bench RetainedPerCall -benchtime 1x -memprofile mem.out ./sip/
func BenchmarkRetainedPerCall(b *testing.B) {
	sipgosip.SetTimers(100*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond)
	defer sipgosip.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second)
	if os.Getenv("MGSIP_HEAP_PROFILES") != "" {
		runtime.MemProfileRate = 4096
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	calls := 5000
	if n, err := strconv.Atoi(os.Getenv("MGSIP_RETAIN_CALLS")); err == nil && n > 0 {
		calls = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newStack := func() *sip.Stack {
		s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}},
			Limits: sip.Limits{PeerRate: -1, LineInviteRate: -1, StrangerRate: -1}})
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = s.Serve(ctx) }()
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	caller, callee := newStack(), newStack()
	var active atomic.Int64 // dialogs the callee still serves
	var answerErrs atomic.Int64
	callee.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		active.Add(1)
		defer active.Add(-1)
		if err := d.Answer([]byte(offer)); err != nil {
			// A BYE handled before the ACK ends the dialog first
			// (seen under load); counted, not a failure of this
			// measurement.
			answerErrs.Add(1)
		}
		for range d.Events() {
		}
	}))
	for range b.N {
		runtime.GC()
		var before, ended, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		for i := range calls {
			sem <- struct{}{}
			wg.Add(1)
			go func(i int) {
				defer func() { <-sem; wg.Done() }()
				d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "2001"}, To: strconv.Itoa(100000 + i),
					Peer: callee.ListenerAddr(0).String(), SDP: []byte(offer)})
				if err != nil {
					b.Error(err)
					return
				}
				if e := <-d.Events(); e.Kind != sip.EventAnswered {
					b.Errorf("call: %+v", e)
					return
				}
				time.Sleep(20 * time.Millisecond) // a short call, not a BYE racing the ACK
				if err := d.Bye(ctx); err != nil {
					b.Error(err)
				}
				for range d.Events() {
				}
			}(i)
		}
		wg.Wait()
		for deadline := time.Now().Add(10 * time.Second); active.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		runtime.GC()
		runtime.ReadMemStats(&ended)
		heapProfile(b, "ended")
		time.Sleep(8 * time.Second) // 64 x T1 = 6.4 s, with room
		runtime.GC()
		runtime.ReadMemStats(&after)
		heapProfile(b, "after-timers")
		b.ReportMetric(float64(int64(ended.HeapAlloc)-int64(before.HeapAlloc))/float64(calls), "B/call-ended")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(calls), "B/call-after-timers")
		b.ReportMetric(float64(answerErrs.Load()), "answer-errors")
	}
}

// heapProfile writes a heap profile to $MGSIP_HEAP_PROFILES/name.pprof
// when that directory is set (for docs/benchmarks.md: go tool pprof
// -sample_index=inuse_space -top).
func heapProfile(b *testing.B, name string) {
	dir := os.Getenv("MGSIP_HEAP_PROFILES")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}
