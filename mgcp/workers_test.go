package mgcp_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/pprof"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// workers counts the goroutines serving commands (mgcp/workers.go).
func workers() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "mgcp.(*CallAgent).worker(")
}

func ntfy(id int) string { return fmt.Sprintf("NTFY %d aaln/1@gw MGCP 1.0\nX: 1\nO: L/hd\n", id) }

// Commands are served on reused workers: a handler that blocks does not
// hold up the next command, a worker reused after a quick command sends
// its provisional response for a slow one on time (not early, from the
// previous command's timer), and idle workers end.
func TestWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		ca, p := newServed(t, mgcp.Config{}, func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			switch c.TransactionID {
			case 1:
				<-release // blocked until the test lets it go
			case 4:
				time.Sleep(time.Second) // slow: a provisional goes first
			}
			return mgcp.NewResponse(c, mgcp.CodeOK)
		})
		base := workers()

		p.send(ntfy(1)) // blocks its worker
		synctest.Wait()
		p.send(ntfy(2)) // needs another worker
		if r := p.recv(); firstLine(r) != "200 2 OK" {
			t.Fatalf("a command behind a blocked handler: got %q, want its 200", r)
		}
		if n := workers() - base; n != 2 {
			t.Fatalf("%d workers, want 2 (one blocked, one that served command 2)", n)
		}
		close(release)
		if r := p.recv(); firstLine(r) != "200 1 OK" {
			t.Fatalf("blocked command released: got %q, want its 200", r)
		}
		synctest.Wait()

		// Sequential commands reuse the two workers.
		p.send(ntfy(3))
		if r := p.recv(); firstLine(r) != "200 3 OK" {
			t.Fatalf("command 3: %q", r)
		}
		start := time.Now()
		p.send(ntfy(4))
		r := p.recv()
		if firstLine(r) != "100 4 In progress" {
			t.Fatalf("slow command: got %q first, want the provisional", r)
		}
		if d := time.Since(start); d != ca.Config().ProvisionalAfter {
			t.Fatalf("provisional after %v, want %v", d, ca.Config().ProvisionalAfter)
		}
		if r := p.recv(); firstLine(r) != "200 4 OK" {
			t.Fatalf("slow command's final: %q", r)
		}
		p.send("000 4\n")
		synctest.Wait()
		if n := workers() - base; n != 2 {
			t.Fatalf("%d workers after sequential commands, want the same 2", n)
		}

		// Idle workers end (after one to two idle periods).
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := workers() - base; n != 0 {
			t.Fatalf("%d workers left idle, want 0", n)
		}
	})
}
