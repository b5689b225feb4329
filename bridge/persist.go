package bridge

// Connected calls are written to a store where another node can load them
// after a takeover (docs/cluster.md, "What each call stores"). The line
// goroutine never waits for the store: it hands the latest state of a call
// to a queue that keeps only the newest state of each call, and a few
// writer goroutines send it.

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// CallStore keeps the state of connected calls (internal/cluster
// implements it over etcd, fenced by gateway ownership). A write the
// store refuses because this node no longer owns the gateway is dropped
// by the store, which counts it; Put and Delete are called from the
// bridge's writer goroutines, never from a line's.
type CallStore interface {
	PutCall(ctx context.Context, c StoredCall) error
	DeleteCall(ctx context.Context, gateway, endpoint, callID string) error
}

// StoredCall is one connected call as stored: what a new owner of the
// gateway needs to keep it (takeover.go).
type StoredCall struct {
	Gateway   string // the gateway's name
	Endpoint  string // local endpoint name, e.g. aaln/1
	Line      string // line id
	Direction string // outgoing, incoming
	Number    string // the far party's number

	CallID       string // MGCP C: (RFC 3435 §3.2.2.2)
	ConnectionID string // MGCP I: (§3.2.2.5)
	Mode         string // M: last sent (§3.2.2.6)
	GatewaySDP   []byte // the gateway's LocalConnectionDescriptor
	Codecs       []string

	Start, Answered time.Time

	Dialog sip.DialogState
}

// callKey names a stored call.
func callKey(gateway, endpoint, callID string) string {
	return gateway + "/" + strings.ToLower(endpoint) + "/" + callID
}

// persistLimit bounds the calls the queue tracks; beyond it new calls are
// not stored (and counted).
const persistLimit = 100000

// persister is the coalescing queue in front of the store.
type persister struct {
	store CallStore
	log   *logrus.Entry

	mu      sync.Mutex
	entries map[string]*pentry
	queue   []string // keys with a state to write, each once
	wake    chan struct{}

	written, failed, dropped atomic.Uint64
	logFail                  sampler
}

type pentry struct {
	call   StoredCall // without Dialog: read from dialog when written
	dialog *sip.Dialog
	del    bool // the call ended: delete it
	queued bool
	busy   bool // a writer is at it
	again  bool // changed while busy
}

func newPersister(store CallStore, log *logrus.Entry) *persister {
	return &persister{store: store, log: log, entries: map[string]*pentry{}, wake: make(chan struct{}, 1)}
}

// put records the newest state of a call (line goroutine).
func (p *persister) put(c StoredCall, d *sip.Dialog) {
	key := callKey(c.Gateway, c.Endpoint, c.CallID)
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[key]
	if e == nil {
		if len(p.entries) >= persistLimit {
			p.dropped.Add(1)
			return
		}
		e = &pentry{}
		p.entries[key] = e
	}
	e.call, e.dialog, e.del = c, d, false
	p.enqueue(key, e)
}

