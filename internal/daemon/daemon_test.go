package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/sirupsen/logrus"
)

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
	log := logrus.New()
	log.SetOutput(stderr)
	cfg, err := config.LoadFile(path, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Config: cfg, Log: log, Reload: reload, Ready: ready, Reloaded: reloaded})
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
	// A 0-byte file is rejected: the lines stay.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	if err := <-reloaded; err == nil || !strings.Contains(err.Error(), "configures no gateway, line or trunk") {
		t.Fatalf("empty reload: %v", err)
	}
	if c1 := code("aaln/1"); c1 != 200 {
		t.Fatalf("after the empty file aaln/1 %s", c1)
	}
	if !strings.Contains(stderr.String(), "reload rejected") || !strings.Contains(stderr.String(), `unknown key \"colour\"`) {
		t.Errorf("log lacks the rejection:\n%s", stderr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}
