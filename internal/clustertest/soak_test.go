package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func envInt(k string, d int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return d
}

func envDuration(k string, d time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return d
}

// TestSoak is `make soak` (MGSIP_SOAK=1): 3 nodes, MGSIP_SOAK_GATEWAYS
// (200) simulated gateways of MGSIP_SOAK_LINES (10) lines, calls between
// random lines of different gateways at MGSIP_SOAK_RATE (4) calls/s for
// MGSIP_SOAK_DURATION (3m), each talking MGSIP_SOAK_TALK (3s), while every
// MGSIP_SOAK_KILL_EVERY (30s) the next node is killed (SIGKILL) and
// restarted MGSIP_SOAK_DOWN (8s) later. Every call must complete or fail
// cleanly (both lines back on hook, no connection left, within 20 s), and
// at the end every line is armed by a live node and registered at
// Kamailio from it. It logs the takeover time per gateway (p50, p99) and
// the calls placed, completed, failed and kept across a takeover.
func TestSoak(t *testing.T) {
	if os.Getenv("MGSIP_SOAK") != "1" {
		t.Skip("the soak runs with `make soak` (MGSIP_SOAK=1)")
	}
	gateways := envInt("MGSIP_SOAK_GATEWAYS", 200)
	lines := envInt("MGSIP_SOAK_LINES", 10)
	rate := envInt("MGSIP_SOAK_RATE", 4)
	duration := envDuration("MGSIP_SOAK_DURATION", 3*time.Minute)
	talk := envDuration("MGSIP_SOAK_TALK", 3*time.Second)
	killEvery := envDuration("MGSIP_SOAK_KILL_EVERY", 30*time.Second)
	down := envDuration("MGSIP_SOAK_DOWN", 8*time.Second)
	ttl := envDuration("MGSIP_SOAK_TTL", 5*time.Second)

	c := newCluster(t, ttl)
	c.LogLevel = "warn"
	nodes := []*Node{c.addNode("a"), c.addNode("b"), c.addNode("c")}
	var gws []*Gateway
	for i := range gateways {
		gws = append(gws, c.addGateway(fmt.Sprintf("g%03d", i+1), lines, 10000+i*lines+1, true))
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.start)
	}
	wg.Wait()
	if !c.allArmedAndRegistered(t, gws, 3*time.Minute) {
		t.Fatal("not every line armed and registered at the start")
	}
	t.Logf("%d gateways x %d lines: armed and registered %v after the nodes started", gateways, lines, time.Since(t0).Round(time.Millisecond))

	// Lines are free or busy; a call takes two free lines of different
	// gateways.
	type lineRef struct {
		g *Gateway
		n int
	}
	var mu sync.Mutex
	busy := map[lineRef]bool{}
	take := func(r *rand.Rand) (lineRef, lineRef, bool) {
		mu.Lock()
		defer mu.Unlock()
		for range 50 {
			a := lineRef{gws[r.IntN(len(gws))], 1 + r.IntN(lines)}
			b := lineRef{gws[r.IntN(len(gws))], 1 + r.IntN(lines)}
			if a.g != b.g && !busy[a] && !busy[b] {
				busy[a], busy[b] = true, true
				return a, b, true
			}
		}
		return lineRef{}, lineRef{}, false
	}
	release := func(refs ...lineRef) {
		mu.Lock()
		for _, r := range refs {
			delete(busy, r)
		}
		mu.Unlock()
	}

	// Kills: when each node died and was back, to tell which calls
	// crossed a takeover, and the takeover time of each of its gateways.
	var killMu sync.Mutex
	type kill struct {
		node     *Node
		at, back time.Time
		owned    []*Gateway
	}
	var kills []kill
	var takeovers []time.Duration
	var lostTakeovers int
	// crossed: a node that drove one of the call's gateways was killed
	// between from and to.
	crossed := func(from, to time.Time, drivers []*Node) []*Node {
		killMu.Lock()
		defer killMu.Unlock()
		var killed []*Node
		for _, k := range kills {
			if k.at.After(from) && k.at.Before(to) && slices.Contains(drivers, k.node) {
				killed = append(killed, k.node)
			}
		}
		return killed
	}
	driver := func(r lineRef) *Node {
		st, _ := r.g.State("aaln/" + strconv.Itoa(r.n))
		return c.node(strings.TrimPrefix(st.NotifiedEntity, "mgsip@"))
	}

	var placed, completed, failedClean, hung, kept, crossedN atomic.Int64
	var failMu sync.Mutex
	failures := map[string]int{}
	txid := regexp.MustCompile(`\b[0-9]{6,}\b|127\.0\.0\.1:[0-9]+|\b[0-9.]+s\b`)
	noteFail := func(err error) {
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:] // the lines' names
		}
		msg = strings.Join(strings.Fields(txid.ReplaceAllString(msg, "N")), " ")
		if len(msg) > 100 {
			msg = msg[:100]
		}
		failMu.Lock()
		failures[msg]++
		failMu.Unlock()
	}
	// settled: both lines on hook without a connection (the call is
	// over on the gateway's side) within limit; a line is put on hook
	// first if the call left it off hook.
	settled := func(refs []lineRef, limit time.Duration) bool {
		for _, r := range refs {
			ep := "aaln/" + strconv.Itoa(r.n)
			if st, _ := r.g.State(ep); st.OffHook {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = r.g.OnHook(ctx, ep)
				cancel()
			}
		}
		return waitFor(limit, func() bool {
			for _, r := range refs {
				ep := "aaln/" + strconv.Itoa(r.n)
				if st, _ := r.g.State(ep); st.OffHook || len(r.g.Connections(ep)) > 0 {
					return false
				}
			}
			return true
		})
	}

	stop := make(chan struct{})
	var calls sync.WaitGroup
	wg.Go(func() {
		r := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			a, b, ok := take(r)
			if !ok {
				continue
			}
			placed.Add(1)
			calls.Go(func() {
				defer release(a, b)
				refs := []lineRef{a, b}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				call, err := place(ctx, a.g, a.n, b.g, b.n)
				cancel()
				if err != nil {
					noteFail(err)
					if settled(refs, 20*time.Second) {
						failedClean.Add(1)
					} else {
						hung.Add(1)
					}
					return
				}
				connected, survived := time.Now(), false
				drivers := []*Node{driver(a), driver(b)}
				time.Sleep(talk)
				if killed := crossed(connected, time.Now(), drivers); len(killed) > 0 {
					crossedN.Add(1)
					// Wait for the takeover: both lines driven by a node
					// that was not killed (a gateway with a call is not
					// handed back to the restarted node meanwhile).
					waitFor(ttl+5*time.Second, func() bool {
						return !slices.Contains(killed, driver(a)) && !slices.Contains(killed, driver(b))
					})
					// Kept: both connections are still there, media
					// flows both ways after the takeover, and the hang-up
					// below ends it cleanly.
					survived = call.rtpFlows(300*time.Millisecond) == nil
				}
				ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
				err = call.hangUp(ctx)
				cancel()
				switch {
				case !settled(refs, 20*time.Second):
					hung.Add(1)
				case err != nil:
					noteFail(err)
					failedClean.Add(1)
				default:
					completed.Add(1)
					if survived {
						kept.Add(1)
					}
				}
			})
		}
	})

	// The killer: node after node, SIGKILL, restart after `down`.
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(killEvery):
			}
			n := nodes[i%len(nodes)]
			var owned []*Gateway
			for _, g := range gws {
				if st, _ := g.State("aaln/1"); st.NotifiedEntity == "mgsip@"+n.MGCP {
					owned = append(owned, g)
				}
			}
			at := time.Now()
			n.kill()
			killMu.Lock()
			kills = append(kills, kill{node: n, at: at, owned: owned})
			killMu.Unlock()
			// Takeover time of each gateway it drove: the first command
			// of another node after the kill.
			var tw sync.WaitGroup
			var tmu sync.Mutex
			for _, g := range owned {
				tw.Go(func() {
					d, who := c.takeoverAfter(g, n, at, ttl+10*time.Second)
					tmu.Lock()
					defer tmu.Unlock()
					if who == nil {
						lostTakeovers++
						return
					}
					takeovers = append(takeovers, d)
				})
			}
			time.Sleep(down)
			tw.Wait()
			n.start()
			killMu.Lock()
			kills[len(kills)-1].back = time.Now()
			killMu.Unlock()
		}
	})

	time.Sleep(duration)
	close(stop)
	wg.Wait()
	calls.Wait()
	for _, n := range nodes {
		if !n.running() {
			n.start()
		}
	}
	end := time.Now()
	armed := c.allArmedAndRegistered(t, gws, 2*time.Minute)

	slices.Sort(takeovers)
	pct := func(p float64) time.Duration {
		if len(takeovers) == 0 {
			return 0
		}
		return takeovers[min(len(takeovers)-1, int(p*float64(len(takeovers))))]
	}
	t.Logf("soak: %d gateways x %d lines, 3 nodes, TTL %v, %v at %d calls/s (talk %v), %d kills (every %v, back after %v)", gateways, lines, ttl, duration, rate, talk, len(kills), killEvery, down)
	t.Logf("takeover per gateway (kill -> first command of the new owner at the gateway): n %d, p50 %v, p99 %v, max %v; %d gateways not taken over within TTL + 10 s",
		len(takeovers), pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond), lostTakeovers)
	t.Logf("calls: %d placed, %d completed, %d failed cleanly, %d hung; %d connected when the owner of one of their gateways was killed, %d of them kept (same connections and RTP both ways after the takeover, then a clean hang-up)",
		placed.Load(), completed.Load(), failedClean.Load(), hung.Load(), crossedN.Load(), kept.Load())
	for msg, k := range failures {
		t.Logf("  failure x%d: %s", k, msg)
	}
	t.Logf("every line armed and registered %v after the last call ended: %v", time.Since(end).Round(time.Millisecond), armed)
	if hung.Load() > 0 {
		t.Errorf("%d calls hung", hung.Load())
	}
	if lostTakeovers > 0 {
		t.Errorf("%d gateways of killed nodes were not taken over", lostTakeovers)
	}
	if !armed {
		t.Error("lines lost: not every line armed and registered at the end")
	}
}

