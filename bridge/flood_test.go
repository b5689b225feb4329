package bridge_test

// Issue 11: a stranger's flood costs counters, not log lines, goroutines
// or other calls' time.

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mgsip/mgsip/mgcp"
)

// countHook counts log entries (any level).
type countHook struct{ n atomic.Int64 }

func (h *countHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *countHook) Fire(*logrus.Entry) error {
	h.n.Add(1)
	return nil
}

// TestStrangerFloodMGCP: 20,000 datagrams a second for 3 s from an address
// that is no gateway's (junk, commands for the gateway's endpoints,
// responses), with logging at debug level: at most a few sampled log
// lines, no goroutine growth, every datagram counted, and a call placed
// meanwhile rings the called line as usual.
func TestStrangerFloodMGCP(t *testing.T) {
	hook := &countHook{}
	logger := logrus.New()
	logger.SetLevel(logrus.DebugLevel)
	logger.SetOutput(discard{})
	logger.AddHook(hook)
	log := logrus.NewEntry(logger)
	allow := func(from netip.AddrPort) bool { return from.Addr() == netip.MustParseAddr("127.0.0.1") }
	e := newEnv(t, envOptions{log: log, caOpts: []mgcp.Option{mgcp.WithLogger(log), mgcp.WithAuthorizer(allow)}})
	base := hook.n.Load()
	goroutines := runtime.NumGoroutine()

	stranger, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	to := e.ca.LocalAddr()
	payloads := [][]byte{
		[]byte("\x00\xff garbage \r\n\r\n"),
		[]byte("NTFY 1234 aaln/1@gw.test MGCP 1.0\r\nX: 0\r\nO: L/hd\r\n"),
		[]byte("DLCX 1235 aaln/1@gw.test MGCP 1.0\r\nI: 1\r\n"),
		[]byte("RSIP 1236 * @gw.test MGCP 1.0\r\nRM: forced\r\n"),
		[]byte("200 77 OK\r\n"),
		[]byte("CRCX 99999999999 aaln/1@gw.test MGCP 1.0\r\n"),
	}
	const rate, seconds = 20000, 3
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for range rate * seconds / 200 { // batches of 200 every 10 ms
			<-tick.C
			for i := range 200 {
				if _, err := stranger.WriteTo(payloads[i%len(payloads)], to); err == nil {
					sent.Add(1)
				}
			}
		}
	}()
	peak := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 * (seconds + 2) { // every 50 ms while the flood lasts
			if sent.Load() >= rate*seconds {
				return
			}
			peak = max(peak, runtime.NumGoroutine())
			time.Sleep(50 * time.Millisecond)
		}
	}()

	time.Sleep(500 * time.Millisecond) // the flood is on
	start := time.Now()
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitFor("ringing", func() bool { return hasSignal(e.state("aaln/2"), "L/rg") })
	setup := time.Since(start)
	e.onHook("aaln/1")
	e.waitSignalState("aaln/2", armed)
	e.waitSignalState("aaln/1", armed)
	wg.Wait()
	<-done

	st := e.ca.Stats()
	t.Logf("sent %d, refused %d, parse errors %d, log lines %d, goroutines %d -> peak %d, call set up in %v",
		sent.Load(), st.Refused, st.ParseErrors, hook.n.Load()-base, goroutines, peak, setup)
	if lines := hook.n.Load() - base; lines > 3*seconds+10 {
		t.Errorf("%d log lines for %d datagrams from a stranger", lines, sent.Load())
	}
	// A stranger's datagrams are refused, whatever they hold: none of them
	// is a gateway's parse error.
	if st.Refused < uint64(sent.Load())/2 || st.ParseErrors != 0 {
		t.Errorf("refused %d, parse errors %d of %d sent", st.Refused, st.ParseErrors, sent.Load())
	}
	if peak > goroutines+20 {
		t.Errorf("goroutines grew from %d to %d during the flood", goroutines, peak)
	}
	if setup > 2*time.Second {
		t.Errorf("a call took %v to ring during the flood", setup)
	}
	if n := e.b.Refused(); n != 0 {
		t.Errorf("the bridge saw %d of the stranger's commands", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
