package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tests below run against a real etcd (testutil.StartEtcd) with a
// lease TTL of 2 s (etcd's minimum with its default timing), unless a
// test needs the default.
const testTTL = 2 * time.Second

// event is one Change of one node, in the order the test saw them.
type event struct {
	node string
	Change
}

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(node string, c Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{node, c})
}

func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// first returns the first event matching, if any.
func (r *recorder) first(match func(event) bool) (event, bool) {
	for _, e := range r.all() {
		if match(e) {
			return e, true
		}
	}
	return event{}, false
}

type harness struct {
	t        *testing.T
	etcd     *testutil.Etcd
	rec      *recorder
	gateways []string
	pref     map[string][]string
	ttl      time.Duration

	mu    sync.Mutex
	nodes map[string]*testNode
}

func (h *harness) node(name string) *testNode {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodes[name]
}

type testNode struct {
	*Node
	cancel context.CancelFunc
	done   chan struct{}
	busy   sync.Map // gateway -> true: not idle
}

func newHarness(t *testing.T, gateways int) *harness {
	h := &harness{t: t, etcd: testutil.StartEtcd(t), rec: &recorder{}, ttl: testTTL, nodes: map[string]*testNode{}}
	for i := range gateways {
		h.gateways = append(h.gateways, fmt.Sprintf("gw-%02d", i))
	}
	return h
}