// allArmedAndRegistered waits until every line of every gateway is armed
// with the N: of a running node and registered at Kamailio with that
// node's Contact, and logs what is missing when limit passes.
func (c *Cluster) allArmedAndRegistered(t *testing.T, gws []*Gateway, limit time.Duration) bool {
	t.Helper()
	var missing []string
	var users []string
	for _, g := range gws {
		for i := 1; i <= g.Lines; i++ {
			users = append(users, g.User(i))
		}
	}
	ok := waitFor(limit, func() bool {
		time.Sleep(time.Second) // a check costs a kamcmd per line: not every 20 ms
		missing = missing[:0]
		owner := map[string]*Node{} // user -> the node that armed the line
		for _, g := range gws {
			for i := 1; i <= g.Lines; i++ {
				st, _ := g.State("aaln/" + strconv.Itoa(i))
				n := c.node(strings.TrimPrefix(st.NotifiedEntity, "mgsip@"))
				if n == nil || !n.running() || !g.armedBy(i, n.MGCP) {
					missing = append(missing, fmt.Sprintf("%s/aaln/%d not armed (N: %s)", g.Name, i, st.NotifiedEntity))
					continue
				}
				owner[g.User(i)] = n
			}
		}
		if len(missing) > 0 {
			return false
		}
		contacts, err := c.Kam.ContactsOf(users)
		if err != nil {
			missing = append(missing, err.Error())
			return false
		}
		live := map[string][]string{} // user -> live contact URIs
		for _, ct := range contacts {
			if ct.Expires > 0 {
				live[ct.AoR] = append(live[ct.AoR], ct.Address)
			}
		}
		for _, u := range users {
			n := owner[u]
			if !slices.ContainsFunc(live[u], func(a string) bool { return strings.Contains(a, "@"+n.SIP) }) {
				missing = append(missing, fmt.Sprintf("%s not registered from %s (contacts %v)", u, n.Name, live[u]))
			}
		}
		return len(missing) == 0
	})
	if !ok {
		t.Logf("%d lines not armed and registered, e.g. %v", len(missing), missing[:min(10, len(missing))])
	}
	return ok
}
