package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
)

// BenchmarkCallsRealPath is `make bench-calls`: three processes on
// loopback - mgsip (`mgsip run` with a generated configuration), this
// package's load generator as the gateway, and Kamailio as registrar
// (SHA-256 digest, every line registered) and proxy. Every call goes line
// -> MGCP -> mgsip -> SIP -> Kamailio -> SIP -> mgsip -> MGCP -> line.
// MGSIP_LOAD_LINES (default 4000: 2,000 pairs, each busy about 1.4 s a
// call, enough for 1,400 calls/s), MGSIP_LOAD_RATES (default
// 100,200,400,600,800,1000,1200,1500), MGSIP_LOAD_STEP (5s) and
// MGSIP_LOAD_TALK (1s) tune it; MGSIP_LOAD_LOG=file keeps mgsip's log;
// MGSIP_LOAD_MGSIP=binary runs another build of mgsip (before/after).
// MGSIP_LOAD_STORM=1 is the cold storm instead of the rate steps: every
// line sends its own RSIP at the gateway's pace, then one wildcard RSIP,
// each timed until all lines are armed again; then one call step at the
// first rate, 5 s after the last RSIP. MGSIP_LOAD_PROFILE=dir turns on mgsip's
// admin.pprof and saves, for each step, a CPU profile over the step and
// the heap, allocs (also at the step's start, for pprof -base), mutex,
// block and goroutine profiles after it (with MGSIP_LOAD_TRACE=1, an
// execution trace of 3 s in the middle of the step instead of the CPU
// profile). For each step it logs the loadgen's
// figures, the CPU and RSS of each process, and the UDP datagrams the
// kernel dropped for full receive buffers (box-wide and per socket).
func BenchmarkCallsRealPath(b *testing.B) {
	lines := envInt("MGSIP_LOAD_LINES", 4000)
	rates := envString("MGSIP_LOAD_RATES", "100,200,400,600,800,1000,1200,1500")
	step := envString("MGSIP_LOAD_STEP", "5s")
	talk := envString("MGSIP_LOAD_TALK", "1s")
	for b.Loop() {
		runRealPath(b, lines, rates, step, talk)
	}
}

func envInt(k string, d int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return d
}

