package testutil

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Etcd is a real etcd server (Debian's etcd-server) started by a test: one
// member on an address of its own in 127/8, its data in a temporary
// directory, stopped by its PID when the test ends.
type Etcd struct {
	// Endpoint is the client URL (http://ip:port).
	Endpoint string

	t      testing.TB
	bin    string
	args   []string
	logs   *Buffer
	cmd    *exec.Cmd
	exited chan struct{}
}

// freeTCPPort binds ip:0 and releases it: etcd cannot bind port 0 itself
// (it must advertise its URLs), so a free port is picked for it. Another
// process could take the port in between; on a random 127/8 address that
// is rare.
func freeTCPPort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// StartEtcd starts etcd and waits until it reports itself healthy.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := RequireProgram(t, "etcd")
	ip := LoopbackIP()
	client := fmt.Sprintf("http://%s:%d", ip, freeTCPPort(t, ip))
	peer := fmt.Sprintf("http://%s:%d", ip, freeTCPPort(t, ip))
	e := &Etcd{
		Endpoint: client,
		t:        t,
		bin:      bin,
		logs:     &Buffer{},
		args: []string{
			"--name", "test",
			"--data-dir", filepath.Join(t.TempDir(), "etcd"),
			"--listen-client-urls", client,
			"--advertise-client-urls", client,
			"--listen-peer-urls", peer,
			"--initial-advertise-peer-urls", peer,
			"--initial-cluster", "test=" + peer,
			"--initial-cluster-state", "new",
			"--logger", "zap",
			"--log-level", "warn",
		},
	}
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("etcd log:\n%s", e.logs.String())
		}
	})
	e.Start()
	return e
}

// Start starts etcd again (after Stop) with the same data and addresses.
func (e *Etcd) Start() {
	e.t.Helper()
	cmd := exec.Command(e.bin, e.args...)
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	// Should the test process die without its cleanups, etcd goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.cmd = cmd
	e.exited = make(chan struct{})
	exited := e.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			e.t.Fatalf("etcd exited at start:\n%s", e.logs.String())
		default:
		}
		resp, err := hc.Get(e.Endpoint + "/health")
		if err == nil {
			var b [256]byte
			k, _ := resp.Body.Read(b[:])
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b[:k]), `"true"`) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("etcd not healthy within 20 s:\n%s", e.logs.String())
}

// Stop ends etcd (SIGTERM to its PID, SIGKILL after 5 s) and waits for it.
// Idempotent.
func (e *Etcd) Stop() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGCONT) // in case it is paused
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}

// Pause stops the etcd process (SIGSTOP): it keeps its sockets but answers
// nothing, like a host cut off the network.
func (e *Etcd) Pause() { _ = e.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused etcd (SIGCONT).
func (e *Etcd) Resume() { _ = e.cmd.Process.Signal(syscall.SIGCONT) }

// Ctl runs etcdctl (v3 API) against the server with args, as an operator
// or a stray tool would, and returns its output; a failure fails the test.
func (e *Etcd) Ctl(args ...string) string {
	e.t.Helper()
	bin := RequireProgram(e.t, "etcdctl")
	cmd := exec.Command(bin, append([]string{"--endpoints", e.Endpoint, "--command-timeout", "5s"}, args...)...)
	cmd.Env = append(cmd.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
