package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/daemon"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestRunSimLineTrunk runs `mgsip run` with two lines and a CAS trunk
// group, and drives it with `mgsip sim` scripts as an outside tester
// would: a line's call out of the trunk answered by the far end (the
// line talks send-receive; its hang-up releases the channel), the same
// call released by the trunk (the line hears reorder), and a
// trunk-originated call to a line (the phone's answer answers the
// trunk; its hang-up releases the channel). Each script ends with
// every endpoint armed again, for the MS and the DT package.
func TestRunSimLineTrunk(t *testing.T) {
	scripts := map[string]string{
		"line hangs up":   "wait 1 armed; wait 3 armed; offhook 1; dial 1 95551234; wait 3 seized; answer 3; wait 1 connected; onhook 1; wait 1 armed; wait 3 armed",
		"trunk releases":  "wait 1 armed; wait 3 armed; offhook 1; dial 1 95551234; wait 3 seized; answer 3; wait 1 connected; release 3; wait 1 L/ro; onhook 1; wait 1 armed; wait 3 armed",
		"trunk to a line": "wait 2 armed; wait 3 armed; seize 3 1002,2125550000; wait 2 L/rg; offhook 2; wait 3 answered; wait 2 connected; onhook 2; wait 2 armed; wait 3 armed",
	}
	for _, pkg := range []string{"MS", "DT"} {
		t.Run(pkg, func(t *testing.T) {
			caAddr, gwAddr, logs := startTrunkDaemon(t, strings.ToLower(pkg))
			for _, name := range []string{"line hangs up", "trunk releases", "trunk to a line"} {
				code, out, errOut := runCLI(t, "", "sim", "--call-agent", caAddr, "--listen", gwAddr, "--domain", "sim.invalid",
					"--lines", "2", "--trunk-channels", "2", "--trunk-package", pkg, "--timeout", "20s", "--do", scripts[name])
				if code != 0 || !strings.Contains(out+errOut, "script done") {
					t.Fatalf("%s: exit %d\n%s%s\ndaemon:\n%s", name, code, out, errOut, logs.String())
				}
			}
		})
	}
}

// startTrunkDaemon runs the daemon with lines aaln/1-2 (1001, 1002) and
// trunk group pstn (ds/ds1-1/1-2, signaling sig) on a gateway at the
// returned address gwAddr (the daemon's MGCP socket is caAddr), 9...
// routed out of the trunk and 100x to the lines.
func startTrunkDaemon(t *testing.T, sig string) (caAddr, gwAddr string, logs *testutil.Buffer) {
	t.Helper()
	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"1001": "pw-1", "1002": "pw-2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pbx.Close() })
	caAddr, gwAddr = freeUDP(t), freeUDP(t)
	gwHost, gwPort, _ := net.SplitHostPort(gwAddr)
	pbxHost, pbxPort, _ := net.SplitHostPort(pbx.Addr())
	cfg := fmt.Sprintf(`mgcp:
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
    domain: sim.invalid
    address: %s
    port: %s
dial_plans:
  - name: p
    digit_map: "(100x|9xxxxxxx)"
    default: true
lines:
  - gateway: gw
    endpoint: aaln/{1..2}
    user: "{n+1000}"
    password: "pw-{n}"
trunks:
  - name: pstn
    gateway: gw
    endpoints: ["ds/ds1-1/{1..2}"]
    signaling: %s
routes:
  outbound:
    - name: pstn
      match: { prefix: "9" }
      trunk: pstn
    - name: lines
      match: { prefix: "100" }
      local: true
`, caAddr, pbxHost, pbxPort, gwHost, gwPort, sig)
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs = &testutil.Buffer{}
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: logs, logLevel: "info", logFormat: "text"}
	if err := a.setupLogging(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan net.Addr, 1)
	go func() {
		done <- runDaemon(ctx, a, true, daemon.Options{ConfigPath: path, Stop: make(chan os.Signal, 1), AdminReady: ready})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon ended: %v\n%s", err, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not start")
	}
	return caAddr, gwAddr, logs
}
