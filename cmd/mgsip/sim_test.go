package main

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mgsip/mgsip/mgcp"
)

func TestParseSimScript(t *testing.T) {
	steps, err := parseSimScript("offhook 1; wait 1 L/dl # dial tone\ndial 1 1002\n\nrtp 2 50; sleep 20ms; restart")
	if err != nil || len(steps) != 6 || steps[2].arg != "1002" || steps[1].source != 1 || steps[2].source != 2 {
		t.Fatalf("%+v %v", steps, err)
	}
	for bad, want := range map[string]string{
		"offhook":         "script line 1: offhook takes 1 argument(s)",
		"ring 1":          `script line 1: unknown step "ring"`,
		"offhook x":       `script line 1: bad line number "x"`,
		"\nsleep soon":    `script line 2: bad duration "soon"`,
		"rtp 1 lots":      `script line 1: bad packet count "lots"`,
		"restart 1":       "script line 1: restart takes 0 argument(s)",
		"dial 1":          "script line 1: dial takes 2 argument(s)",
		"wait 0 L/dl":     `script line 1: bad line number "0"`,
		"onhook 1 2 3 4 ": "script line 1: onhook takes 1 argument(s)",
	} {
		if _, err := parseSimScript(bad); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %s", bad, err, want)
		}
	}
}

// TestSimCommand runs `mgsip sim` against a stand-in call agent that
// answers everything 200 and never re-arms a line: the hook steps pass,
// but line 1's on-hook is quarantined (the gateway waits for a request
// after its first NTFY), so two NTFY go out; waiting for a dial tone
// nobody plays fails with exit 1; a bad script exits 2.
func TestSimCommand(t *testing.T) {
	var ntfy atomic.Int32
	ca, err := mgcp.Listen(mgcp.Config{ListenAddr: "127.0.0.1:0"}, mgcp.WithHandler(mgcp.HandlerFunc(
		func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			if c.Verb == mgcp.VerbNTFY {
				ntfy.Add(1)
			}
			return mgcp.NewResponse(c, mgcp.CodeOK)
		})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = ca.Serve(ctx) }()
	free := func() string { return freeUDP(t) }
	code, out, _ := runCLI(t, "", "sim", "--listen", free(), "--call-agent", ca.LocalAddr().String(), "--do", "offhook 1; onhook 1; offhook 2")
	if code != 0 || !strings.Contains(out, "script done (3 steps)") || !strings.Contains(out, "line 1 onhook: mgcptest: no notification sent: quarantined") || ntfy.Load() != 2 {
		t.Fatalf("exit %d, %d NTFY\n%s", code, ntfy.Load(), out)
	}
	code, out, _ = runCLI(t, "", "sim", "--listen", free(), "--call-agent", ca.LocalAddr().String(), "--timeout", "300ms", "--do", "offhook 1; wait 1 L/dl")
	if code != 1 || !strings.Contains(out, "script line 1 (wait): waiting for L/dl on line 1") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "", "sim", "--do", "jump 1"); code != 2 {
		t.Fatalf("bad script: exit %d", code)
	}
}
