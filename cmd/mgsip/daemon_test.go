package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/daemon"
	"github.com/mgsip/mgsip/internal/metrics"
	"github.com/mgsip/mgsip/internal/sim"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/prometheus/client_golang/prometheus"
)

// runningDaemon is `mgsip run` in this process between a simulated
// gateway (real RTP) and the siptest PBX (registrar and B2BUA).
type runningDaemon struct {
	t      *testing.T
	admin  string // http://host:port
	gw     *mgcptest.Gateway
	pbx    *siptest.Registrar
	sim    *sim.Simulator
	stop   chan os.Signal
	done   chan error
	cancel context.CancelFunc
	logs   *testutil.Buffer
	dir    string
}

const testToken = "s3cret-admin-token"

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func startDaemon(t *testing.T, extra string) *runningDaemon {
	t.Helper()
	rd := &runningDaemon{t: t, stop: make(chan os.Signal, 2), done: make(chan error, 1), logs: &testutil.Buffer{}, dir: t.TempDir()}
	var err error
	rd.pbx, err = siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"1001": "pw-1", "1002": "pw-2"},
		UAS: func(siptest.Incoming) siptest.Script { return siptest.Script{Forward: true} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.pbx.Close() })
	caAddr := freeUDP(t)
	rd.gw, err = mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: 2, CallAgent: caAddr, RTP: true, DisconnectedInitial: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.gw.Close() })
	rd.sim = &sim.Simulator{GW: rd.gw, Local: []string{"aaln/1", "aaln/2"}}
	gwHost, gwPort, _ := net.SplitHostPort(rd.gw.Addr())
	pbxHost, pbxPort, _ := net.SplitHostPort(rd.pbx.Addr())
	cfg := fmt.Sprintf(`log:
  level: info
mgcp:
  listen: %s
sip:
  listeners:
    - listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  token: s3cret-admin-token
peers:
  - name: pbx
    host: %s
    port: %s
gateways:
  - name: gw
    domain: gw.test
    address: %s
    port: %s
dial_plans:
  - name: p
    digit_map: "(1xxx)"
    default: true
lines:
  - gateway: gw
    endpoint: aaln/{1..2}
    user: "{n+1000}"
    password: "pw-{n}"
routes:
  outbound:
    - name: pbx
      match: { prefix: "" }
      peer: pbx
%s`, caAddr, pbxHost, pbxPort, gwHost, gwPort, strings.ReplaceAll(extra, "{dir}", rd.dir))
	path := filepath.Join(rd.dir, "mgsip.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: rd.logs, logLevel: "info", logFormat: "text"}
	if err := a.setupLogging(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rd.cancel = cancel
	adminReady := make(chan net.Addr, 1)
	go func() {
		rd.done <- runDaemon(ctx, a, true, daemon.Options{ConfigPath: path, Stop: rd.stop, AdminReady: adminReady})
	}()
	select {
	case addr := <-adminReady:
		rd.admin = "http://" + addr.String()
	case err := <-rd.done:
		t.Fatalf("daemon ended: %v\n%s", err, rd.logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-rd.done:
		case <-time.After(15 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	rd.waitFor("both lines registered", func() bool {
		_, a := rd.pbx.Binding("1001")
		_, b := rd.pbx.Binding("1002")
		return a && b
	})
	return rd
}

func (rd *runningDaemon) waitFor(what string, cond func() bool) {
	rd.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rd.sim.WaitUntil(ctx, what, cond); err != nil {
		rd.t.Fatalf("%v\n%s", err, rd.logs.String())
	}
}

func (rd *runningDaemon) script(s string) {
	rd.t.Helper()
	steps, err := sim.ParseScript(s)
	if err != nil {
		rd.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rd.sim.Run(ctx, steps); err != nil {
		rd.t.Fatalf("%v\n%s", err, rd.logs.String())
	}
}

func (rd *runningDaemon) cli(args ...string) (int, string) {
	rd.t.Helper()
	code, out, errOut := runCLI(rd.t, "", append(args, "--admin", rd.admin, "--token", "s3cret-admin-token")...)
	return code, out + errOut
}

func (rd *runningDaemon) get(path, token string) (int, string) {
	rd.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rd.admin+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		rd.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestDaemonAdminAPIAndCLI runs the daemon with the simulator and the
// PBX, places a call, and checks the API and CLI views and actions, the
// metrics moving, the wire trace switch, and the pcap trace opening in
// tshark with every MGCP and SIP message dissected.
func TestDaemonAdminAPIAndCLI(t *testing.T) {
	tshark := testutil.RequireProgram(t, "tshark")
	rd := startDaemon(t, "trace:\n  pcap: {dir}/mgsip.pcap\ncdr:\n  file: {dir}/cdr.jsonl\n")

	if code, _ := rd.get("/healthz", ""); code != 200 {
		t.Errorf("healthz %d", code)
	}
	rd.waitFor("ready (the PBX answers OPTIONS)", func() bool { code, _ := rd.get("/readyz", ""); return code == 200 })
	if code, body := rd.get("/api/v1/lines", ""); code != 401 || !strings.Contains(body, "bearer token") {
		t.Errorf("without a token: %d %s", code, body)
	}
	if code, out := runCLI2(t, "lines", "--admin", rd.admin, "--token", "wrong"); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("CLI with a wrong token: exit %d %s", code, out)
	}
	code, out := rd.cli("lines")
	if code != 0 || !strings.Contains(out, "gw/aaln/1") || !strings.Contains(out, "registered") || !strings.Contains(out, "idle") {
		t.Fatalf("lines: exit %d\n%s", code, out)
	}
	if code, body := rd.get("/api/v1/peers", testToken); code != 200 || !strings.Contains(body, `"up": true`) {
		t.Errorf("peers: %d %s", code, body)
	}
	code, out = rd.cli("gateways")
	if code != 0 || !strings.Contains(out, "gw") || !strings.Contains(out, "up") {
		t.Errorf("gateways: exit %d\n%s", code, out)
	}

	// Trace on for MGCP through the API, then a call 1001 -> 1002.
	req, _ := http.NewRequest(http.MethodPost, rd.admin+"/api/v1/trace?mgcp=on", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("X-Mgsip-Client", "test")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("trace on: %v %v", res, err)
	}
	rd.script("offhook 1; wait 1 L/dl; dial 1 1002; wait 2 L/rg; offhook 2; wait 1 connected; wait 2 connected; rtp 1 10")
	code, out = rd.cli("calls", "--json")
	var calls []bridge.CallStatus
	if code != 0 || json.Unmarshal([]byte(out), &calls) != nil || len(calls) != 2 {
		t.Fatalf("calls: exit %d\n%s", code, out)
	}
	for _, c := range calls {
		if c.SIPCallID == "" || c.ConnectionID == "" || c.Answered.IsZero() {
			t.Errorf("call %+v", c)
		}
	}
	code, out = rd.cli("calls")
	if code != 0 || !strings.Contains(out, "outgoing") || !strings.Contains(out, "incoming") || !strings.Contains(out, "PCMU") {
		t.Errorf("calls table:\n%s", out)
	}
	_, metricsText := rd.get("/metrics", testToken)
	for _, want := range []string{"mgsip_calls_active 2", `mgsip_messages_total{direction="in",protocol="mgcp",type="NTFY"}`,
		`mgsip_messages_total{direction="out",protocol="sip",type="INVITE"}`, `mgsip_endpoints{state="connected"} 2`,
		`mgsip_registrations{state="registered"} 2`, "mgsip_mgcp_transaction_seconds_bucket", `mgsip_gateways_up{gateway="gw"} 1`} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The gateway's transaction window and the registration pace.
	for _, want := range []string{`(?m)^mgsip_gateway_window\{gateway="gw"\} [1-9]`, `(?m)^mgsip_gateway_outstanding\{gateway="gw"\} \d`,
		`(?m)^mgsip_gateway_queued\{gateway="gw"\} 0$`, `(?m)^mgsip_mgcp_window_decreases_total 0$`,
		`(?m)^mgsip_registration_rate [1-9]`, `(?m)^mgsip_registration_rate_ceiling [1-9]`, `(?m)^mgsip_registration_rate_cuts_total 0$`} {
		if !regexp.MustCompile(want).MatchString(metricsText) {
			t.Errorf("metrics lack %s", want)
		}
	}
	code, out = rd.cli("audit", "gw/aaln/1")
	if code != 0 || !strings.Contains(out, "KEY") || !regexp.MustCompile(`(?m)^code +200$`).MatchString(out) {
		t.Errorf("audit: exit %d\n%s", code, out)
	}
	if code, out := rd.cli("audit", "gw/aaln/1", "--json"); code != 0 || !strings.Contains(out, `"code": 200`) {
		t.Errorf("audit --json: exit %d\n%s", code, out)
	}
	if code, out := rd.cli("audit", "gw/aaln/9"); code != 1 || !strings.Contains(out, "404") {
		t.Errorf("audit of an unknown line: exit %d %s", code, out)
	}
	// A long poll for the next CDR (mgsip cdr --follow) is answered when
	// the call ends.
	polled := make(chan string, 1)
	go func() {
		_, body := rd.get("/api/v1/cdr?wait=20s&since="+time.Now().UTC().Format(time.RFC3339Nano), testToken)
		polled <- body
	}()
	// Hang the call up from the CLI: both phones hear reorder.
	if code, out := rd.cli("hangup", calls[0].SIPCallID); code != 0 {
		t.Fatalf("hangup: exit %d %s", code, out)
	}
	rd.script("wait 1 L/ro; wait 2 L/ro; onhook 1; onhook 2; wait 1 armed; wait 2 armed")
	select {
	case body := <-polled:
		if !strings.Contains(body, `"mgcp_call_id"`) {
			t.Errorf("long poll answered %s", body)
		}
	case <-time.After(25 * time.Second):
		t.Error("the CDR long poll was not answered")
	}
	// Both legs' CDRs, from the API (CLI --json) and in the file.
	code, out = rd.cli("cdr", "--json")
	var cdrs []bridge.CDR
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var c bridge.CDR
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("cdr --json: exit %d: %v\n%s", code, err, out)
		}
		cdrs = append(cdrs, c)
	}
	if len(cdrs) != 2 {
		t.Fatalf("%d CDRs:\n%s", len(cdrs), out)
	}
	// --follow's next question (after the last seq seen) waits for a new
	// record instead of answering the last one again at once (which made
	// the follower loop and use up the daemon's descriptors).
	last := max(cdrs[0].Seq, cdrs[1].Seq)
	start := time.Now()
	if _, body := rd.get(fmt.Sprintf("/api/v1/cdr?after=%d&wait=1500ms", last), testToken); strings.TrimSpace(body) != "[]" || time.Since(start) < time.Second {
		t.Errorf("after=%d answered %s in %v", last, body, time.Since(start))
	}
	for _, c := range cdrs {
		if !c.Answered || c.SIPCallID != calls[0].SIPCallID && c.SIPCallID != calls[1].SIPCallID || c.MGCPConnection == "" ||
			c.Codec != "PCMU" || c.Calling != "1001" || c.Called != "1002" || c.TalkMS <= 0 {
			t.Errorf("CDR %+v", c)
		}
	}
	if code, out := rd.cli("cdr", "--since", "1h"); code != 0 || !strings.Contains(out, "outgoing") || !strings.Contains(out, "incoming") ||
		!strings.Contains(out, "CALLING") {
		t.Errorf("cdr table: exit %d\n%s", code, out)
	}
	if code, out := rd.cli("cdr", "--since", "yesterday"); code != 2 || !strings.Contains(out, "--since") {
		t.Errorf("cdr --since yesterday: exit %d %s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(rd.dir, "cdr.jsonl")); err != nil || strings.Count(string(b), "\n") != 2 {
		t.Errorf("CDR file: %v\n%s", err, b)
	}
	if code, out := rd.cli("hangup", "nope"); code != 1 || !strings.Contains(out, "no such call") || strings.Contains(out, "bridge:") {
		t.Errorf("hangup unknown: exit %d %s", code, out)
	}
	// The rest of the operator's commands, against the running daemon.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"peers"}, []string{"PEER", "pbx", "yes", " ms"}},
		{[]string{"registrations"}, []string{"LINE", "gw/aaln/1", "registered", "200"}},
		{[]string{"stats"}, []string{"calls_active", "mgcp.commands_sent", "registrations.registered", "sip_gate.forbidden"}},
		{[]string{"trace", "status"}, []string{"mgcp trace on", "sip trace off"}},
		{[]string{"trace", "on", "--sip"}, []string{"mgcp trace on", "sip trace on"}},
		{[]string{"trace", "on", "--line", "gw/aaln/1"}, []string{"mgcp trace on", "sip trace on", "only lines gw/aaln/1, gateways -"}},
		{[]string{"trace", "status"}, []string{"only lines gw/aaln/1"}},
		{[]string{"trace", "off"}, []string{"mgcp trace off", "sip trace off"}},
		{[]string{"lines", "--state", "idle", "--gateway", "gw"}, []string{"gw/aaln/1", "gw/aaln/2"}},
		{[]string{"gateways"}, []string{" ms"}},
	} {
		code, out := rd.cli(tc.args...)
		for _, w := range tc.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("mgsip %s: exit %d, no %q in\n%s", strings.Join(tc.args, " "), code, w, out)
				break
			}
		}
	}
	for _, step := range []struct {
		args  []string
		state string
	}{{[]string{"drain", "gw"}, "drained"}, {[]string{"enable", "gw"}, "up"}, {[]string{"disable", "gw"}, "drained"}, {[]string{"enable", "gw"}, "up"}} {
		if code, out := rd.cli(step.args...); code != 0 {
			t.Errorf("%v: exit %d %s", step.args, code, out)
		}
		if code, out := rd.cli("gateways"); code != 0 || !regexp.MustCompile(`(?m)^gw +\S+ +`+step.state+` `).MatchString(out) {
			t.Errorf("after %v the gateway is not %s:\n%s", step.args, step.state, out)
		}
	}
	if code, out := rd.cli("drain", "nope"); code != 1 || !strings.Contains(out, "nope") || strings.Contains(out, "bridge:") {
		t.Errorf("drain an unknown gateway: exit %d %s", code, out)
	}
	if code, out := rd.cli("trace", "on", "--line", "gw/aaln/9"); code != 1 || !strings.Contains(out, `no line "gw/aaln/9"`) {
		t.Errorf("trace on an unknown line: exit %d %s", code, out)
	}
	if code, out := rd.cli("lines", "--gateway", "nope"); code != 1 || !strings.Contains(out, `no gateway "nope"`) {
		t.Errorf("lines --gateway nope: exit %d %s", code, out)
	}
	if code, out := rd.cli("lines", "--state", "bogus"); code != 1 || !strings.Contains(out, `no line state "bogus"`) {
		t.Errorf("lines --state bogus: exit %d %s", code, out)
	}
	if code, out := rd.cli("trace", "status", "--json"); code != 0 || !strings.Contains(out, `"mgcp":`) {
		t.Errorf("trace status --json: exit %d %s", code, out)
	}
	if code, out := rd.cli("lines", "--state", "connected"); code != 0 || strings.Contains(out, "gw/aaln") {
		t.Errorf("lines --state connected: exit %d\n%s", code, out)
	}
	if _, body := rd.get("/api/v1/lines", testToken); !strings.Contains(body, `"state": "registered"`) || strings.Contains(body, `"State"`) {
		t.Errorf("lines JSON is not snake_case with typed values: %s", body)
	}
	if _, body := rd.get("/api/v1/gateways", testToken); !strings.Contains(body, `"rtt_ms": `) {
		t.Errorf("gateways JSON has no rtt_ms: %s", body)
	}
	if code, out := rd.cli("reregister", "gw/aaln/1"); code != 0 {
		t.Errorf("reregister: exit %d %s", code, out)
	}
	if code, out := rd.cli("rearm", "gw/aaln/2"); code != 0 {
		t.Errorf("rearm: exit %d %s", code, out)
	}
	if code, out := rd.cli("reload"); code != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("reload: exit %d %s", code, out)
	}
	_, metricsText = rd.get("/metrics", testToken)
	for _, want := range []string{`mgsip_call_setups_total{direction="outgoing",result="answered"} 1`,
		`mgsip_call_setups_total{direction="incoming",result="answered"} 1`, "mgsip_call_duration_seconds_count 2",
		`mgsip_config_reloads_total{result="ok"} 1`, "mgsip_calls_active 0"} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics after the call lack %s", want)
		}
	}
	for _, want := range []string{`mgsip_calls_answered_total{direction="outgoing"} 1`, `mgsip_calls_answered_total{direction="incoming"} 1`,
		"mgsip_start_time_seconds ", "mgsip_config_last_reload_success_timestamp_seconds ", `mgsip_sip_peer_up{peer="pbx"} 1`,
		`mgsip_gateway_retransmissions_total{gateway="gw"}`, `mgsip_gateway_timeouts_total{gateway="gw"} 0`,
		`mgsip_mgcp_transaction_seconds_bucket{gateway="gw",`, `mgsip_registration_failures_total{reason="no_answer"} 0`} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Every metric the shipped Grafana dashboard queries exists.
	dash, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	// The cluster's metrics exist only with a cluster section (a cluster
	// node's are read in internal/clustertest): their names come from the
	// collector itself.
	exported := metricsText
	creg := prometheus.NewRegistry()
	creg.MustRegister(metrics.NewClusterCollector(func() metrics.ClusterState { return metrics.ClusterState{} }))
	mfs, err := creg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		exported += "\n# TYPE " + mf.GetName() + " "
	}
	queried := 0
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			for _, name := range regexp.MustCompile(`\b(?:mgsip|process|go)_[a-z_]+\b`).FindAllString(tg.Expr, -1) {
				queried++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				if !strings.Contains(exported, "# TYPE "+base+" ") {
					t.Errorf("panel %q queries %s, which mgsip does not export", p.Title, name)
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("the dashboard queries only %d metrics", queried)
	}
	if !strings.Contains(rd.logs.String(), "CRCX ") {
		t.Error("the MGCP wire trace did not log the CRCX")
	}
	if code, _ := runCLI2(t, "lines", "--admin", "http://127.0.0.1:1"); code != 3 {
		t.Errorf("no daemon: exit %d, want 3", code)
	}

	// The pcap file opens in tshark with MGCP and SIP dissected.
	rd.cancel()
	<-rd.done
	rd.done <- nil
	out2, err := exec.Command(tshark, "-r", filepath.Join(rd.dir, "mgsip.pcap"), "-d", "udp.port=="+portOf(rd.gw.Addr())+",mgcp",
		"-T", "fields", "-e", "frame.protocols").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var nMGCP, nSIP int
	for _, l := range strings.Split(string(out2), "\n") {
		switch {
		case strings.Contains(l, "mgcp"):
			nMGCP++
		case strings.Contains(l, "sip"):
			nSIP++
		}
	}
	if nMGCP < 20 || nSIP < 10 {
		t.Errorf("tshark dissected %d MGCP and %d SIP packets in the trace", nMGCP, nSIP)
	}
	t.Logf("pcap: %d MGCP and %d SIP packets dissected by tshark", nMGCP, nSIP)

	// mgsip ladder on the same capture: both protocols, responses joined
	// to their commands, the MGCP calls joined to the SIP Call-IDs.
	pcap := filepath.Join(rd.dir, "mgsip.pcap")
	code, out = runCLI2(t, "ladder", pcap)
	for _, want := range []string{"mgcp CRCX ", "sip  INVITE sip:", "sip  SIP/2.0 200 OK", "[CRCX aaln/1@gw.test, ",
		"# MGCP call ", "= SIP Call-ID " + calls[0].SIPCallID} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("ladder: exit %d, no %q in\n%s", code, want, out)
			break
		}
	}
	code, one := runCLI2(t, "ladder", pcap, "--call", calls[0].SIPCallID)
	if code != 0 || !strings.Contains(one, "CRCX") || !strings.Contains(one, "INVITE") || strings.Count(one, "\n") >= strings.Count(out, "\n") {
		t.Errorf("ladder --call: exit %d\n%s", code, one)
	}
	if code, out := runCLI2(t, "ladder", pcap, "--call", "nope"); code != 1 || !strings.Contains(out, "no call") {
		t.Errorf("ladder --call nope: exit %d %s", code, out)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func runCLI2(t *testing.T, args ...string) (int, string) {
	code, out, errOut := runCLI(t, "", args...)
	return code, out + errOut
}

// TestDaemonDrain: SIGTERM during a call makes mgsip refuse new calls
// (readyz 503, an off-hook line hears reorder) while the call goes on;
// when it ends mgsip unregisters the lines and exits 0.
func TestDaemonDrain(t *testing.T) {
	// systemd's notification socket, to see READY and STOPPING.
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	notes := make(chan string, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	t.Setenv("NOTIFY_SOCKET", sock)
	rd := startDaemon(t, "daemon:\n  drain_timeout: 20s\n")
	waitNote := func(want string) {
		t.Helper()
		for {
			select {
			case n := <-notes:
				if strings.Contains(n, want) {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("systemd never got %s", want)
			}
		}
	}
	waitNote("READY=1")
	rd.script("offhook 1; wait 1 L/dl; dial 1 1002; wait 2 L/rg; offhook 2; wait 1 connected")
	rd.stop <- syscall.SIGTERM
	waitNote("STOPPING=1")
	rd.waitFor("readyz says draining", func() bool {
		code, body := rd.get("/readyz", "")
		return code == 503 && strings.Contains(body, "draining")
	})
	select {
	case err := <-rd.done:
		t.Fatalf("exited while a call was up: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	rd.script("onhook 1; onhook 2")
	select {
	case err := <-rd.done:
		rd.done <- err
		if err != nil {
			t.Fatalf("drain ended with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("did not exit after the last call\n%s", rd.logs.String())
	}
	for _, u := range []string{"1001", "1002"} {
		if _, ok := rd.pbx.Binding(u); ok {
			t.Errorf("%s still registered after the drain\n%s", u, rd.logs.String())
		}
	}
	if !strings.Contains(rd.logs.String(), "draining: no new calls") {
		t.Errorf("log lacks the drain:\n%s", rd.logs.String())
	}
}

// TestDaemonReadyzGateways: with daemon.ready.gateways: all, /readyz
// answers 503 once a gateway is marked down, and says why.
func TestDaemonReadyzGateways(t *testing.T) {
	rd := startDaemon(t, "daemon:\n  ready:\n    gateways: all\n    sip_peers: ignore\n")
	if code, body := rd.get("/readyz", ""); code != 200 {
		t.Fatalf("readyz before: %d %s", code, body)
	}
	_ = rd.gw.Close() // the gateway dies; the next command to it times out
	go rd.cli("rearm", "gw/aaln/1")
	rd.waitFor("readyz 503", func() bool {
		code, body := rd.get("/readyz", "")
		return code == 503 && strings.Contains(body, "1 gateway(s) down")
	})
}
