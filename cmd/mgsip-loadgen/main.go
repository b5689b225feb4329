// Command mgsip-loadgen is a gateway load generator for benchmarks: one
// process that plays a residential gateway with many analog lines
// (mgcp/mgcptest's strict fake gateway over real UDP) and places calls
// between pairs of its own lines at stepped rates. Line 2k-1 dials the
// number of line 2k; the callee's phone is picked up when the call agent
// rings it. It is a development tool (the architecture allows *test
// packages in load tools), kept out of cmd/mgsip so that the daemon's
// binary carries no test code and so that the load runs in a process of
// its own. See docs/benchmarks.md ("Call load on the real path").
//
// It waits until every line is armed, prints "armed", then waits for a
// line on stdin before the first step; each step prints one JSON object;
// it exits when stdin closes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// StepResult is what one rate step measured (printed as JSON).
type StepResult struct {
	Rate         int    `json:"rate"`
	Calls        int    `json:"calls"`
	Failed       int    `json:"failed"`
	NoLine       int    `json:"no_free_line"`
	FirstFailure string `json:"first_failure,omitempty"`
	// Failures counts the failed calls by what failed (the endpoint
	// left out).
	Failures    map[string]int `json:"failures,omitempty"`
	P50ms       float64        `json:"setup_p50_ms"`
	P95ms       float64        `json:"setup_p95_ms"`
	P99ms       float64        `json:"setup_p99_ms"`
	Seconds     float64        `json:"seconds"`
	CPU         float64        `json:"loadgen_cpu_cores"`
	MGCPPerCall float64        `json:"mgcp_commands_per_call"`
	// The gateway's own transaction layer (its NTFYs to the call agent):
	// retransmissions and timeouts in the step, its window at the end.
	Retransmissions uint64 `json:"gateway_retransmissions"`
	Timeouts        uint64 `json:"gateway_timeouts"`
	Window          int    `json:"gateway_window"`
	WindowWaits     uint64 `json:"gateway_window_waits"`
	WindowCuts      uint64 `json:"gateway_window_cuts"`
	// Phases splits the setup time of the connected calls: p50, p95 and
	// p99 in ms of each phase (phaseNames), and the same phases of the
	// slowest 1 % of calls (Slow: the mean of each phase over them), so
	// that a tail can be told apart from a slow phase.
	Phases map[string][3]float64 `json:"phases_ms,omitempty"`
	Slow   map[string]float64    `json:"slowest_1pct_mean_ms,omitempty"`
}

// The phases of a call's setup, in order (call).
var phaseNames = [...]string{
	"off-hook",     // off-hook until dial tone (NTFY answered, or embedded)
	"digits",       // the digits' NTFY until its answer
	"to-ring",      // answered digits until the callee rings (mgsip, Kamailio, mgsip, CRCX, RQNT)
	"answer",       // ringing seen until the callee's off-hook NTFY is answered
	"to-connected", // answered off-hook until the caller's MDCX send-receive
}

type phases [len(phaseNames)]time.Duration

// signals routes what the call agent asks of each endpoint to the call
// waiting for it.
type signals struct {
	mu       sync.Mutex
	dialTone map[string]chan struct{} // RQNT or CRCX/MDCX playing L/dl, or E(S(L/dl)) given on off-hook
	ringing  map[string]chan struct{} // L/rg requested on the callee
	answered map[string]chan struct{} // MDCX send-receive on the caller
}

