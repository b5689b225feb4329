package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// testEnv provides every variable the example configs reference.
func testEnv(name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, "LINE_SECRET_"):
		return "s3cr3t-" + strings.TrimPrefix(name, "LINE_SECRET_"), true
	case name == "MGSIP_ADMIN_TOKEN", name == "FS_LINE_PASSWORD", name == "PROVIDER_PASSWORD":
		return "s3cr3t-" + strings.ToLower(name), true
	}
	return "", false
}

func TestExampleConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("example configs: %v %v", files, err)
	}
	want := map[string]struct{ lines, trunks, channels int }{
		"demo.yaml": {2, 0, 0}, "asterisk.yaml": {25, 0, 0}, "freeswitch.yaml": {8, 0, 0}, "sip-trunk.yaml": {0, 1, 24},
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := loadConfigFile(f, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Rules.Summary()
			w, ok := want[filepath.Base(f)]
			if !ok {
				t.Fatalf("no expectation for %s", f)
			}
			if s.Lines != w.lines || s.Trunks != w.trunks || s.TrunkChannels != w.channels {
				t.Errorf("summary %+v", s)
			}
		})
	}
	// Spot checks of what the examples mean.
	cfg, err := loadConfigFile("../../configs/asterisk.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Rules.LineByEndpoint("aaln/24", "vg224.example.net")
	if l == nil || l.User != "2024" || l.Password.Reveal() != "s3cr3t-24" || l.Peer.Name != "asterisk" || l.Gateway.Quirks.Profile != "cisco-ios" {
		t.Errorf("aaln/24: %+v", l)
	}
	if h := cfg.Rules.LineBySIPUser("asterisk", "2099"); h == nil || h.Features.Hotline != "2000" || h.Features.HotlineDelay != 3*time.Second {
		t.Errorf("hotline line: %+v", h)
	}
	tr, err := loadConfigFile("../../configs/sip-trunk.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	target, ok := tr.Rules.RouteInbound("provider", "15551230042")
	if !ok || target.Trunk == nil || target.Trunk.Name != "pstn" {
		t.Errorf("DID routing: %+v", target)
	}
	if got := tr.Rules.Peer("provider").ToSIP.Apply("2125551234"); got != "+12125551234" {
		t.Errorf("caller id rewrite: %q", got)
	}
	if got := tr.Rules.Trunk("pstn").ToMGCP.Apply("+15551230042"); got != "5551230042" {
		t.Errorf("DID rewrite: %q", got)
	}
}

// TestInvalidConfigFixtures checks the exact message for each kind of
// configuration error (testdata/config/invalid/NAME.yaml -> NAME.err).
func TestInvalidConfigFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/invalid/*.yaml")
	if len(files) < 40 {
		t.Fatalf("only %d fixtures", len(files))
	}
	update := os.Getenv("MGSIP_UPDATE_GOLDEN") == "1"
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := loadConfigFile(f, testEnv)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("loaded without a configuration error: %v", err)
			}
			got := strings.ReplaceAll(ce.Error(), f, name+".yaml") + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if update {
				_ = os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing %s (MGSIP_UPDATE_GOLDEN=1 writes it): %v", golden, err)
			}
			if got != string(want) {
				t.Errorf("got:\n%swant:\n%s", got, want)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	const secret = "hunter2-very-secret"
	conf := `admin:
  token: ` + secret + `
peers:
  - name: pbx
    host: 192.0.2.1
    account:
      user: acme
      password: ` + secret + `
gateways:
  - name: g
    domain: g.example
lines:
  - gateway: g
    endpoint: aaln/1
    user: "100"
    password: ` + secret + `
`
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfigFile(path, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Rules.Lines[0]
	js, _ := json.Marshal(l.Password)
	for _, s := range []string{fmt.Sprintf("%v %+v %s", cfg.File, cfg.File, l.Password), fmt.Sprintf("%#v", cfg.File.Peers), string(js)} {
		if strings.Contains(s, secret) {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if l.Password.Reveal() != secret {
		t.Error("Reveal lost the value")
	}
	// check-config output, valid and invalid, never shows it either.
	code, out, errOut := runCLI(t, "", "check-config", path)
	if code != 0 || strings.Contains(out+errOut, secret) {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	bad := strings.Replace(conf, "domain: g.example", "domain: g.example\n    port: nope", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, "", "check-config", path)
	if code != 1 || strings.Contains(out+errOut, secret) {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
}

func TestCheckConfigCLI(t *testing.T) {
	t.Setenv("MGSIP_TEST_PASS", "x")
	code, out, _ := runCLI(t, "", "check-config", "../../configs/demo.yaml")
	if code != 0 || !strings.HasPrefix(out, "../../configs/demo.yaml: ok: 1 gateway(s), 2 line(s)") {
		t.Fatalf("exit %d: %s", code, out)
	}
	code, out, _ = runCLI(t, "", "check-config", "testdata/config/invalid/line_unknown_gateway.yaml")
	if code != 1 || !strings.Contains(out, `line_unknown_gateway.yaml:8: lines[0].gateway: no gateway named "gw9"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	if code, _, _ := runCLI(t, "", "check-config", "/nonexistent.yaml"); code != 2 {
		t.Errorf("missing file: exit %d", code)
	}
}

// FuzzLoadConfig feeds arbitrary bytes to the loader: it must never panic,
// and every failure must be a *configError with problems.
func FuzzLoadConfig(f *testing.F) {
	for _, pattern := range []string{"../../configs/*.yaml", "testdata/config/invalid/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := loadConfig("fuzz.yaml", data, testEnv)
		if err == nil {
			return
		}
		var ce *configError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("error %T without problems: %v", err, err)
		}
	})
}

// TestReloadSwapsValidRulesAndKeepsOldOnError runs the daemon, adds a line
// through a reload, then feeds it a broken file.
func TestReloadSwapsValidRulesAndKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.yaml")
	conf := func(lines string) string {
		return `mgcp:
  listen: 127.0.0.1:0
sip:
  listeners:
    - listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
peers:
  - name: pbx
    host: 127.0.0.1
    auth: ip
gateways:
  - name: gw
    domain: gw.test
    address: 127.0.0.1
lines:
  - gateway: gw
    endpoint: aaln/{1..` + lines + `}
    user: "{n+100}"
`
	}
	if err := os.WriteFile(path, []byte(conf("1")), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := make(chan net.Addr, 1)
	reload := make(chan struct{})
	reloaded := make(chan error)
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &testutil.Buffer{}
	a := &app{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, logLevel: "info", logFormat: "text"}
	if err := a.setupLogging(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- runDaemon(ctx, a, daemonOptions{configPath: path, reload: reload, ready: ready, reloaded: reloaded, flagsSetLog: true})
	}()
	var caAddr net.Addr
	select {
	case caAddr = <-ready:
	case err := <-done:
		t.Fatalf("daemon ended: %v", err)
	}
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 3, CallAgent: caAddr.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	code := func(local string) mgcp.ReturnCode {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// A raw NTFY probes whether the daemon knows the endpoint; the
		// strict phone model would quarantine a second off-hook on a line
		// nobody re-armed.
		r, err := gw.Notify(c, local, mgcp.Event{Package: "L", Name: "hd"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Code
	}
	if c1, c2 := code("aaln/1"), code("aaln/2"); c1 != 200 || c2 != 500 {
		t.Fatalf("before reload: aaln/1 %s, aaln/2 %s", c1, c2)
	}
	// A valid file with two more lines is swapped in.
	if err := os.WriteFile(path, []byte(conf("3")), 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	if err := <-reloaded; err != nil {
		t.Fatalf("valid reload: %v", err)
	}
	if c2 := code("aaln/2"); c2 != 200 {
		t.Fatalf("after reload aaln/2 %s", c2)
	}
	// A broken file is rejected and the running rules stay.
	if err := os.WriteFile(path, []byte(conf("3")+"    colour: blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	if err := <-reloaded; err == nil {
		t.Fatal("broken reload accepted")
	}
	if c3 := code("aaln/3"); c3 != 200 {
		t.Fatalf("after rejected reload aaln/3 %s", c3)
	}
	if !strings.Contains(stderr.String(), "reload rejected") || !strings.Contains(stderr.String(), `unknown key \"colour\"`) {
		t.Errorf("log lacks the rejection:\n%s", stderr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}

func TestRunRefusesBadConfigBeforeBinding(t *testing.T) {
	code, _, errOut := runCLI(t, "", "run", "--config", "testdata/config/invalid/gateway_bad_ptime.yaml")
	if code != 1 || !strings.Contains(errOut, "gateways[0].ptime") || !strings.Contains(errOut, "nothing started") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
