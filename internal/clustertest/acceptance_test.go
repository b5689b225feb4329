package clustertest

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
)

// testTTL is the nodes' lease TTL in the acceptance tests (the default is
// 5 s; a shorter one keeps the tests quick, the takeover bound scales).
const testTTL = 3 * time.Second

// startNodes starts every node and waits until each gateway is armed and
// registered by the node expected to own it.
func (c *Cluster) startNodes(t *testing.T, owners map[*Gateway]*Node) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(n.start)
	}
	wg.Wait()
	for g, n := range owners {
		c.waitOwned(t, g, n, 20*time.Second)
	}
}

// waitOwned waits until every idle line of g is armed with n's N: and
// registered at Kamailio with n's Contact.
func (c *Cluster) waitOwned(t *testing.T, g *Gateway, n *Node, limit time.Duration) {
	t.Helper()
	var missing []string
	var err error
	ok := waitFor(limit, func() bool {
		for i := 1; i <= g.Lines; i++ {
			if st, _ := g.State("aaln/" + strconv.Itoa(i)); !st.OffHook && !g.armedBy(i, n.MGCP) {
				missing = []string{"aaln/" + strconv.Itoa(i) + " not armed"}
				return false
			}
		}
		missing, err = c.notRegisteredFrom(g, n)
		return err == nil && len(missing) == 0
	})
	if !ok {
		t.Fatalf("%s is not armed and registered by %s within %v: %v %v", g.Name, n.Name, limit, missing, err)
	}
}

// waitIdle waits until the gateway has no connection and nothing in
// quarantine.
func waitIdle(t *testing.T, g *Gateway, limit time.Duration) {
	t.Helper()
	var err error
	if !waitFor(limit, func() bool { err = g.CheckIdle(); return err == nil }) {
		t.Fatalf("%s not idle within %v: %v", g.Name, limit, err)
	}
}

// callWorks places a call, checks its media and hangs it up cleanly.
func callWorks(t *testing.T, a *Gateway, from int, b *Gateway, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	call, err := place(ctx, a, from, b, to)
	if err != nil {
		t.Fatal(err)
	}
	if err := call.rtpFlows(300 * time.Millisecond); err != nil {
		t.Fatalf("new call %s -> %s: %v", a.Name, b.Name, err)
	}
	if err := call.hangUp(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, a, 5*time.Second)
	waitIdle(t, b, 5*time.Second)
}

func TestKillOwnerTwoNodes(t *testing.T)   { testKillOwner(t, 2) }
func TestKillOwnerThreeNodes(t *testing.T) { testKillOwner(t, 3) }