func testLog(t *testing.T, name string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(tWriter{t})
		l.SetLevel(logrus.DebugLevel)
	}
	return l.WithField("test_node", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// start runs a node connected to endpoint (etcd, or a proxy in front of it).
func (h *harness) start(name, endpoint string) *testNode {
	h.t.Helper()
	tn := &testNode{done: make(chan struct{})}
	n, err := New(Config{
		Name: name, MGCPAddr: "mgsip@" + name + ":2727", SIPAddr: name + ":5060",
		Endpoints: []string{endpoint}, TTL: h.ttl, Gateways: h.gateways, Preference: h.pref,
		Idle:     func(g string) bool { _, busy := tn.busy.Load(g); return !busy },
		OnChange: func(c Change) { h.rec.add(name, c) },
		Log:      testLog(h.t, name),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	tn.Node = n
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	go func() { defer close(tn.done); _ = n.Run(ctx) }()
	h.mu.Lock()
	h.nodes[name] = tn
	h.mu.Unlock()
	h.t.Cleanup(func() { h.kill(name) })
	return tn
}

// kill ends a node as a crash would: Run stops and the client closes, the
// lease is not revoked.
func (h *harness) kill(name string) {
	tn := h.node(name)
	tn.cancel()
	_ = tn.Close()
	<-tn.done
}

// owners returns, per gateway, the nodes whose Owns says yes.
func (h *harness) owners(names ...string) map[string][]string {
	out := map[string][]string{}
	for _, g := range h.gateways {
		for _, name := range names {
			if n := h.node(name); n != nil && n.Owns(g) {
				out[g] = append(out[g], name)
			}
		}
	}
	return out
}

// settled says whether every gateway is owned by exactly the node pick
// chooses among live.
func (h *harness) settled(live ...string) bool {
	owners := h.owners(live...)
	for _, g := range h.gateways {
		want := pick(g, live, h.pref[g])
		if o := owners[g]; len(o) != 1 || o[0] != want {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, limit)
	return 0
}

// watchDouble samples every node's Owns until stop and fails the test when
// two nodes say yes for one gateway at once.
func (h *harness) watchDouble(names ...string) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	var doubles atomic.Int64
	var first atomic.Value
	wg.Go(func() {
		for {
			select {
			case <-quit:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for g, o := range h.owners(names...) {
				if len(o) > 1 {
					if doubles.Add(1) == 1 {
						first.Store(fmt.Sprintf("%s owned by %v", g, o))
					}
				}
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
		if doubles.Load() > 0 {
			h.t.Errorf("a gateway was owned by two nodes at once (%d samples), first: %v", doubles.Load(), first.Load())
		}
	}
}

func TestTwoAndThreeNodesShareGateways(t *testing.T) {
	h := newHarness(t, 24)
	h.pref = map[string][]string{"gw-00": {"c", "a"}, "gw-01": {"b"}}
	stop := h.watchDouble("a", "b", "c")
	h.start("a", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "one node owns everything", func() bool { return h.settled("a") })
	h.start("b", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "two nodes share the gateways", func() bool { return h.settled("a", "b") })
	if got := len(h.node("b").Owned()); got == 0 || got == len(h.gateways) {
		t.Fatalf("b owns %d of %d gateways", got, len(h.gateways))
	}
	if !h.node("a").Owns("gw-00") || !h.node("b").Owns("gw-01") {
		t.Fatal("preference not followed with two nodes")
	}
	h.start("c", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "three nodes share the gateways", func() bool { return h.settled("a", "b", "c") })
	if !h.node("c").Owns("gw-00") {
		t.Fatal("gw-00 prefers c, which is up, but c does not own it")
	}
	stop()

	// A joining node took only gateways that pick gives it: nothing moved
	// between a and b when c joined.
	for _, e := range h.rec.all() {
		if e.Owned && e.node != "c" && e.Reason == "acquired" && e.At.After(time.Now().Add(-time.Minute)) {
			if want := pick(e.Gateway, []string{"a", "b"}, h.pref[e.Gateway]); e.node == "b" && want != "b" {
				t.Errorf("b acquired %s which a should own", e.Gateway)
			}
		}
	}

	st, err := h.node("a").Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 || len(st.Unowned) != 0 || st.Fenced || st.ValidFor <= 0 {
		t.Fatalf("status: %+v", st)
	}
	total := 0
	for _, ns := range st.Nodes {
		total += len(ns.Gateways)
		if !slices.Equal(ns.Gateways, h.node(ns.Name).Owned()) {
			t.Errorf("status says %s owns %v, the node says %v", ns.Name, ns.Gateways, h.node(ns.Name).Owned())
		}
		if ns.TTL <= 0 || ns.TTL > h.ttl || ns.MGCPAddr != "mgsip@"+ns.Name+":2727" {
			t.Errorf("status of %s: %+v", ns.Name, ns)
		}
	}
	if total != len(h.gateways) {
		t.Fatalf("status lists %d gateways, configured %d", total, len(h.gateways))
	}
	if o, ok := h.node("b").Owner("gw-00"); !ok || o.Name != "c" || o.MGCPAddr != "mgsip@c:2727" {
		t.Fatalf("b names %+v (%v) as gw-00's owner", o, ok)
	}

	// Junk under the prefix is ignored, not fatal.
	if _, err := h.node("a").cli.Put(context.Background(), DefaultPrefix+"nodes/junk", "{not json"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(h.ttl)
	if !h.settled("a", "b", "c") {
		t.Fatal("a junk node key changed ownership")
	}

	// A node key deleted by hand is written again; nothing moves.
	before := len(h.rec.all())
	if _, err := h.node("a").cli.Delete(context.Background(), DefaultPrefix+"nodes/b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*h.ttl, "b's node key is back", func() bool {
		resp, err := h.node("a").cli.Get(context.Background(), DefaultPrefix+"nodes/b")
		return err == nil && len(resp.Kvs) == 1
	})
	waitFor(t, 2*h.ttl, "ownership settles", func() bool { return h.settled("a", "b", "c") })

	// A gateway removed from b's configuration is released by b and,
	// being still in a's and c's, taken by one of them after a TTL, which
	// keeps it although b is its preferred node: b had its chance.
	gone := h.node("b").Owned()[0]
	var rest []string
	for _, g := range h.gateways {
		if g != gone {
			rest = append(rest, g)
		}
	}
	h.node("b").SetGateways(rest, h.pref)
	waitFor(t, 2*h.ttl, "b released "+gone, func() bool {
		o := h.owners("a", "b", "c")[gone]
		return len(o) == 1 && o[0] != "b"
	})
	taker := h.owners("a", "b", "c")[gone][0]
	time.Sleep(h.ttl)
	if o := h.owners("a", "b", "c")[gone]; len(o) != 1 || o[0] != taker {
		t.Fatalf("%s moved on from %s to %v", gone, taker, o)
	}
	for _, e := range h.rec.all()[before:] {
		if e.Gateway != gone && e.Reason != "acquired" || e.Gateway == gone && e.node == "b" && e.Reason != "released" {
			t.Errorf("unexpected change %+v", e)
		}
	}
}

func TestKilledNodesGatewaysMove(t *testing.T) {
	h := newHarness(t, 12)
	for _, name := range []string{"a", "b", "c"} {
		h.start(name, h.etcd.Endpoint)
	}
	waitFor(t, 3*h.ttl, "three nodes share the gateways", func() bool { return h.settled("a", "b", "c") })
	victim := h.node("b")
	lost := victim.Owned()
	if len(lost) == 0 {
		t.Fatal("b owns nothing")
	}
	// A connected call on one of b's gateways: it must survive b.
	call := CallState{Gateway: lost[0], Endpoint: "aaln/1", MGCP: MGCPState{CallID: "C1", ConnectionIDs: []string{"I1"}},
		SIP: DialogState{CallID: "sip-1", LocalTag: "l", RemoteTag: "r", LocalCSeq: 1, RemoteCSeq: 1}}
	if err := victim.PutCall(context.Background(), call); err != nil {
		t.Fatal(err)
	}

	stop := h.watchDouble("a", "b", "c")
	killed := time.Now()
	victim.mu.Lock()
	deadline := victim.validUntil
	victim.mu.Unlock()
	h.kill("b")
	took := waitFor(t, h.ttl+2*time.Second, "the survivors own b's gateways", func() bool { return h.settled("a", "c") })
	stop()
	t.Logf("b's %d gateways owned by the survivors %v after the kill", len(lost), took)
	for _, g := range lost {
		e, ok := h.rec.first(func(e event) bool { return e.Gateway == g && e.Owned && e.At.After(killed) })
		if !ok {
			t.Fatalf("no acquisition of %s recorded", g)
		}
		if !e.At.After(deadline) {
			t.Errorf("%s acquired by %s at %v, before b's fencing deadline %v", g, e.node, e.At, deadline)
		}
	}
	if victim.Owns(lost[0]) {
		t.Fatal("the killed node still says it owns a gateway")
	}

	// The takeover loads the call (b's store lease outlives its node lease).
	newOwner := h.owners("a", "c")[lost[0]][0]
	adopted, err := h.node(newOwner).AdoptCalls(context.Background(), lost[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(adopted) != 1 || adopted[0].MGCP.CallID != "C1" || adopted[0].SIP.CallID != "sip-1" {
		t.Fatalf("adopted %+v", adopted)
	}
	resp, err := h.node(newOwner).cli.Get(context.Background(), h.node(newOwner).callKey(lost[0], "aaln/1", "C1"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("stored call after adoption: %v %v", resp, err)
	}
	if got, want := clientv3.LeaseID(resp.Kvs[0].Lease), h.node(newOwner).storeLease; got != want {
		t.Fatalf("adopted call under lease %x, the new owner's store lease is %x", got, want)
	}
}

func TestPartitionedNodeStopsBeforeOthersTakeOver(t *testing.T) {
	h := newHarness(t, 12)
	px := testutil.StartProxy(t, h.etcd.Endpoint)
	h.start("a", px.Addr())
	h.start("b", h.etcd.Endpoint)
	h.start("c", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "three nodes share the gateways", func() bool { return h.settled("a", "b", "c") })
	cutOff := h.node("a").Owned()
	if len(cutOff) == 0 {
		t.Fatal("a owns nothing")
	}
	stop := h.watchDouble("a", "b", "c")
	cut := time.Now()
	px.Cut()
	took := waitFor(t, h.ttl+2*time.Second, "b and c own a's gateways", func() bool { return h.settled("b", "c") })
	t.Logf("a's %d gateways owned by b and c %v after the cut", len(cutOff), took)
	for _, g := range cutOff {
		fenced, ok := h.rec.first(func(e event) bool { return e.node == "a" && e.Gateway == g && !e.Owned && e.At.After(cut) })
		if !ok {
			t.Fatalf("a never reported the loss of %s", g)
		}
		if fenced.Reason != "fenced" {
			t.Errorf("a lost %s for %q, want fenced", g, fenced.Reason)
		}
		taken, ok := h.rec.first(func(e event) bool { return e.node != "a" && e.Gateway == g && e.Owned && e.At.After(cut) })
		if !ok {
			t.Fatalf("nobody acquired %s", g)
		}
		if !fenced.At.Before(taken.At) {
			t.Errorf("%s: a stopped at %v, %s started at %v", g, fenced.At.Sub(cut), taken.node, taken.At.Sub(cut))
		} else {
			t.Logf("%s: a stopped %v after the cut, %s started %v after it", g, fenced.At.Sub(cut), taken.node, taken.At.Sub(cut))
		}
	}
	if st, _ := h.node("a").Status(context.Background()); !st.Fenced {
		// Status cannot reach etcd from a; the local view says fenced.
		h.node("a").mu.Lock()
		fencedNow := h.node("a").fenced
		h.node("a").mu.Unlock()
		if !fencedNow {
			t.Fatal("a does not know it is fenced")
		}
	}

	// What a's metrics say meanwhile: fenced once, each gateway counted.
	if st := h.node("a").Stats(); st.Fences != 1 || st.LeaseValid || st.Owned != 0 || st.Changes["fenced"] != uint64(len(cutOff)) {
		t.Errorf("a's stats while cut off: %+v (it owned %d)", st, len(cutOff))
	}

	// The partition heals: a's lease has expired, it joins again with a
	// new one and gets its (idle) gateways back.
	px.Heal()
	waitFor(t, 4*h.ttl, "a is back and the gateways are shared as before", func() bool { return h.settled("a", "b", "c") })
	stop()
}

func TestEtcdRestartKeepsOwnership(t *testing.T) {
	h := newHarness(t, 8)
	h.ttl = DefaultTTL
	h.start("a", h.etcd.Endpoint)
	h.start("b", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "two nodes share the gateways", func() bool { return h.settled("a", "b") })
	before := len(h.rec.all())
	owned := h.owners("a", "b")
	down := time.Now()
	h.etcd.Stop()
	h.etcd.Start()
	t.Logf("etcd was down %v", time.Since(down))
	// Two full TTLs after the restart: renewals and reconciliations went
	// through etcd again.
	time.Sleep(2 * h.ttl)
	if got := h.rec.all()[before:]; len(got) != 0 {
		t.Fatalf("ownership changed across an etcd restart: %+v", got)
	}
	if now := h.owners("a", "b"); fmt.Sprint(now) != fmt.Sprint(owned) {
		t.Fatalf("owners before %v, after %v", owned, now)
	}
	for _, name := range []string{"a", "b"} {
		st, err := h.node(name).Status(context.Background())
		if err != nil || st.Fenced || len(st.Nodes) != 2 {
			t.Fatalf("%s after the restart: %+v %v", name, st, err)
		}
	}
}

func TestDrainMovesOnlyIdleGateways(t *testing.T) {
	h := newHarness(t, 10)
	a := h.start("a", h.etcd.Endpoint)
	b := h.start("b", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "two nodes share the gateways", func() bool { return h.settled("a", "b") })
	mine := a.Owned()
	if len(mine) < 2 {
		t.Fatalf("a owns %v; the test needs two", mine)
	}
	busy := mine[0]
	a.busy.Store(busy, true)
	bBefore := b.Owned()
	start := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 2*h.ttl)
	err := a.Drain(ctx)
	cancel()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Drain with a busy gateway: %v", err)
	}
	if got := a.Owned(); !slices.Equal(got, []string{busy}) {
		t.Fatalf("after the drain a owns %v, want only the busy %s", got, busy)
	}
	for _, g := range mine[1:] {
		if !b.Owns(g) {
			t.Errorf("idle %s did not move to b", g)
		}
	}
	for _, e := range h.rec.all() {
		if e.At.After(start) && e.node == "b" && !e.Owned {
			t.Errorf("b lost %s during a's drain", e.Gateway)
		}
		if e.At.After(start) && e.node == "a" && e.Owned {
			t.Errorf("draining a acquired %s", e.Gateway)
		}
	}
	for _, g := range bBefore {
		if !b.Owns(g) {
			t.Errorf("b no longer owns %s", g)
		}
	}
	st, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range st.Nodes {
		if ns.Name == "a" && !ns.Draining {
			t.Errorf("status does not show a draining: %+v", ns)
		}
	}

	// The call ends: the gateway moves too.
	a.busy.Delete(busy)
	ctx, cancel = context.WithTimeout(context.Background(), 2*h.ttl)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h.ttl, "b owns everything", func() bool { return h.settled("b") })
	if err := a.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h.ttl, "a's node key is gone", func() bool {
		st, err := b.Status(context.Background())
		return err == nil && len(st.Nodes) == 1
	})
}

func TestCallStoreIsFencedByRevision(t *testing.T) {
	h := newHarness(t, 4)
	h.pref = map[string][]string{"gw-00": {"a"}}
	a := h.start("a", h.etcd.Endpoint)
	b := h.start("b", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "two nodes share the gateways", func() bool { return h.settled("a", "b") })
	ctx := context.Background()
	call := CallState{Gateway: "gw-00", Endpoint: "aaln/1", Line: "alice", MGCP: MGCPState{CallID: "C9"},
		SIP: DialogState{CallID: "x@y", LocalTag: "1", RemoteTag: "2", LocalCSeq: 5}, LocalSDP: "v=0\r\n"}
	if err := a.PutCall(ctx, call); err != nil {
		t.Fatal(err)
	}
	if err := b.PutCall(ctx, call); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("b wrote a call of a's gateway: %v", err)
	}
	if err := a.PutCall(ctx, CallState{Gateway: "gw-00"}); err == nil {
		t.Fatal("an invalid call was stored")
	}
	got, ok, err := b.Call(ctx, "gw-00", "aaln/1", "C9")
	if err != nil || !ok || got.Line != "alice" || got.SIP.LocalCSeq != 5 || got.Updated.IsZero() {
		t.Fatalf("b reads %+v %v %v", got, ok, err)
	}
	call.SIP.LocalCSeq = 6
	if err := a.PutCall(ctx, call); err != nil {
		t.Fatal(err)
	}
	calls, err := a.Calls(ctx, "gw-00")
	if err != nil || len(calls) != 1 || calls[0].SIP.LocalCSeq != 6 {
		t.Fatalf("calls %+v %v", calls, err)
	}

	// a's guard, as a node would hold it that has not yet noticed a loss.
	guard, _, err := a.ownerGuard("gw-00")
	if err != nil {
		t.Fatal(err)
	}
	// The gateway moves to b (a drains), then a writes with its stale view.
	dctx, cancel := context.WithTimeout(ctx, 2*h.ttl)
	defer cancel()
	if err := a.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h.ttl, "b owns gw-00", func() bool { return b.Owns("gw-00") })
	err = a.guardedOp(ctx, "gw-00", guard, clientv3.OpDelete(a.callKey("gw-00", "aaln/1", "C9")))
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("a stale owner's write: %v", err)
	}
	if _, ok, _ := b.Call(ctx, "gw-00", "aaln/1", "C9"); !ok {
		t.Fatal("the stale owner's delete went through")
	}

	// b takes the call over and ends it.
	adopted, err := b.AdoptCalls(ctx, "gw-00")
	if err != nil || len(adopted) != 1 {
		t.Fatalf("adopted %+v %v", adopted, err)
	}
	if err := b.DeleteCall(ctx, "gw-00", "aaln/1", "C9"); err != nil {
		t.Fatal(err)
	}
	if calls, err := b.Calls(ctx, "gw-00"); err != nil || len(calls) != 0 {
		t.Fatalf("calls after delete: %+v %v", calls, err)
	}
	// The counters behind mgsip_cluster_call_state_writes_total: a wrote
	// twice and sent one invalid call; b was refused once, then adopted
	// and deleted.
	if st := a.Stats(); st.CallWrites != 2 || st.CallWritesRefused != 0 || st.CallWriteErrors != 1 {
		t.Errorf("a's call-state writes: %+v", st)
	}
	if st := b.Stats(); st.CallWrites != 2 || st.CallWritesRefused != 1 || st.CallWriteErrors != 0 {
		t.Errorf("b's call-state writes: %+v", st)
	}
	// A value that does not decode is reported, not fatal.
	if _, err := b.cli.Put(ctx, b.callsPrefix("gw-00")+"aaln%2F2/bad", "{"); err != nil {
		t.Fatal(err)
	}
	var de *DecodeError
	if _, err := b.Calls(ctx, "gw-00"); !errors.As(err, &de) {
		t.Fatalf("a bad stored call: %v", err)
	}
}

// TestAdoptCallsDeletesUnusableRecords: records no takeover can use
// (another gateway's call, a call stored under another key, a minimal
// record, garbage) are deleted and reported as InvalidCallError, never as
// ErrNotOwner, and the good call beside them is adopted.
func TestAdoptCallsDeletesUnusableRecords(t *testing.T) {
	h := newHarness(t, 1)
	a := h.start("a", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "a owns gw-00", func() bool { return a.Owns("gw-00") })
	ctx := context.Background()
	good := CallState{Gateway: "gw-00", Endpoint: "aaln/1", MGCP: MGCPState{CallID: "C1"}, SIP: DialogState{CallID: "s1"}}
	if err := a.PutCall(ctx, good); err != nil {
		t.Fatal(err)
	}
	p := a.callsPrefix("gw-00")
	bad := map[string]string{
		p + "aaln%2F1/BOGUS4": `{"gateway":"gw2","endpoint":"aaln/2","mgcp":{"call_id":"BOGUS4"}}`,
		p + "aaln%2F1/MOVED":  `{"gateway":"gw-00","endpoint":"aaln/2","mgcp":{"call_id":"C7"}}`,
		p + "aaln%2F1/MIN":    `{"gateway":"gw-00"}`,
		p + "aaln%2F1/JUNK":   `{`,
	}
	for k, v := range bad {
		if _, err := a.cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	adopted, err := a.AdoptCalls(ctx, "gw-00")
	if len(adopted) != 1 || adopted[0].MGCP.CallID != "C1" {
		t.Fatalf("adopted %+v (%v)", adopted, err)
	}
	if errors.Is(err, ErrNotOwner) {
		t.Fatalf("bad records reported as a lost ownership: %v", err)
	}
	var ie *InvalidCallError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is no InvalidCallError", err)
	}
	resp, err := a.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != a.callKey("gw-00", "aaln/1", "C1") {
		t.Fatalf("left after adoption: %v", resp.Kvs)
	}
	if got := a.Stats().InvalidCalls; got != uint64(len(bad)) {
		t.Errorf("InvalidCalls %d, want %d", got, len(bad))
	}
	// A node that does not own the gateway still gets ErrNotOwner.
	if _, err := a.AdoptCalls(ctx, "gw-99"); !errors.Is(err, ErrNotOwner) {
		t.Errorf("adopting a gateway not owned: %v", err)
	}
}

// TestDuplicateNodeNameRefused: a second process with a live node's name
// does not overwrite its key: it waits one TTL for the key to go, then
// Run fails naming the key. A restart of a node killed a moment ago
// (its lease alive) waits for the old key to expire and joins.
func TestDuplicateNodeNameRefused(t *testing.T) {
	h := newHarness(t, 2)
	a := h.start("a", h.etcd.Endpoint)
	waitFor(t, 3*h.ttl, "a owns the gateways", func() bool { return h.settled("a") })
	a.mu.Lock()
	lease := a.lease
	a.mu.Unlock()

	newNode := func() *Node {
		n, err := New(Config{Name: "a", MGCPAddr: "mgsip@a2:2727", Endpoints: []string{h.etcd.Endpoint}, TTL: h.ttl,
			Gateways: h.gateways, Log: testLog(t, "a2")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	dup := newNode()
	ctx, cancel := context.WithTimeout(context.Background(), 4*h.ttl)
	defer cancel()
	start := time.Now()
	err := dup.Run(ctx)
	var taken *NameTakenError
	if !errors.As(err, &taken) || taken.Key != a.nodeKey("a") {
		t.Fatalf("the duplicate's Run: %v", err)
	}
	if took := time.Since(start); took < h.ttl {
		t.Errorf("gave up after %v, before the holder's TTL %v", took, h.ttl)
	}
	resp, err := a.cli.Get(context.Background(), a.nodeKey("a"))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		t.Fatalf("a's node key after the duplicate: %v %v", resp, err)
	}
	if !a.Owns("gw-00") || dup.Owns("gw-00") {
		t.Fatal("the duplicate took a gateway")
	}

	// A crash and a quick restart: the new run joins once the old lease
	// expired.
	h.kill("a")
	again := newNode()
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- again.Run(rctx) }()
	waitFor(t, 3*h.ttl, "the restarted node owns the gateways", func() bool { return again.Owns("gw-00") && again.Owns("gw-01") })
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the restarted node's Run: %v", err)
	}
}

// TestForeignKeysDoNotStall: keys no mgsip node wrote as they are (issue
// 16): a garbage ownership key without a lease and one under a lease no
// node holds are freed and the gateways taken; a lease-less node key is no
// member (no gateway waits for it, status lists it as ignored); their
// warnings are logged once, not at every reconciliation; status counts an
// unusable call record as invalid, not as a call.
func TestForeignKeysDoNotStall(t *testing.T) {
	h := newHarness(t, 3)
	// gw-02 prefers the phantom: were it a member, a would leave gw-02
	// to it for a TTL.
	h.pref = map[string][]string{"gw-02": {"zz1"}}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{h.etcd.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	foreign, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	puts := []clientv3.Op{
		clientv3.OpPut("/mgsip/gateways/gw-00", "garbage"),
		clientv3.OpPut("/mgsip/gateways/gw-01", "{", clientv3.WithLease(foreign.ID)),
		clientv3.OpPut("/mgsip/nodes/zz1", `{"name":"zz1","mgcp_addr":"mgsip@zz1:2727"}`),
		clientv3.OpPut("/mgsip/calls/gw-02/aaln%2F1/X", `{"gateway":"gw-02"}`),
	}
	for _, op := range puts {
		if _, err := cli.Do(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	hook := &countHook{}
	l.AddHook(hook)
	a, err := New(Config{Name: "a", MGCPAddr: "mgsip@a:2727", Endpoints: []string{h.etcd.Endpoint}, TTL: h.ttl,
		Gateways: h.gateways, Preference: h.pref, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(rctx) }()
	defer func() { stop(); <-done }()

	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range st.Nodes {
		if ns.Name == "zz1" {
			t.Errorf("status shows the lease-less node key as a node: %+v", ns)
		}
	}
	if st.InvalidCalls != 1 || st.OrphanCalls != 0 {
		t.Errorf("status: %d invalid, %d orphan calls; want 1 and 0", st.InvalidCalls, st.OrphanCalls)
	}
	ignored := map[string]bool{}
	for _, k := range st.Ignored {
		ignored[k.Key] = true
	}
	if !ignored["/mgsip/nodes/zz1"] {
		t.Errorf("status does not list the phantom node key as ignored: %+v", st.Ignored)
	}

	// Within one TTL: the freed gateways at once, gw-02 without waiting
	// for the phantom (taking a gateway left free for a TTL would take
	// longer).
	waitFor(t, h.ttl, "a owns every gateway", func() bool { return a.Owns("gw-00") && a.Owns("gw-01") && a.Owns("gw-02") })
	// Let it reconcile a few more times: each warning stays one line.
	time.Sleep(2 * h.ttl)
	if n := hook.count("cluster: ignoring a node key"); n != 1 {
		t.Errorf("the phantom node key was warned about %d times, want 1", n)
	}
	if n := hook.count("cluster: unreadable gateway key"); n > 2 {
		t.Errorf("unreadable gateway keys warned about %d times, want at most one each", n)
	}
	resp, err := cli.Get(ctx, "/mgsip/gateways/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if clientv3.LeaseID(kv.Lease) == foreign.ID || kv.Lease == 0 {
			t.Errorf("foreign ownership key left: %s = %q", kv.Key, kv.Value)
		}
	}
}

type countHook struct {
	mu   sync.Mutex
	msgs []string
}

func (h *countHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *countHook) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, e.Message)
	h.mu.Unlock()
	return nil
}

func (h *countHook) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if m == msg {
			n++
		}
	}
	return n
}
