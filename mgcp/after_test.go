package mgcp_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// TestAfterResponse: work a handler defers with AfterResponse runs once
// the command's answer is on the wire, so a command it sends to the same
// peer follows the answer.
func TestAfterResponse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var e *env
		ran := make(chan error, 1)
		h := mgcp.HandlerFunc(func(ctx context.Context, _ netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
			mgcp.AfterResponse(ctx, func() {
				_, err := e.ca.Do(context.Background(), "127.0.0.1:2427", &mgcp.Command{Verb: mgcp.VerbAUEP, Endpoint: ep1})
				ran <- err
			})
			return mgcp.NewResponse(cmd, mgcp.CodeOK)
		})
		e = newEnv(t, mgcp.Config{}, mgcptest.GatewayConfig{Endpoints: []string{"aaln/1"}}, mgcp.WithHandler(h))
		if _, err := e.gw.Restart(context.Background(), "aaln/1", mgcp.RestartRestart, 0); err != nil {
			t.Fatal(err)
		}
		if err := <-ran; err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, s := range e.rec.all() {
			order = append(order, strings.Fields(s.b)[0])
		}
		if len(order) != 2 || order[0] != "200" || order[1] != "AUEP" {
			t.Fatalf("call agent sent %v, want the RSIP's 200, then the AUEP", order)
		}
		// Outside a handler, f runs at once.
		done := false
		mgcp.AfterResponse(context.Background(), func() { done = true })
		if !done {
			t.Error("AfterResponse with a plain context did not run f")
		}
	})
}