func envString(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func freePort(b *testing.B) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// proc samples the CPU time and RSS of a process and its children
// (Kamailio forks its workers).
type proc struct {
	name string
	pid  int
}

func (p proc) pids() []int {
	out := []int{p.pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			if len(f) > 2 && f[1] == strconv.Itoa(p.pid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// sample returns CPU seconds (user+system) and RSS bytes.
func (p proc) sample() (cpu float64, rss int64) {
	for _, pid := range p.pids() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		// after the comm: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
		if len(f) > 21 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			cpu += (u + s) / 100 // clock ticks (USER_HZ 100)
			pages, _ := strconv.ParseInt(f[21], 10, 64)
			rss += pages * int64(os.Getpagesize())
		}
	}
	return cpu, rss
}

func buildBinary(b *testing.B, dir, pkg string) string {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

func runRealPath(b *testing.B, lines int, rates, step, talk string) {
	kam := testutil.StartKamailio(b, "SHA-256", 3600)
	kamHost, kamPort, _ := net.SplitHostPort(kam.Addr)
	dir := b.TempDir()
	mgsipBin := os.Getenv("MGSIP_LOAD_MGSIP") // another build, to compare
	if mgsipBin == "" {
		mgsipBin = buildBinary(b, dir, "./cmd/mgsip")
	}
	loadBin := buildBinary(b, dir, "./cmd/mgsip-loadgen")
	caPort, sipPort, gwPort := freePort(b), freePort(b), freePort(b)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	profDir := os.Getenv("MGSIP_LOAD_PROFILE")
	storm := os.Getenv("MGSIP_LOAD_STORM") != ""
	if storm {
		rates, _, _ = strings.Cut(rates, ",") // one call step after the storm
	}
	pprofKey := ""
	if profDir != "" {
		pprofKey = "  pprof: true\n"
	}
	mgcpExtra := ""
	if os.Getenv("MGSIP_LOAD_NO_WINDOW") != "" {
		// For comparison: a transaction window larger than any load.
		mgcpExtra = "  window_initial: 1000000\n  window_max: 1000000\n"
	}
	cfg := fmt.Sprintf(`log:
  level: warn
admin:
  listen: %s
%smgcp:
  listen: 127.0.0.1:%d
%ssip:
  listeners:
    - transport: udp
      listen: 127.0.0.1:%d
  register_rate: 5000
peers:
  - name: kam
    host: %s
    port: %s
    auth: digest
    register_expiry: 3600s
gateways:
  - name: load
    domain: load.test
    address: 127.0.0.1
    port: %d
    codecs: [PCMU]
dial_plans:
  - name: p
    digit_map: "(xxxxxx)"
    default: true
lines:
  - gateway: load
    endpoint: aaln/{1..%d}
    user: "{n+100000}"
    password: "pw-{n+100000}"
routes:
  outbound:
    - name: kam
      match: { prefix: "" }
      peer: kam
`, adminAddr, pprofKey, caPort, mgcpExtra, sipPort, kamHost, kamPort, gwPort, lines)
	cfgPath := filepath.Join(dir, "mgsip.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	mgsipLog := &testutil.Buffer{}
	mg := exec.Command(mgsipBin, "run", "--config", cfgPath)
	mg.Stdout, mg.Stderr = mgsipLog, mgsipLog
	if err := mg.Start(); err != nil {
		b.Fatal(err)
	}
	mgDone := make(chan struct{})
	go func() { _ = mg.Wait(); close(mgDone) }()
	defer func() {
		_ = mg.Process.Signal(syscall.SIGTERM)
		select {
		case <-mgDone:
		case <-time.After(15 * time.Second):
			_ = mg.Process.Kill()
			<-mgDone
		}
		if b.Failed() {
			b.Logf("mgsip log:\n%s", mgsipLog.String())
		}
		if f := os.Getenv("MGSIP_LOAD_LOG"); f != "" {
			if err := os.WriteFile(f, []byte(mgsipLog.String()), 0o644); err != nil {
				b.Log(err)
			}
		}
	}()

	lg := exec.Command(loadBin, "-listen", fmt.Sprintf("127.0.0.1:%d", gwPort), "-ca", fmt.Sprintf("127.0.0.1:%d", caPort),
		"-window-max", envString("MGSIP_LOAD_GW_WINDOW", "0"), "-domain", "load.test", "-lines", strconv.Itoa(lines), "-first-user", "100001", "-rates", rates, "-step", step, "-talk", talk, "-storm="+strconv.FormatBool(storm))
	lgErr := &testutil.Buffer{}
	lg.Stderr = lgErr
	stdin, err := lg.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := lg.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := lg.Start(); err != nil {
		b.Fatal(err)
	}
	lgDone := make(chan struct{})
	defer func() {
		_ = stdin.Close()
		_ = lg.Process.Signal(syscall.SIGTERM)
		select {
		case <-lgDone:
		case <-time.After(10 * time.Second):
			_ = lg.Process.Kill()
			<-lgDone
		}
		if b.Failed() {
			b.Logf("loadgen stderr:\n%s", lgErr.String())
		}
	}()
	out := bufio.NewReader(stdout)
	readLine := func() (string, error) {
		l, err := out.ReadString('\n')
		return strings.TrimSpace(l), err
	}
	go func() { _ = lg.Wait(); close(lgDone) }()

	start := time.Now()
	if l, err := readLine(); err != nil || l != "armed" {
		b.Fatalf("loadgen: %q %v\n%s", l, err, lgErr.String())
	}
	armed := time.Since(start)
	for {
		n, err := kam.Stat("usrloc:location_contacts")
		if err == nil && n == lines {
			break
		}
		if limit := max(3*time.Minute, time.Duration(lines)*2*time.Millisecond); time.Since(start) > limit {
			b.Fatalf("%d of %d lines registered at Kamailio after %v", n, lines, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	registered := time.Since(start)
	b.Logf("%d lines: armed %v, all registered at Kamailio %v after mgsip started", lines, armed.Round(time.Millisecond), registered.Round(time.Millisecond))
	// Let the registration burst's transactions (Timer J, 32 s) expire
	// before the idle RSS is read.
	time.Sleep(envDurationOr("MGSIP_LOAD_SETTLE", 35*time.Second))
	procs := []proc{{"mgsip", mg.Process.Pid}, {"loadgen", lg.Process.Pid}, {"kamailio", kamPid(b, kam)}}
	_, idleRSS := procs[0].sample()
	if profDir != "" {
		// What the idle registered lines hold (after a GC).
		fetchProfile(b, adminAddr, "heap?gc=1", filepath.Join(profDir, "heap-idle.pprof"))
		fetchProfile(b, adminAddr, "goroutine", filepath.Join(profDir, "goroutine-idle.pprof"))
		fetchProfile(b, adminAddr, "heap?debug=1", filepath.Join(profDir, "heap-idle.txt")) // with the runtime's MemStats
	}
	b.Logf("mgsip idle RSS with %d registered lines: %.1f MB (%.1f KB per line incl. the runtime)", lines, float64(idleRSS)/1e6, float64(idleRSS)/1024/float64(lines))
	b.ReportMetric(float64(idleRSS)/float64(lines), "mgsip-RSS-B/idle-line")
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		b.Fatal(err)
	}
	if storm {
		procs0 := make([]float64, len(procs))
		for i, p := range procs {
			procs0[i], _ = p.sample()
		}
		stormProf := make(chan struct{})
		go func() {
			defer close(stormProf)
			if profDir != "" {
				fetchProfile(b, adminAddr, "profile?seconds="+envString("MGSIP_LOAD_STORM_PROFILE", "20"), filepath.Join(profDir, "cpu-storm.pprof"))
			}
		}()
		for range 2 {
			l, err := readLine()
			if err != nil {
				b.Fatalf("loadgen: %v\n%s", err, lgErr.String())
			}
			var sr StormResult
			if err := json.Unmarshal([]byte(l), &sr); err != nil {
				b.Fatalf("loadgen said %q: %v", l, err)
			}
			_, rss := procs[0].sample()
			b.Logf("storm, %s RSIPs: %d lines, %d RSIPs (%d failed), last answered after %.2f s; all armed after %.2f s, %d lines lost; gateway: %d retransmissions, %d timeouts, %d commands from mgsip, window %d; mgsip RSS %.0f MB; load average %s",
				sr.Phase, sr.Lines, sr.RSIPs, sr.RSIPFailed, sr.LastRSIPSec, sr.ArmedSec, sr.Lost, sr.Retransmissions, sr.Timeouts, sr.CommandsFromCA, sr.Window, float64(rss)/1e6, loadAvg())
			b.ReportMetric(sr.ArmedSec, "s-armed-"+sr.Phase)
			b.ReportMetric(float64(sr.Lost), "lost-"+sr.Phase)
		}
		c1, _ := procs[0].sample()
		b.Logf("storm: mgsip CPU %.1f s over both phases", c1-procs0[0])
		<-stormProf
		b.Logf("calls 5 s after the last RSIP:")
	}
	best := 0
	for stepIdx := range strings.Split(rates, ",") {
		cpu0 := make([]float64, len(procs))
		for i, p := range procs {
			cpu0[i], _ = p.sample()
		}
		rcvbuf0 := udpRcvbufErrors()
		busy0, total0 := boxCPU()
		mem0 := goMemStats(adminAddr)
		kamPortN, _ := strconv.Atoi(kamPort)
		drops0 := udpSocketDrops(caPort, sipPort, gwPort, kamPortN)
		t0 := time.Now()
		var cpuProf chan struct{}
		if profDir != "" {
			// A CPU profile of mgsip over the step (the step's length
			// from the rate list: every step has the same).
			// allocs now and after the step: pprof -base gives the step's.
			fetchProfile(b, adminAddr, "allocs", filepath.Join(profDir, fmt.Sprintf("allocs0-%d.pprof", rateOf(rates, stepIdx))))
			cpuProf = make(chan struct{})
			stepDur, _ := time.ParseDuration(step)
			go func() {
				defer close(cpuProf)
				if os.Getenv("MGSIP_LOAD_TRACE") != "" {
					// And an execution trace of 3 s in the middle
					// (go tool trace -pprof=sched: where goroutines wait to run).
					time.Sleep(stepDur / 2)
					fetchProfile(b, adminAddr, "trace?seconds=3", filepath.Join(profDir, fmt.Sprintf("trace-%d.out", rateOf(rates, stepIdx))))
					return
				}
				fetchProfile(b, adminAddr, fmt.Sprintf("profile?seconds=%d", max(1, int(stepDur.Seconds()))), filepath.Join(profDir, fmt.Sprintf("cpu-%d.pprof", rateOf(rates, stepIdx))))
			}()
		}
		l, err := readLine()
		if err != nil {
			b.Fatalf("loadgen: %v\n%s", err, lgErr.String())
		}
		var res StepResult
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			b.Fatalf("loadgen said %q: %v", l, err)
		}
		el := time.Since(t0).Seconds()
		var usage []string
		var mgsipCPU float64
		for i, p := range procs {
			c, rss := p.sample()
			if i == 0 {
				mgsipCPU = c - cpu0[i]
			}
			usage = append(usage, fmt.Sprintf("%s %.0f%% CPU %.0f MB", p.name, 100*(c-cpu0[i])/el, float64(rss)/1e6))
		}
		busy1, total1 := boxCPU()
		if total1 > total0 {
			usage = append(usage, fmt.Sprintf("whole box %.0f%% busy (of %d00%%; user, system, irq and softirq of every process)",
				100*float64(runtime.NumCPU())*float64(busy1-busy0)/float64(total1-total0), runtime.NumCPU()))
		}
		if cpuProf != nil {
			<-cpuProf
			for _, k := range []string{"heap", "allocs", "mutex", "block", "goroutine"} {
				fetchProfile(b, adminAddr, k, filepath.Join(profDir, fmt.Sprintf("%s-%d.pprof", k, res.Rate)))
			}
		}
		if res.Calls > 0 {
			b.Logf("  mgsip CPU %.2f s per 1,000 calls (utime+stime); load average %s", 1000*mgsipCPU/float64(res.Calls), loadAvg())
			if mem1 := goMemStats(adminAddr); mem0 != nil && mem1 != nil {
				// Exact counters of the runtime (not the sampled
				// allocs profile, which lags until the next GC).
				n := float64(res.Calls)
				b.Logf("  mgsip allocations: %.0f objects and %.1f KB per call; %.0f GCs in the step",
					(mem1["go_memstats_mallocs_total"]-mem0["go_memstats_mallocs_total"])/n,
					(mem1["go_memstats_alloc_bytes_total"]-mem0["go_memstats_alloc_bytes_total"])/n/1024,
					mem1["go_gc_duration_seconds_count"]-mem0["go_gc_duration_seconds_count"])
				b.Logf("  mgsip's MGCP commands to the gateway: %.0f retransmissions, window cut %.0f times, %.0f waits for a slot",
					mem1["mgsip_mgcp_retransmissions_total"]-mem0["mgsip_mgcp_retransmissions_total"],
					mem1["mgsip_mgcp_window_decreases_total"]-mem0["mgsip_mgcp_window_decreases_total"],
					mem1["mgsip_mgcp_window_waits_total"]-mem0["mgsip_mgcp_window_waits_total"])
			}
		}
		b.Logf("rate %4d/s: %5d calls, %d failed, %d without a free pair; setup p50 %.2f ms p95 %.2f ms p99 %.2f ms; %.1f MGCP commands per call at the gateway; %s",
			res.Rate, res.Calls, res.Failed, res.NoLine, res.P50ms, res.P95ms, res.P99ms, res.MGCPPerCall, strings.Join(usage, ", "))
		b.Logf("  gateway's NTFYs: %d retransmissions, %d timeouts, window %d (cut %d times, %d waits for a slot)", res.Retransmissions, res.Timeouts, res.Window, res.WindowCuts, res.WindowWaits)
		if len(res.Phases) > 0 {
			var parts []string
			for _, name := range phaseNames {
				p := res.Phases[name]
				parts = append(parts, fmt.Sprintf("%s %.1f/%.1f/%.1f (slowest 1%%: %.1f)", name, p[0], p[1], p[2], res.Slow[name]))
			}
			b.Logf("  setup phases p50/p95/p99 ms: %s", strings.Join(parts, "; "))
		}
		drops1 := udpSocketDrops(caPort, sipPort, gwPort, kamPortN)
		b.Logf("  UDP receive-buffer drops: %d in the kernel (RcvbufErrors, whole box); per socket: mgsip MGCP %d, mgsip SIP %d, loadgen %d, kamailio %d",
			udpRcvbufErrors()-rcvbuf0, drops1[caPort]-drops0[caPort], drops1[sipPort]-drops0[sipPort], drops1[gwPort]-drops0[gwPort], drops1[kamPortN]-drops0[kamPortN])
		if res.FirstFailure != "" {
			b.Logf("  first failure: %s; failures by kind: %v", res.FirstFailure, res.Failures)
		}
		if res.Failed == 0 && res.NoLine == 0 {
			best = res.Rate
			b.ReportMetric(res.P99ms, fmt.Sprintf("ms-p99@%d/s", res.Rate))
		}
	}
	b.ReportMetric(float64(best), "calls/s-max-0-failed")
}

// rateOf is the i-th entry of the comma-separated rate list.
func rateOf(rates string, i int) int {
	f := strings.Split(rates, ",")
	n, _ := strconv.Atoi(strings.TrimSpace(f[min(i, len(f)-1)]))
	return n
}

// boxCPU is the machine's busy and total time from /proc/stat's "cpu"
// line, in clock ticks (busy: everything but idle and iowait).
func boxCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// goMemStats reads the Go runtime's allocation and GC counters from
// mgsip's /metrics; nil when it cannot.
func goMemStats(addr string) map[string]float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		switch name {
		case "go_memstats_mallocs_total", "go_memstats_alloc_bytes_total", "go_gc_duration_seconds_count",
			"mgsip_mgcp_retransmissions_total", "mgsip_mgcp_window_decreases_total", "mgsip_mgcp_window_waits_total":
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); ok && err == nil {
				out[name] = v
			}
		}
	}
	if len(out) < 3 {
		return nil
	}
	return out
}

// fetchProfile saves one of mgsip's /debug/pprof/ profiles (admin.pprof).
func fetchProfile(b *testing.B, addr, name, path string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + name)
	if err != nil {
		b.Logf("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Logf("profile %s: %s", name, resp.Status)
		return
	}
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile %s: %v", name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Logf("profile %s: %v", name, err)
	}
}

func envDurationOr(k string, d time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

// kamPid finds the Kamailio main process by its listening address.
func kamPid(b *testing.B, kam *testutil.Kamailio) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("kamailio")) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			return pid // started by this benchmark
		}
	}
	b.Logf("kamailio process of %s not found; its usage is not reported", kam.Addr)
	return -1
}
