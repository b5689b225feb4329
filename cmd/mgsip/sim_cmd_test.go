package main

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mgsip/mgsip/mgcp"
)

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