// testKillOwner: gateway ga is owned by node a, gb by node b; a call
// from ga's line 1 to gb's line 1 is connected when a is killed (SIGKILL):
// a survivor (b with two nodes, c with three) owns ga within TTL + 2 s, at
// the gateway's socket; the call goes on (same connections, RTP both
// ways); with two nodes the taken-over phone hangs up and the far end
// accepts the survivor's BYE, with three the far end hangs up and its BYE
// reaches the survivor (so the survivor's target refresh reached the far
// end: RFC 3261 §12.2); every line of ga is registered at Kamailio from
// the survivor; new calls to and from ga work.
func testKillOwner(t *testing.T, nodes int) {
	c := newCluster(t, testTTL)
	a, b := c.addNode("a"), c.addNode("b")
	survivor := b
	c.Preference["ga"] = []string{"a", "b"}
	c.Preference["gb"] = []string{"b", "a"}
	if nodes == 3 {
		survivor = c.addNode("c")
		c.Preference["ga"] = []string{"a", "c", "b"}
		c.Preference["gb"] = []string{"b", "c", "a"}
	}
	ga := c.addGateway("ga", 3, 20001, true)
	gb := c.addGateway("gb", 3, 30001, true)
	c.startNodes(t, map[*Gateway]*Node{ga: a, gb: b})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	call, err := place(ctx, ga, 1, gb, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := call.rtpFlows(300 * time.Millisecond); err != nil {
		t.Fatalf("before the kill: %v", err)
	}

	killed := time.Now()
	a.kill()
	took, who := c.takeoverAfter(ga, a, killed, testTTL+2*time.Second)
	if who == nil {
		t.Fatalf("no node commanded %s within TTL + 2 s (%v) of the kill", ga.Name, testTTL+2*time.Second)
	}
	if who != survivor {
		t.Fatalf("%s took %s over, want %s (preference)", who.Name, ga.Name, survivor.Name)
	}
	t.Logf("takeover: %s commanded %s %v after %s was killed (TTL %v)", who.Name, ga.Name, took.Round(time.Millisecond), a.Name, testTTL)
	for _, w := range ga.rec.commands(a.MGCP) {
		if w.at.After(killed) {
			t.Fatalf("a command from the killed node: %+v", w)
		}
	}
	// The survivor's first command is the audit; the off-hook phone's
	// events go to the survivor once a request gave it the survivor's N:.
	// (The fake gateway does not fail over between call-agent addresses,
	// RFC 3435 §4.3, so an NTFY sent before then would go to the dead
	// node and time out.)
	if !waitFor(3*time.Second, func() bool {
		st, _ := ga.State("aaln/1")
		return st.NotifiedEntity == "mgsip@"+survivor.MGCP
	}) {
		st, _ := ga.State("aaln/1")
		t.Fatalf("%s's off-hook line not given the survivor's N: within 3 s of the takeover (N: %s)", ga.Name, st.NotifiedEntity)
	}

	// The call goes on: media between the gateways never stopped.
	if err := call.rtpFlows(time.Second); err != nil {
		t.Fatalf("after the takeover: %v", err)
	}
	if nodes == 2 {
		// The taken-over phone hangs up: the survivor's BYE reaches
		// the far end (here the survivor's own other leg, through
		// Kamailio), which accepts it and deletes its connection.
		gb.sig.drain("dlcx", "aaln/1")
		if r, err := ga.OnHook(ctx, "aaln/1"); !notifiedOK(r, err) {
			t.Fatalf("on-hook after the takeover: %v %v", r, err)
		}
		select {
		case <-gb.sig.get("dlcx", "aaln/1"):
		case <-time.After(5 * time.Second):
			t.Fatal("the far end did not end its leg after the taken-over phone hung up (BYE not sent or not accepted)")
		}
	} else {
		// The far end hangs up: its BYE goes to the remote target the
		// survivor's target refresh gave it; the survivor deletes the
		// taken-over connection.
		ga.sig.drain("dlcx", "aaln/1")
		if r, err := gb.OnHook(ctx, "aaln/1"); !notifiedOK(r, err) {
			t.Fatalf("far end on-hook: %v %v", r, err)
		}
		select {
		case <-ga.sig.get("dlcx", "aaln/1"):
		case <-time.After(5 * time.Second):
			t.Fatal("the survivor did not end the taken-over leg after the far end hung up (no target refresh?)")
		}
	}
	if err := call.hangUp(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ga, 10*time.Second)
	waitIdle(t, gb, 10*time.Second)

	// Every line of ga armed and registered by the survivor, then calls
	// to and from ga work.
	c.waitOwned(t, ga, survivor, 10*time.Second)
	c.waitOwned(t, gb, b, 10*time.Second)
	callWorks(t, gb, 2, ga, 2)
	callWorks(t, ga, 3, gb, 3)

	if bad := interleavings(ga.rec.commands(""), 500*time.Millisecond); len(bad) > 0 {
		t.Fatalf("two nodes drove %s: %v", ga.Name, bad)
	}
	checkOwnershipMetrics(t, survivor, 1)
}

// checkOwnershipMetrics checks that the node counted at least min
// acquisitions and call-state writes, and reports its lease valid.
func checkOwnershipMetrics(t *testing.T, n *Node, min float64) {
	t.Helper()
	m, err := n.metrics("mgsip_cluster_")
	if err != nil {
		t.Fatal(err)
	}
	if got := m[`mgsip_cluster_ownership_changes_total{change="acquired"}`]; got < min {
		t.Errorf("node %s: %v acquisitions counted, want >= %v; metrics: %v", n.Name, got, min, m)
	}
	if m["mgsip_cluster_lease_valid"] != 1 {
		t.Errorf("node %s: lease not reported valid: %v", n.Name, m)
	}
	// The survivor adopted the killed node's stored call (and stored the
	// call's changes, its end included).
	if m[`mgsip_cluster_call_state_writes_total{result="ok"}`] < 1 {
		t.Errorf("node %s: no call-state write counted: %v", n.Name, m)
	}
}

// TestPartitionedNodeStopsBeforeTakeover cuts node a off etcd (a proxy
// that black-holes its connection) while a phone of its gateway keeps
// going off and on hook: a stops commanding the gateway before b's first
// command reaches it, on the gateway's own socket.
func TestPartitionedNodeStopsBeforeTakeover(t *testing.T) {
	c := newCluster(t, testTTL)
	a, b := c.addNode("a"), c.addNode("b")
	c.Preference["ga"] = []string{"a", "b"}
	c.Preference["gb"] = []string{"b", "a"}
	ga := c.addGateway("ga", 2, 20001, true)
	gb := c.addGateway("gb", 2, 30001, true)
	px := testutil.StartProxy(t, c.Etcd.Endpoint)
	a.Etcd = px.Addr()
	c.startNodes(t, map[*Gateway]*Node{ga: a, gb: b})
	steady := time.Now() // nodes started together may hand gateways over first

	// A phone keeps the owner busy: every hook change is an NTFY that
	// the owner answers with new requests.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 10000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if st, _ := ga.State("aaln/2"); st.OffHook {
				_, _ = ga.OnHook(ctx, "aaln/2")
			} else {
				_, _ = ga.OffHook(ctx, "aaln/2")
			}
			cancel()
		}
	})
	time.Sleep(500 * time.Millisecond)
	cut := time.Now()
	px.Cut()
	took, who := c.takeoverAfter(ga, a, cut, testTTL+3*time.Second)
	close(stop)
	wg.Wait()
	if who != b {
		t.Fatalf("b did not take %s over within TTL + 3 s of the partition (first other sender: %v)", ga.Name, who)
	}
	var lastA time.Time
	for _, w := range ga.rec.commands(a.MGCP) {
		lastA = w.at
	}
	firstB := cut.Add(took)
	if !lastA.Before(firstB) {
		t.Fatalf("a's last command at %s is not before b's first at %s", lastA.Format("15:04:05.000"), firstB.Format("15:04:05.000"))
	}
	t.Logf("partition: a's last command %v after the cut, b's first %v after it (a silent %v before b started)",
		lastA.Sub(cut).Round(time.Millisecond), took.Round(time.Millisecond), firstB.Sub(lastA).Round(time.Millisecond))
	for _, w := range gb.rec.commandsSince(a.MGCP, steady) {
		t.Fatalf("a commanded b's gateway: %+v", w)
	}
	m, err := a.metrics("mgsip_cluster_")
	if err != nil {
		t.Fatal(err)
	}
	if m["mgsip_cluster_fence_events_total"] < 1 || m["mgsip_cluster_lease_valid"] != 0 || m["mgsip_cluster_gateways_owned"] != 0 {
		t.Errorf("the partitioned node's metrics: %v", m)
	}

	// Healed: a joins again, and (idle, preferred) gets ga back.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, _ := ga.State("aaln/2"); st.OffHook {
		_, _ = ga.OnHook(ctx, "aaln/2")
	}
	px.Heal()
	c.waitOwned(t, ga, a, 20*time.Second)
	if bad := interleavings(ga.rec.commands(""), 500*time.Millisecond); len(bad) > 0 {
		t.Fatalf("two nodes drove %s: %v", ga.Name, bad)
	}
	waitIdle(t, ga, 5*time.Second)
	callWorks(t, ga, 1, gb, 1)
}

