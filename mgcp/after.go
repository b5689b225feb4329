package mgcp

import (
	"context"
	"sync"
)

// handlerCtx is the context a Handler gets: the CallAgent's (it ends on
// Close) plus the functions to run once the command's final response is
// on the wire.
type handlerCtx struct {
	context.Context
	mu    sync.Mutex
	after []func()
	done  bool // the response was sent; AfterResponse runs f at once
}

type handlerCtxKey struct{}

// Value returns the handlerCtx itself for its key.
func (c *handlerCtx) Value(key any) any {
	if key == (handlerCtxKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// AfterResponse arranges for f to run once the final response to the
// command being handled has been sent, on the goroutine that served the
// command (before it waits for a "000", if one was asked for). ctx must
// be the context the Handler was given; for any other context, and after
// the response was sent, f runs at once. Use it for work that follows
// from a command but must not hold up its answer: the audit and re-arming
// of endpoints after an RSIP, which the gateway retransmits like any
// command until it is answered (RFC 3435 §3.5.3), so that in a restart
// avalanche (§4.4.6) a late answer multiplies the load.
func AfterResponse(ctx context.Context, f func()) {
	hc, ok := ctx.Value(handlerCtxKey{}).(*handlerCtx)
	if ok {
		hc.mu.Lock()
		if !hc.done {
			hc.after = append(hc.after, f)
			hc.mu.Unlock()
			return
		}
		hc.mu.Unlock()
	}
	f()
}
