// Package testutil holds helpers shared by the tests of several packages:
// finding the real programs the interop tests run, and a buffer a child
// process or goroutine may write while a test reads it.
package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// RequireProgram finds a program the interop tests need. `make test` sets
// MGSIP_REQUIRE_INTEROP=1 (and installs the programs), so there a missing
// program fails the test; a bare `go test` elsewhere skips it.
func RequireProgram(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/usr/bin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	if os.Getenv("MGSIP_REQUIRE_INTEROP") == "1" {
		t.Fatalf("%s is not installed; run `make test-deps`", name)
	}
	t.Skipf("%s not installed (make test installs it)", name)
	return ""
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
