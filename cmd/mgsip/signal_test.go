package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
)

// TestMain lets the test binary stand in for mgsip itself when
// MGSIP_BE_MAIN=1, so signal handling can be tested on a real process.
func TestMain(m *testing.M) {
	if os.Getenv("MGSIP_BE_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// waitFor polls the process's output until it contains s.
func waitFor(t *testing.T, out *testutil.Buffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output:\n%s", s, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunSignals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.yaml")
	good := "mgcp:\n  listen: 127.0.0.1:0\nsip:\n  listeners:\n    - listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\ngateways:\n  - name: gw\n    domain: gw.test\n"
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "--config", path, "--log-format", "text")
	cmd.Env = append(os.Environ(), "MGSIP_BE_MAIN=1")
	out := &testutil.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	waitFor(t, out, "mgsip running")

	// SIGHUP with a valid file: reloaded.
	more := good + "  - name: gw2\n    domain: gw2.test\n"
	if err := os.WriteFile(path, []byte(more), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "configuration reloaded")
	if !strings.Contains(out.String(), "2 gateway(s)") {
		t.Errorf("reload did not pick up the second gateway:\n%s", out.String())
	}
	// SIGHUP with a broken file: rejected, still running.
	if err := os.WriteFile(path, []byte(more+"    port: zero\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "reload rejected")
	// SIGHUP with a 0-byte file (truncated by an editor or a full disk):
	// rejected too; the gateways stay.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "configures no gateway, line or trunk")
	if strings.Count(out.String(), "reload rejected") != 2 {
		t.Errorf("the empty file was not rejected:\n%s", out.String())
	}
	// SIGTERM: a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	waitFor(t, out, "mgsip stopped")
}
