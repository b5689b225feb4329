package bridge_test

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// waitBothConnectedOn waits until two lines are connected.
func (e *env) waitBothConnectedOn(a, b string, state func(string) string) {
	e.t.Helper()
	e.waitFor("lines connected", func() bool { return state(a) == "connected" && state(b) == "connected" })
}

// reloaded compiles the env's configuration with lines and dial plans
// replaced.
func reloaded(t *testing.T, e *env, plans []mapping.DialPlan, lines []mapping.Line) *mapping.Rules {
	t.Helper()
	gw, peer := e.rules.Gateways[0], e.rules.Peers[0]
	yes := true
	cfg := mapping.Config{
		Peers:     []mapping.Peer{{Name: "pbx", Host: peer.Host, Port: peer.Port, Register: &yes}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gw.Address, Port: gw.Port, Codecs: []string{"PCMU", "PCMA"}}},
		DialPlans: plans,
		Lines:     lines,
		Routes:    mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"}}},
	}
	r, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReloadChangedLines: a reload that changes lines applies to idle
// lines at once and to busy ones when they are idle again, and says
// which; a changed SIP user unregisters the old account and registers the
// new one.
func TestReloadChangedLines(t *testing.T) {
	e := newEnv(t, envOptions{register: true, lines: 3, users: map[string]string{"1102": "pw2"}})
	// The digit map an idle line arms (embedded in its off-hook request,
	// or pushed on its own).
	armed := func(local string) string {
		st := e.state(local)
		return fmt.Sprint(st.RequestedEvents) + " " + st.DigitMap
	}
	lineState := func(id string) string {
		for _, l := range e.b.Lines() {
			if l.ID == id {
				return l.State
			}
		}
		return ""
	}
	// Line 3 calls line 1 (switched locally): both are busy.
	e.offHook("aaln/3")
	e.dial("aaln/3", "1001")
	e.waitFor("line 1 ringing", func() bool { return lineState("gw/aaln/1") == "ringing" })
	e.offHook("aaln/1")
	e.waitBothConnectedOn("gw/aaln/1", "gw/aaln/3", lineState)

	plans := []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}, {Name: "nines", DigitMap: "(9xx)"}}
	rules := reloaded(t, e, plans, []mapping.Line{
		{Gateway: "gw", Endpoint: "aaln/1", User: "1001", Password: "pw", DisplayName: "Line 1", DialPlan: "nines"},
		{Gateway: "gw", Endpoint: "aaln/2", User: "1102", Password: "pw2", DisplayName: "Line 2", DialPlan: "nines"},
		{Gateway: "gw", Endpoint: "aaln/3", User: "1003", Password: "pw", DisplayName: "Line 3", DialPlan: "nines"},
	})
	rep := e.b.Update(rules)
	if len(rep.Added) != 0 || len(rep.Removed) != 0 {
		t.Fatalf("added %v removed %v", rep.Added, rep.Removed)
	}
	if want := map[string][]string{"gw/aaln/2": {"user", "auth_user", "password", "dial_plan"}}; !reflect.DeepEqual(rep.Changed, want) {
		t.Fatalf("changed %v, want %v", rep.Changed, want)
	}
	if want := map[string][]string{"gw/aaln/1": {"dial_plan"}, "gw/aaln/3": {"dial_plan"}}; !reflect.DeepEqual(rep.Deferred, want) {
		t.Fatalf("deferred %v, want %v", rep.Deferred, want)
	}

	// Line 2 (idle) takes its rule at once: the old account is
	// unregistered, the new one registered, the new digit map armed.
	e.waitFor("1002 unregistered", func() bool { _, ok := e.pbx.Binding("1002"); return !ok })
	e.waitFor("1102 registered", func() bool { _, ok := e.pbx.Binding("1102"); return ok })
	e.waitFor("line 2's new digit map", func() bool { return strings.Contains(armed("aaln/2"), "(9xx)") })
	for _, u := range []string{"1001", "1003"} {
		if _, ok := e.pbx.Binding(u); !ok {
			t.Fatalf("account %s (unchanged) lost its binding", u)
		}
	}

	// The call goes on under the old rules; when it ends, both lines
	// take the new digit map.
	for _, l := range []string{"aaln/1", "aaln/3"} {
		if dm := armed(l); strings.Contains(dm, "(9xx)") {
			t.Fatalf("%s took the new digit map during its call: %s", l, dm)
		}
	}
	e.onHook("aaln/3")
	e.waitFor("line 3's new digit map", func() bool { return strings.Contains(armed("aaln/3"), "(9xx)") })
	e.onHook("aaln/1")
	e.waitFor("line 1's new digit map", func() bool { return strings.Contains(armed("aaln/1"), "(9xx)") })
	e.record()
	e.record()
	for i := 1; i <= 3; i++ {
		e.waitSignalState("aaln/"+strconv.Itoa(i), func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	}

	// The same rules again: nothing changes.
	rep = e.b.Update(rules)
	if len(rep.Changed)+len(rep.Deferred)+len(rep.Added)+len(rep.Removed) != 0 {
		t.Fatalf("a reload of the same file reported %+v", rep)
	}
}