// touch says the dialog of a stored call changed (any goroutine).
func (p *persister) touch(gateway, endpoint, callID string) {
	key := callKey(gateway, endpoint, callID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[key]; e != nil && !e.del {
		p.enqueue(key, e)
	}
}

// remove deletes a stored call (line goroutine). always deletes it even
// when this node never wrote it (a call adopted from another node and
// dropped).
func (p *persister) remove(gateway, endpoint, callID string, always bool) {
	key := callKey(gateway, endpoint, callID)
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[key]
	if e == nil {
		if !always {
			return
		}
		e = &pentry{call: StoredCall{Gateway: gateway, Endpoint: endpoint, CallID: callID}}
		p.entries[key] = e
	}
	e.del, e.dialog = true, nil
	p.enqueue(key, e)
}

// forget drops what is queued for a gateway's calls without writing it:
// another node owns them now.
func (p *persister) forget(gateway string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, e := range p.entries {
		if e.call.Gateway == gateway {
			delete(p.entries, key)
		}
	}
	p.queue = slices.DeleteFunc(p.queue, func(k string) bool { return p.entries[k] == nil })
}

func (p *persister) enqueue(key string, e *pentry) {
	if e.busy {
		e.again = true
		return
	}
	if e.queued {
		return
	}
	e.queued = true
	p.queue = append(p.queue, key)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run is one writer; it returns when ctx ends.
func (p *persister) run(ctx context.Context) {
	for {
		p.mu.Lock()
		for len(p.queue) == 0 {
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-ctx.Done():
				return
			}
			p.mu.Lock()
		}
		key := p.queue[0]
		p.queue = p.queue[1:]
		e := p.entries[key]
		if e == nil {
			p.mu.Unlock()
			continue
		}
		e.queued, e.busy = false, true
		c, d, del := e.call, e.dialog, e.del
		p.mu.Unlock()

		err := p.write(ctx, c, d, del)

		p.mu.Lock()
		e.busy = false
		switch {
		case p.entries[key] != e: // forgotten meanwhile
		case e.again:
			e.again = false
			p.enqueue(key, e)
		case del && err == nil:
			delete(p.entries, key)
		}
		p.mu.Unlock()
		if err != nil {
			p.failed.Add(1)
			p.logFail.do(func() {
				p.log.WithError(err).WithFields(logrus.Fields{"gateway": c.Gateway, "endpoint": c.Endpoint, "call": c.CallID}).
					Warn("call state not stored")
			})
		}
	}
}

func (p *persister) write(ctx context.Context, c StoredCall, d *sip.Dialog, del bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if del {
		return p.store.DeleteCall(ctx, c.Gateway, c.Endpoint, c.CallID)
	}
	st, ok := d.State()
	if !ok {
		return nil // not confirmed yet (its change comes), or over (its delete comes)
	}
	c.Dialog = st
	if err := p.store.PutCall(ctx, c); err != nil {
		return err
	}
	p.written.Add(1)
	return nil
}

// flush waits until nothing is queued or being written, or until d
// passed.
func (p *persister) flush(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		busy := len(p.queue) > 0 || p.anyBusy()
		p.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *persister) anyBusy() bool {
	for _, e := range p.entries {
		if e.busy {
			return true
		}
	}
	return false
}

// StoreStats counts the bridge's call-state writes.
type StoreStats struct {
	Written uint64 // states stored
	Failed  uint64 // writes or deletes the store refused or did not answer
	Dropped uint64 // calls not stored: the queue was full
	Pending int    // calls with a state not written yet
}

// StoreStats reports the call-state writes (zero without Config.Calls).
func (b *Bridge) StoreStats() StoreStats {
	p := b.persist
	if p == nil {
		return StoreStats{}
	}
	p.mu.Lock()
	n := len(p.queue)
	p.mu.Unlock()
	return StoreStats{Written: p.written.Load(), Failed: p.failed.Load(), Dropped: p.dropped.Load(), Pending: n}
}

// ---- on the line goroutine ----

// storable reports whether c is a call another node could keep: answered,
// with a SIP dialog and a connection on the gateway. Calls being set up,
// local calls and transfer legs are not stored.
func storable(l *line, c *call) bool {
	return c != nil && !c.ended && c.dialog != nil && !c.answered.IsZero() && c.connID != "" && c.peer == nil &&
		c.xferOf == nil && c.xfer == nil && c.fork == nil
}

// persistCalls hands the store what changed since the last input: the
// state of each storable call of the line that changed, and the deletion
// of each stored call that ended. Called after every input.
func (l *line) persistCalls() {
	p := l.b.persist
	if p == nil {
		return
	}
	gw := l.rule.Gateway.Name
	for c, prev := range l.persisted {
		if c.ended || (c != l.call && c != l.other) || c.dialog == nil {
			p.remove(gw, prev.Endpoint, prev.CallID, false)
			delete(l.persisted, c)
		}
	}
	for _, c := range []*call{l.call, l.other} {
		if !storable(l, c) {
			continue
		}
		sc := l.storedCall(c)
		prev, ok := l.persisted[c]
		if ok && sameCall(prev, sc) && l.persistedDialog[c] == c.dialog {
			continue
		}
		if l.persisted == nil {
			l.persisted, l.persistedDialog = map[*call]StoredCall{}, map[*call]*sip.Dialog{}
		}
		l.persisted[c], l.persistedDialog[c] = sc, c.dialog
		ep, id := sc.Endpoint, sc.CallID
		c.dialog.OnChange(func() { p.touch(gw, ep, id) })
		p.put(sc, c.dialog)
	}
}

// storedCall is c as stored, without its dialog (read when written).
func (l *line) storedCall(c *call) StoredCall {
	return StoredCall{Gateway: l.rule.Gateway.Name, Endpoint: l.ep.Local, Line: l.rule.ID, Direction: c.direction, Number: c.number,
		CallID: c.id, ConnectionID: c.connID, Mode: string(c.mode), GatewaySDP: c.gwSDP, Codecs: c.codecs,
		Start: c.start, Answered: c.answered}
}

func sameCall(a, b StoredCall) bool {
	return a.ConnectionID == b.ConnectionID && a.Mode == b.Mode && string(a.GatewaySDP) == string(b.GatewaySDP) &&
		slices.Equal(a.Codecs, b.Codecs) && a.Direction == b.Direction && a.Number == b.Number
}
