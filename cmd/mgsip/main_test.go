package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestLint(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(good, []byte("200 1201 OK\r\n.\r\nRQNT 1202 aaln/1@gw MGCP 1.0\r\nX: 1\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("CRCX 5 aaln/1@gw MGCP 1.0\nC: 1\nM: recvonly\nL: e:maybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		output []string
	}{
		{"well formed piggyback", "", []string{"mgcp", "lint", good}, 0, []string{good + ": ok 200 1201", good + ": ok RQNT 1202"}},
		{"malformed", "", []string{"mgcp", "lint", good, bad}, 1, []string{bad + `:4:6: L: expected on or off in option "e": "maybe" (would answer 532)`}},
		{"stdin", "NTFY 9 aaln/1@gw MGCP 1.0\nO: L/hd\n", []string{"mgcp", "lint", "-"}, 0, []string{"-: ok NTFY 9"}},
		{"json", "NTFY 9 aaln/1@gw MGCP 1.0\nO: L/hd\n", []string{"mgcp", "lint", "--json", "-"}, 0, []string{`"verb": "NTFY"`, `"name": "hd"`}},
		{"no files", "", []string{"mgcp", "lint"}, 2, nil},
		{"missing file", "", []string{"mgcp", "lint", filepath.Join(dir, "nope")}, 2, nil},
		{"bad flag", "", []string{"mgcp", "lint", "--nope", good}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.stdin, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			for _, want := range tt.output {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestDigitMapTest(t *testing.T) {
	code, out, _ := runCLI(t, "", "digitmap", "test", "(1xxx|*xx|0T|9x.T)", "1", "1002", "0", "0T", "5")
	want := "1: partial\n1002: match\n0: timer\n0T: match\n5: nomatch\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, _, errOut := runCLI(t, "", "digitmap", "test", "(1xx", "1")
	if code != 2 || !strings.Contains(errOut, "column 5: missing ')'") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestSend(t *testing.T) {
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	code, out, errOut := runCLI(t, "", "mgcp", "send", "--to", gw.Addr(), `CRCX 77 aaln/1@gw.test MGCP 1.0\nC: 1\nM: recvonly\nL: a:PCMU`)
	if code != 0 || !strings.HasPrefix(out, "200 77 OK\r\nI: ") || !strings.Contains(out, "m=audio") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "", "mgcp", "send", "--to", gw.Addr(), `DLCX 78 aaln/1@gw.test MGCP 1.0\nI: FFFF`)
	if code != 1 || !strings.HasPrefix(out, "515 78") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// Nobody answers: exit 3 within the timeout.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer dead.Close()
	start := time.Now()
	code, _, _ = runCLI(t, "", "mgcp", "send", "--timeout", "700ms", "--to", dead.LocalAddr().String(), `RQNT 79 aaln/1@gw MGCP 1.0\nX: 1`)
	if code != 3 || time.Since(start) > 5*time.Second {
		t.Fatalf("exit %d after %v", code, time.Since(start))
	}
	if code, _, _ := runCLI(t, "", "mgcp", "send", `RQNT 79 aaln/1@gw MGCP 1.0`); code != 2 {
		t.Fatalf("missing --to: exit %d", code)
	}
	if code, _, _ := runCLI(t, "", "mgcp", "send", "--to", gw.Addr(), `200 1 OK`); code != 2 {
		t.Fatalf("a response is not a command: exit %d", code)
	}
}

// TestDemoCommand runs `mgsip demo` (internal/sim tests the demo's
// ladder in detail).
func TestDemoCommand(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "demo", "--config", "../../configs/demo.yaml")
	if code != 0 || !strings.Contains(stdout, "VERDICT: OK") {
		t.Fatalf("exit %d\n%s", code, stdout)
	}
}

func TestLoggingFlags(t *testing.T) {
	if code, _, _ := runCLI(t, "", "--log-level", "loud", "version"); code != 2 {
		t.Errorf("bad level: exit %d", code)
	}
	if code, _, _ := runCLI(t, "", "--log-format", "xml", "version"); code != 2 {
		t.Errorf("bad format: exit %d", code)
	}
	if code, out, _ := runCLI(t, "", "--log-format", "json", "version"); code != 0 || !strings.HasPrefix(out, "mgsip ") {
		t.Errorf("version: exit %d %q", code, out)
	}
	if code, _, _ := runCLI(t, "", "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
}