// TestReloadWhileGatewayDown: a line whose account changes while its
// gateway is marked down does not register the new account (its lines
// stay unregistered until the gateway answers again).
func TestReloadWhileGatewayDown(t *testing.T) {
	e := newEnv(t, envOptions{register: true, users: map[string]string{"1102": "pw2"}, keepalive: time.Second,
		mgcp: mgcp.Config{TMax: 1500 * time.Millisecond, MaxRTO: 500 * time.Millisecond}})
	_ = e.gw.Close()
	e.waitFor("gateway marked down", func() bool {
		for _, g := range e.b.Gateways() {
			if g.Down {
				return true
			}
		}
		return false
	})
	e.waitFor("lines unregistered", func() bool { _, ok := e.pbx.Binding("1002"); return !ok })
	plans := []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}}
	e.b.Update(reloaded(t, e, plans, []mapping.Line{
		{Gateway: "gw", Endpoint: "aaln/1", User: "1001", Password: "pw", DisplayName: "Line 1"},
		{Gateway: "gw", Endpoint: "aaln/2", User: "1102", Password: "pw2", DisplayName: "Line 2"},
	}))
	time.Sleep(time.Second)
	if _, ok := e.pbx.Binding("1102"); ok {
		t.Error("the changed line registered its new account while its gateway is down")
	}
}

// TestReloadedLineKnowsItsRequests: a line whose rule a reload changed is
// replaced by a successor that audits and arms the endpoint again; until
// its own request is in place the gateway still holds the old line's, and
// an NTFY under it is the line's (200), not an unknown request id (538).
// (It made the daemon's reload test fail now and then.)
func TestReloadedLineKnowsItsRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	// The successor's audit is held, so the NTFY arrives before its
	// request.
	e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbAUEP, Endpoint: "aaln/1", Delay: 500 * time.Millisecond, Count: 1})
	plans := []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}}
	rep := e.b.Update(reloaded(t, e, plans, []mapping.Line{
		{Gateway: "gw", Endpoint: "aaln/1", User: "1001", Password: "pw", DisplayName: "Renamed"},
		{Gateway: "gw", Endpoint: "aaln/2", User: "1002", Password: "pw", DisplayName: "Line 2"},
	}))
	if _, ok := rep.Changed["gw/aaln/1"]; !ok {
		t.Fatalf("line 1 not changed: %+v", rep)
	}
	e.waitFor("the successor auditing", func() bool { return strings.HasSuffix(verbs(e.gw.Commands(), "aaln/1"), "AUEP") })
	before := e.b.UnknownRequests()
	r, err := e.gw.Notify(t.Context(), "aaln/1", mgcp.Event{Package: "L", Name: "hd"})
	if err != nil || r.Code != mgcp.CodeOK {
		t.Fatalf("NTFY under the old line's request: %v %v, want 200", r, err)
	}
	if n := e.b.UnknownRequests(); n != before {
		t.Errorf("%d NTFYs refused as unknown", n-before)
	}
	// The probe was a bare NTFY (the phone stayed on hook): the line
	// learns that from the gateway's 402 and ends armed again.
	e.waitSignalState("aaln/1", armed)
}