func (s *signals) watch(cmd *mgcp.Command) *mgcp.Response {
	var chans []chan struct{}
	s.mu.Lock()
	ep := cmd.Endpoint.Local
	for _, sg := range cmd.Signals {
		switch {
		case sg.Is("L", "dl"):
			chans = append(chans, s.dialTone[ep])
		case sg.Is("L", "rg"):
			chans = append(chans, s.ringing[ep])
		}
	}
	if cmd.Verb == mgcp.VerbMDCX && cmd.Mode == mgcp.ModeSendRecv {
		chans = append(chans, s.answered[ep])
	}
	s.mu.Unlock()
	for _, ch := range chans {
		if ch != nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	return nil // the gateway's own behaviour answers
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func waitCh(ctx context.Context, ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:2427", "gateway MGCP address")
	ca := flag.String("ca", "127.0.0.1:2727", "call agent address")
	domain := flag.String("domain", "load.test", "endpoint domain")
	lines := flag.Int("lines", 2000, "lines (an even number: pairs call each other)")
	first := flag.Int("first-user", 100001, "SIP user of aaln/1 (aaln/N is first-user+N-1)")
	ratesFlag := flag.String("rates", "100,200,400", "calls per second, one step each")
	step := flag.Duration("step", 5*time.Second, "length of a step")
	talk := flag.Duration("talk", time.Second, "hold time of a call")
	windowMax := flag.Int("window-max", 0, "the gateway's own MGCP transaction window ceiling (0: the default)")
	sockBuf := flag.Int("socket-buffer", mgcp.DefaultSocketBuffer, "receive and send buffer of the gateway's UDP socket, bytes (0: the kernel's default)")
	storm := flag.Bool("storm", false, "cold storm instead of rate steps: every line sends its own RSIP (restart) at the gateway's pace, then one wildcard RSIP; each is timed until every line is armed again, then calls are placed at the first -rates entry for one -step, 5 s after the last RSIP")
	flag.Parse()
	if err := run(*listen, *ca, *domain, *lines, *first, *ratesFlag, *step, *talk, *windowMax, *sockBuf, *storm); err != nil {
		fmt.Fprintln(os.Stderr, "mgsip-loadgen:", err)
		os.Exit(1)
	}
}

func run(listen, ca, domain string, lines, first int, ratesFlag string, step, talk time.Duration, windowMax, sockBuf int, storm bool) error {
	if lines < 2 || lines%2 != 0 {
		return fmt.Errorf("-lines must be an even number >= 2")
	}
	var rates []int
	for _, f := range strings.Split(ratesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -rates entry %q", f)
		}
		rates = append(rates, n)
	}
	sg := &signals{dialTone: map[string]chan struct{}{}, ringing: map[string]chan struct{}{}, answered: map[string]chan struct{}{}}
	for i := 1; i <= lines; i++ {
		ep := "aaln/" + strconv.Itoa(i)
		sg.dialTone[ep] = make(chan struct{}, 1)
		sg.ringing[ep] = make(chan struct{}, 1)
		sg.answered[ep] = make(chan struct{}, 1)
	}
	conn, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	if sockBuf > 0 {
		// So that the generator is not where datagrams are lost.
		rcv, snd, err := mgcp.SetSocketBuffers(conn, sockBuf)
		if err != nil {
			_ = conn.Close()
			return err
		}
		if (rcv >= 0 && rcv < sockBuf) || (snd >= 0 && snd < sockBuf) {
			fmt.Fprintf(os.Stderr, "mgsip-loadgen: asked %d-byte socket buffers, the kernel granted receive %d, send %d (net.core.rmem_max/wmem_max)\n", sockBuf, rcv, snd)
		}
	}
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: conn, Domain: domain, Lines: lines, CallAgent: ca,
		NoRecord: true, Respond: sg.watch, DisconnectedInitial: -1, DigitTimeout: 4 * time.Second,
		MGCP: mgcp.Config{MaxCachedPerPeer: 1 << 20, WindowMax: windowMax, WindowInitial: min(16, windowMax)}})
	if err != nil {
		return err
	}
	defer gw.Close()
	// Every line armed for off-hook (mgsip audits and arms them at start).
	if n := waitArmed(gw, lines, 5*time.Minute); n > 0 {
		return fmt.Errorf("%d lines not armed after 5 minutes", n)
	}
	fmt.Println("armed")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	free := make(chan int, lines/2)
	for p := 0; p < lines/2; p++ {
		free <- p
	}
	enc := json.NewEncoder(os.Stdout)
	if storm {
		for _, res := range coldStorm(gw, lines) {
			if err := enc.Encode(res); err != nil {
				return err
			}
		}
		// Calls 5 s after the last RSIP (coldStorm returns when the
		// wildcard RSIP was answered and its lines armed, or gave up).
		rates = rates[:1]
	}
	for _, rate := range rates {
		res := loadStep(gw, sg, free, rate, step, talk, first)
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	// Stay (and keep the lines) until stdin closes, so that whoever runs
	// the benchmark can read this process's usage after the last step.
	_, _ = io.Copy(io.Discard, in)
	return nil
}