// TestEtcdRestartKeepsCallsAndOwnership restarts etcd, then freezes it
// briefly, during a connected call between the gateways of two nodes:
// the call goes on and hangs up normally, and no gateway changes owner.
func TestEtcdRestartKeepsCallsAndOwnership(t *testing.T) {
	c := newCluster(t, 5*time.Second)
	a, b := c.addNode("a"), c.addNode("b")
	c.Preference["ga"] = []string{"a", "b"}
	c.Preference["gb"] = []string{"b", "a"}
	ga := c.addGateway("ga", 2, 20001, true)
	gb := c.addGateway("gb", 2, 30001, true)
	c.startNodes(t, map[*Gateway]*Node{ga: a, gb: b})
	steady := time.Now() // nodes started together may hand gateways over first
	before := map[*Node]map[string]float64{}
	for _, n := range []*Node{a, b} {
		m, err := n.metrics("mgsip_cluster_")
		if err != nil {
			t.Fatal(err)
		}
		before[n] = m
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call, err := place(ctx, ga, 1, gb, 1)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	c.Etcd.Stop()
	c.Etcd.Start()
	t.Logf("etcd restarted in %v", time.Since(t0).Round(time.Millisecond))
	if err := call.rtpFlows(500 * time.Millisecond); err != nil {
		t.Fatalf("after the etcd restart: %v", err)
	}
	c.Etcd.Pause()
	time.Sleep(1500 * time.Millisecond)
	c.Etcd.Resume()
	// Let a few renewals pass, then the call is still there.
	time.Sleep(c.TTL)
	if err := call.rtpFlows(500 * time.Millisecond); err != nil {
		t.Fatalf("after etcd was paused: %v", err)
	}
	for _, w := range ga.rec.commandsSince(b.MGCP, steady) {
		t.Fatalf("b commanded a's gateway: %+v", w)
	}
	for _, w := range gb.rec.commandsSince(a.MGCP, steady) {
		t.Fatalf("a commanded b's gateway: %+v", w)
	}
	// The hang-up ends both legs: a's BYE reached b.
	gb.sig.drain("dlcx", "aaln/1")
	if r, err := ga.OnHook(ctx, "aaln/1"); !notifiedOK(r, err) {
		t.Fatalf("on-hook: %v %v", r, err)
	}
	select {
	case <-gb.sig.get("dlcx", "aaln/1"):
	case <-time.After(5 * time.Second):
		t.Fatal("b did not end its leg after a's phone hung up")
	}
	if err := call.hangUp(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ga, 5*time.Second)
	waitIdle(t, gb, 5*time.Second)
	for _, n := range []*Node{a, b} {
		m, err := n.metrics("mgsip_cluster_")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{`mgsip_cluster_ownership_changes_total{change="lost"}`, `mgsip_cluster_ownership_changes_total{change="released"}`,
			`mgsip_cluster_ownership_changes_total{change="acquired"}`} {
			if m[k] != before[n][k] {
				t.Errorf("node %s: %s went from %v to %v", n.Name, k, before[n][k], m[k])
			}
		}
		t.Logf("node %s: %v fence events", n.Name, m["mgsip_cluster_fence_events_total"])
	}
	callWorks(t, gb, 2, ga, 2)
}