// armed: the endpoint's request watches for off-hook.
func armed(gw *mgcptest.Gateway, ep string) bool {
	st, ok := gw.State(ep)
	return ok && slices.ContainsFunc(st.RequestedEvents, func(r mgcp.RequestedEvent) bool { return r.Event.Is("L", "hd") })
}

// waitArmed waits until every line is armed, or for at most d; it returns
// how many are not.
func waitArmed(gw *mgcptest.Gateway, lines int, d time.Duration) int {
	deadline := time.Now().Add(d)
	i := 1
	for {
		for i <= lines && armed(gw, "aaln/"+strconv.Itoa(i)) {
			i++
		}
		if i > lines {
			return 0
		}
		if time.Now().After(deadline) {
			n := 0
			for ; i <= lines; i++ {
				if !armed(gw, "aaln/"+strconv.Itoa(i)) {
					n++
				}
			}
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StormResult is one phase of the cold storm (printed as JSON).
type StormResult struct {
	Phase string `json:"phase"` // "per-endpoint" or "wildcard"
	Lines int    `json:"lines"`
	// RSIPs sent (one per line, or one wildcard), how many failed (no
	// answer after the gateway's retransmissions, or an error code), and
	// when the last one was answered.
	RSIPs       int     `json:"rsips"`
	RSIPFailed  int     `json:"rsip_failed"`
	LastRSIPSec float64 `json:"last_rsip_answered_s"`
	// Armed: seconds from the first RSIP until every line was armed again
	// (-1: not within the deadline); Lost: lines still not armed then.
	ArmedSec float64 `json:"all_armed_s"`
	Lost     int     `json:"lost_lines"`
	// The gateway's transaction layer during the phase (its RSIPs and the
	// answers to mgsip's audits and requests).
	Retransmissions uint64 `json:"gateway_retransmissions"`
	Timeouts        uint64 `json:"gateway_timeouts"`
	CommandsFromCA  uint64 `json:"commands_from_call_agent"`
	Window          int    `json:"gateway_window"`
}

// coldStorm restarts every line, first one RSIP per endpoint sent as fast
// as the gateway's own transaction window lets them go (RFC 3435 §4.4.6:
// a gateway restarting its endpoints one by one), then the whole gateway
// with one wildcard RSIP (restart method, no delay; "*", §2.1.2); after
// each, it waits until mgsip has audited and re-armed every line. It
// returns 5 s after the last RSIP's answer (or once the lines are armed,
// if that took longer).
func coldStorm(gw *mgcptest.Gateway, lines int) []StormResult {
	const deadline = 3 * time.Minute
	var out []StormResult
	var lastRSIP time.Time
	phase := func(name string, send func() (n, failed int)) {
		st0 := gw.Agent().Stats()
		t0 := time.Now()
		n, failed := send()
		lastRSIP = time.Now()
		last := lastRSIP.Sub(t0)
		lost := waitArmed(gw, lines, deadline-time.Since(t0))
		res := StormResult{Phase: name, Lines: lines, RSIPs: n, RSIPFailed: failed, LastRSIPSec: last.Seconds(),
			ArmedSec: time.Since(t0).Seconds(), Lost: lost}
		if lost > 0 {
			res.ArmedSec = -1
		}
		st := gw.Agent().Stats()
		res.Retransmissions, res.Timeouts = st.Retransmissions-st0.Retransmissions, st.Timeouts-st0.Timeouts
		res.CommandsFromCA = st.CommandsReceived - st0.CommandsReceived
		for _, p := range gw.Agent().Peers() {
			res.Window = max(res.Window, p.Window)
		}
		out = append(out, res)
	}
	phase("per-endpoint", func() (int, int) {
		// More senders than the gateway's window has slots: the window,
		// not this pool, sets the pace.
		eps := make(chan string, 1024)
		var failed atomic.Int64
		var wg sync.WaitGroup
		for range 1024 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ep := range eps {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					r, err := gw.Restart(ctx, ep, mgcp.RestartRestart, 0)
					cancel()
					if err != nil || !r.Code.IsSuccess() {
						failed.Add(1)
					}
				}
			}()
		}
		for i := 1; i <= lines; i++ {
			eps <- "aaln/" + strconv.Itoa(i)
		}
		close(eps)
		wg.Wait()
		return lines, int(failed.Load())
	})
	phase("wildcard", func() (int, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if r, err := gw.Restart(ctx, "*", mgcp.RestartRestart, 0); err != nil || !r.Code.IsSuccess() {
			return 1, 1
		}
		return 1, 0
	})
	time.Sleep(time.Until(lastRSIP.Add(5 * time.Second)))
	return out
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func loadStep(gw *mgcptest.Gateway, sg *signals, free chan int, rate int, step, talk time.Duration, first int) StepResult {
	cpu0, wall := cpuSeconds(), time.Now()
	st0 := gw.Agent().Stats()
	var mu sync.Mutex
	var lat []time.Duration
	var ph []phases
	var fails, noLine, placed atomic.Int64
	var firstFail atomic.Value
	failures := map[string]int{}
	var wg sync.WaitGroup
	total := int(float64(rate) * step.Seconds())
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for range total {
		<-tick.C
		var pair int
		select {
		case pair = <-free:
		default:
			noLine.Add(1)
			continue
		}
		placed.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			caller, callee := "aaln/"+strconv.Itoa(2*pair+1), "aaln/"+strconv.Itoa(2*pair+2)
			ok := call(gw, sg, caller, callee, strconv.Itoa(first+2*pair+1), talk, func(d time.Duration, p phases) {
				mu.Lock()
				lat = append(lat, d)
				ph = append(ph, p)
				mu.Unlock()
			}, func(what string) {
				fails.Add(1)
				firstFail.CompareAndSwap(nil, what)
				// "aaln/7 digits: <response>" -> "digits", "aaln/7: never rang" -> "never rang"
				k := strings.TrimLeft(strings.TrimLeft(what, "aln/0123456789"), ": ")
				k, _, _ = strings.Cut(k, ":")
				mu.Lock()
				failures[k]++
				mu.Unlock()
			})
			if ok {
				// Both lines are free again once mgsip re-armed them.
				time.Sleep(300 * time.Millisecond)
			} else {
				time.Sleep(5 * time.Second)
			}
			free <- pair
		}()
	}
	wg.Wait()
	el := time.Since(wall)
	res := StepResult{Rate: rate, Calls: int(placed.Load()), Failed: int(fails.Load()), NoLine: int(noLine.Load()),
		Seconds: el.Seconds(), CPU: (cpuSeconds() - cpu0) / el.Seconds()}
	if v, ok := firstFail.Load().(string); ok {
		res.FirstFailure = v
	}
	if len(failures) > 0 {
		res.Failures = failures
	}
	if res.Calls > 0 {
		st := gw.Agent().Stats()
		res.MGCPPerCall = float64(st.CommandsSent+st.CommandsReceived-st0.CommandsSent-st0.CommandsReceived) / float64(res.Calls)
	}
	st := gw.Agent().Stats()
	res.Retransmissions, res.Timeouts = st.Retransmissions-st0.Retransmissions, st.Timeouts-st0.Timeouts
	res.WindowWaits, res.WindowCuts = st.WindowWaits-st0.WindowWaits, st.WindowDecreases-st0.WindowDecreases
	for _, p := range gw.Agent().Peers() {
		res.Window = max(res.Window, p.Window)
	}
	res.Phases, res.Slow = phaseStats(lat, ph)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	res.P50ms, res.P95ms, res.P99ms = pct(0.50), pct(0.95), pct(0.99)
	return res
}

// phaseStats gives p50/p95/p99 of every phase, and each phase's mean over
// the slowest 1 % of calls by setup time (lat[i] is ph[i]'s total).
func phaseStats(lat []time.Duration, ph []phases) (map[string][3]float64, map[string]float64) {
	if len(ph) == 0 {
		return nil, nil
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pcts, slow := map[string][3]float64{}, map[string]float64{}
	order := make([]int, len(lat))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int(lat[b] - lat[a]) })
	tail := order[:max(1, len(order)/100)]
	col := make([]time.Duration, len(ph))
	for k, name := range phaseNames {
		for i := range ph {
			col[i] = ph[i][k]
		}
		slices.Sort(col)
		at := func(p float64) float64 { return ms(col[min(len(col)-1, int(p*float64(len(col))))]) }
		pcts[name] = [3]float64{at(0.50), at(0.95), at(0.99)}
		var sum time.Duration
		for _, i := range tail {
			sum += ph[i][k]
		}
		slow[name] = ms(sum / time.Duration(len(tail)))
	}
	return pcts, slow
}

// waitState waits until the endpoint's state satisfies ok. The gateway's
// Respond hook (signals.watch) sees a command before the gateway has
// executed it: a phone picked up on that cue would go off hook before the
// ringing CRCX took effect, and the gateway would then refuse the CRCX's
// L/hd request with 401 (already off hook), a glare no person can produce
// within microseconds of the bell. So the callee answers once the ring
// plays. Polled every 200 µs, bounded by ctx.
func waitState(ctx context.Context, gw *mgcptest.Gateway, ep string, ok func(mgcptest.EndpointState) bool) bool {
	for {
		if st, found := gw.State(ep); found && ok(st) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// notifiedOK: the phone's action was answered 2xx, or needed no NTFY.
func notifiedOK(r *mgcp.Response, err error) bool {
	if errors.Is(err, mgcptest.ErrNotNotified) {
		return true
	}
	return err == nil && r.Code.IsSuccess()
}

// call places one call from caller to callee's number: off hook, dial
// tone, digits, the callee rings and answers, the caller's connection goes
// send-receive (setup time), talk, both hang up.
func call(gw *mgcptest.Gateway, sg *signals, caller, callee, number string, talk time.Duration, setup func(time.Duration, phases), fail func(string)) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+talk)
	defer cancel()
	for _, ch := range []chan struct{}{sg.dialTone[caller], sg.answered[caller], sg.ringing[callee]} {
		drain(ch)
	}
	hangUp := func() {
		_, _ = gw.OnHook(context.Background(), caller)
		_, _ = gw.OnHook(context.Background(), callee)
	}
	t0 := time.Now()
	var ph phases
	last := t0
	mark := func(k int) {
		now := time.Now()
		ph[k], last = now.Sub(last), now
	}
	// With embedded requests the off-hook itself is not notified: the
	// gateway plays dial tone and collects digits (L/hd(E(...))).
	if r, err := gw.OffHook(ctx, caller); !notifiedOK(r, err) {
		fail(fmt.Sprintf("%s off-hook: %v %v", caller, r, err))
		return false
	}
	if st, _ := gw.State(caller); !slices.ContainsFunc(st.Signals, func(e mgcp.Event) bool { return e.Is("L", "dl") }) &&
		!waitCh(ctx, sg.dialTone[caller]) {
		fail(caller + ": no dial tone")
		hangUp()
		return false
	}
	mark(0)
	if r, err := gw.Collect(ctx, caller, number); err != nil || !r.Code.IsSuccess() {
		fail(fmt.Sprintf("%s digits: %v %v", caller, r, err))
		hangUp()
		return false
	}
	mark(1)
	if !waitCh(ctx, sg.ringing[callee]) || !waitState(ctx, gw, callee, func(st mgcptest.EndpointState) bool {
		return slices.ContainsFunc(st.Signals, func(e mgcp.Event) bool { return e.Is("L", "rg") })
	}) {
		fail(callee + ": never rang")
		hangUp()
		return false
	}
	mark(2)
	if r, err := gw.OffHook(ctx, callee); !notifiedOK(r, err) {
		fail(fmt.Sprintf("%s answer: %v %v", callee, r, err))
		hangUp()
		return false
	}
	mark(3)
	if !waitCh(ctx, sg.answered[caller]) {
		fail(caller + ": not connected")
		hangUp()
		return false
	}
	mark(4)
	setup(time.Since(t0), ph)
	time.Sleep(talk)
	ok := true
	if r, err := gw.OnHook(ctx, caller); !notifiedOK(r, err) {
		fail(fmt.Sprintf("%s on-hook: %v %v", caller, r, err))
		ok = false
	}
	time.Sleep(50 * time.Millisecond)
	if r, err := gw.OnHook(ctx, callee); !notifiedOK(r, err) {
		fail(fmt.Sprintf("%s on-hook: %v %v", callee, r, err))
		ok = false
	}
	return ok
}
