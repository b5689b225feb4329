package bridge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

const (
	tch1 = "ds/ds1-1/1"
	tch2 = "ds/ds1-1/2"
)

// casEnv is mgsip between a trunk gateway whose two channels speak an
// RFC 3064 package and a siptest provider (IP authentication).
func casEnv(t *testing.T, pkg, glare string, uas func(siptest.Incoming) siptest.Script, tr func(*mapping.Trunk)) *env {
	t.Helper()
	return casEnvAt(t, pkg, glare, uas, tr, "")
}

// casEnvAt is casEnv with the provider at provider (host:port) instead
// of the siptest one, when given.
func casEnvAt(t *testing.T, pkg, glare string, uas func(siptest.Incoming) siptest.Script, tr func(*mapping.Trunk), provider string) *env {
	t.Helper()
	e := &env{t: t, records: make(chan bridge.CallRecord, 64)}
	var err error
	e.pbx, err = siptest.NewRegistrar(siptest.RegistrarConfig{UAS: uas})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.pbx.Close() })
	var setBridge func(*bridge.Bridge)
	e.ca, setBridge = listenCA(t, mgcp.Config{})
	e.gw, err = mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "tgw.test", Endpoints: []string{tch1, tch2},
		CallAgent: e.ca.LocalAddr().String(), RTP: true, DisconnectedInitial: -1, TrunkPackage: pkg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.gw.Close() })
	gwHost, gp := hostPort(t, e.gw.Addr())
	pbxHost, pbxPort := hostPort(t, e.pbx.Addr())
	if provider != "" {
		pbxHost, pbxPort = hostPort(t, provider)
	}
	trunk := mapping.Trunk{Name: "pstn", Gateway: "tgw", Endpoints: []string{"ds/ds1-1/{1..2}"}, Peer: "provider",
		DIDs: []string{"5550100-5550199"}, Signaling: pkg, Glare: glare}
	if tr != nil {
		tr(&trunk)
	}
	cfg := mapping.Config{
		Peers:    []mapping.Peer{{Name: "provider", Host: pbxHost, Port: pbxPort, Auth: "ip"}},
		Gateways: []mapping.Gateway{{Name: "tgw", Domain: "tgw.test", Address: gwHost, Port: gp, Codecs: []string{"PCMU", "PCMA"}}},
		Trunks:   []mapping.Trunk{trunk},
		Rewrites: []mapping.RewriteSet{{Name: "national", Rules: []mapping.RewriteRule{{NumberMatch: mapping.NumberMatch{Prefix: "0"}, Replace: "+49"}}},
			{Name: "drop999", Rules: []mapping.RewriteRule{{NumberMatch: mapping.NumberMatch{Exact: "999"}, Replace: ""}}}},
	}
	rules, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.rules = rules
	e.b, e.stack = startBridge(t, e.ca, setBridge, rules, bridge.Config{RingTimeout: 10 * time.Second, ToneTimeout: time.Second,
		OnCall: func(r bridge.CallRecord) { e.records <- r }})
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := e.gw.CheckIdle()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("gateway not idle at the end: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	for _, ch := range []string{tch1, tch2} {
		e.waitSignalState(ch, func(st mgcptest.EndpointState) bool { return hasEvent(st, pkg+"/sup") && !st.NotificationState })
	}
	return e
}

// idleChannel waits for the channel to be idle at the gateway under the
// idle channel's request (sup alone: not the request of a seizure that
// mgsip still holds, which asks for sup too).
func (e *env) idleChannel(local, pkg string) {
	e.t.Helper()
	e.waitSignalState(local, func(st mgcptest.EndpointState) bool {
		return st.Seizure == mgcptest.SeizureIdle && len(st.RequestedEvents) == 1 && hasEvent(st, pkg+"/sup") &&
			!st.NotificationState && len(st.Connections) == 0
	})
}

// A trunk-originated call: the channel seizes with the address, mgsip
// places the INVITE at the provider with the calling number, answers the
// trunk on 200, and releases either way.
func TestTrunkOriginatedCall(t *testing.T) {
	for _, tc := range []struct {
		pkg       string
		trunkSide bool // the trunk releases (else the provider hangs up)
	}{{"MS", true}, {"DT", true}, {"MS", false}} {
		name := tc.pkg + "/trunk-releases"
		if !tc.trunkSide {
			name = tc.pkg + "/provider-hangs-up"
		}
		t.Run(name, func(t *testing.T) {
			var hangUp time.Duration
			if !tc.trunkSide {
				hangUp = 300 * time.Millisecond
			}
			got := make(chan siptest.Incoming, 1)
			e := casEnv(t, tc.pkg, "", func(in siptest.Incoming) siptest.Script {
				got <- in
				return siptest.Script{Ring: 50 * time.Millisecond, HangUpAfter: hangUp}
			}, nil)
			ctx := context.Background()
			if _, err := e.gw.Seize(ctx, tch1, "5557000", "2125550000"); err != nil {
				t.Fatal(err)
			}
			select {
			case in := <-got:
				if in.User != "5557000" || in.From != "2125550000" {
					t.Fatalf("INVITE to %q from %q", in.User, in.From)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no INVITE at the provider")
			}
			st := e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
				return st.Answered && len(st.Connections) == 1 && st.Connections[0].Mode == "sendrecv"
			})
			if !hasEvent(st, tc.pkg+"/rel") {
				t.Fatalf("connected channel does not watch for release: %+v", st.RequestedEvents)
			}
			if tc.trunkSide {
				e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
				if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
					t.Fatal(err)
				}
				e.waitFor("BYE at the provider", func() bool { return len(e.pbx.Received("BYE")) == 1 })
			}
			r := e.record()
			if !r.Answered || r.Direction != "outgoing" || r.Called != "5557000" {
				t.Errorf("record %+v", r)
			}
			e.idleChannel(tch1, tc.pkg)
			cmds := verbs(e.gw.Commands(), tch1)
			if !strings.Contains(cmds, "CRCX") || !strings.Contains(cmds, "DLCX") {
				t.Errorf("commands %s", cmds)
			}
		})
	}
}

// Caller id: restricted presentation sends an anonymous From with the
// number in P-Asserted-Identity; the number is rewritten toward SIP.
func TestTrunkOriginatedPresentation(t *testing.T) {
	got := make(chan siptest.Incoming, 1)
	e := casEnv(t, "MS", "", func(in siptest.Incoming) siptest.Script {
		got <- in
		return siptest.Script{Status: 486}
	}, func(tr *mapping.Trunk) {
		tr.CallerID.Presentation = "restricted"
		tr.Rewrite.ToSIP = "national"
	})
	ctx := context.Background()
	if _, err := e.gw.Seize(ctx, tch1, "0301234", "0309999"); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-got:
		if in.User != "+49301234" || in.From != "anonymous" {
			t.Fatalf("INVITE to %q from %q", in.User, in.From)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no INVITE")
	}
	inv := e.pbx.Received("INVITE")
	if len(inv) == 0 || !strings.Contains(string(inv[0].Data), "Privacy: id") || !strings.Contains(string(inv[0].Data), "P-Asserted-Identity: <sip:+49309999@") {
		t.Fatalf("INVITE: %v", inv)
	}
	if from := headerLine(inv[0].Data, "From"); !strings.Contains(from, `"Anonymous" <sip:anonymous@anonymous.invalid>`) {
		t.Errorf("From %q (RFC 3323 §4.1.1.3)", from)
	}
	// 486: the trunk hears busy until it releases.
	e.waitSignal(tch1, "MS/bz")
	e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
	if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
		t.Fatal(err)
	}
	if r := e.record(); r.Answered || r.SIPStatus != 486 {
		t.Errorf("record %+v", r)
	}
	e.idleChannel(tch1, "MS")
}

// Failures before the answer: a number the rewrite leaves empty (no
// route), the provider's 503, the gateway refusing the CRCX; each gives
// the trunk reorder until it releases, and no call is left.
func TestTrunkOriginatedFailures(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		status     int
		inject     bool
		invite     bool
	}{
		{"no route", "999", 0, false, false},
		{"provider 503", "5557000", 503, false, true},
		{"CRCX refused", "5557000", 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := casEnv(t, "MS", "", func(siptest.Incoming) siptest.Script { return siptest.Script{Status: tc.status} },
				func(tr *mapping.Trunk) { tr.Rewrite.ToSIP = "drop999" })
			if tc.inject {
				e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbCRCX, Code: 502, Count: 1})
			}
			ctx := context.Background()
			if _, err := e.gw.Seize(ctx, tch1, tc.addr, ""); err != nil {
				t.Fatal(err)
			}
			e.waitSignal(tch1, "MS/ro")
			e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
			if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
				t.Fatal(err)
			}
			e.idleChannel(tch1, "MS")
			if n := len(e.pbx.Received("INVITE")); (n > 0) != tc.invite {
				t.Errorf("%d INVITEs", n)
			}
		})
	}
}

// SIP to a CAS trunk: the channel is seized with the DID as address,
// the far end's answer answers the INVITE; glare on the first channel
// is settled by the trunk group's rule.
func TestTrunkGlare(t *testing.T) {
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	for _, rule := range []string{"", "yield", "keep"} {
		name := rule
		if name == "" {
			name = "no-glare"
		}
		t.Run(name, func(t *testing.T) {
			invites := make(chan siptest.Incoming, 2)
			e := casEnv(t, "MS", rule, func(in siptest.Incoming) siptest.Script {
				invites <- in
				return siptest.Script{}
			}, nil)
			ctx := context.Background()
			if rule != "" {
				if err := e.gw.ArmGlare(tch1, "5557000", ""); err != nil {
					t.Fatal(err)
				}
			}
			d := sipCaller(t, e.stack.LocalAddr().String())(ctx, "5550123", offer)
			// Where the SIP call went: channel 1, or channel 2 after a yield.
			sipCh, trunkCh := tch1, ""
			if rule == "yield" {
				sipCh, trunkCh = tch2, tch1
			}
			e.waitSignalState(sipCh, func(st mgcptest.EndpointState) bool {
				return st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed == "5550123" && !st.NotificationState
			})
			if trunkCh != "" {
				select {
				case in := <-invites:
					if in.User != "5557000" {
						t.Fatalf("trunk call to %q", in.User)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the trunk's call was not placed")
				}
				e.waitSignalState(trunkCh, func(st mgcptest.EndpointState) bool { return st.Answered })
			}
			if _, err := e.gw.TrunkAnswer(ctx, sipCh); err != nil {
				t.Fatal(err)
			}
			var ev sip.Event
			for ev.Kind != sip.EventAnswered {
				select {
				case ev = <-d.Events():
					if ev.Kind == sip.EventFailed {
						t.Fatalf("SIP call failed: %+v", ev)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("SIP call not answered")
				}
			}
			if err := d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			e.idleChannel(sipCh, "MS")
			want := 1
			if trunkCh != "" {
				e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(trunkCh) })
				if _, err := e.gw.TrunkRelease(ctx, trunkCh); err != nil {
					t.Fatal(err)
				}
				want = 3 // the SIP call, its yielded attempt, the trunk's call
			}
			answered, yielded := false, false
			for range want {
				r := e.record()
				answered = answered || (r.Answered && r.Line == "pstn/"+sipCh && r.Direction == "incoming")
				yielded = yielded || strings.HasPrefix(r.Result, "glare")
			}
			if !answered || yielded != (rule == "yield") {
				t.Errorf("records: answered on %s %v, yielded %v", sipCh, answered, yielded)
			}
			if trunkCh != "" {
				e.idleChannel(trunkCh, "MS")
				checkYieldOrder(t, e.gw, trunkCh)
			}
		})
	}
}

// Glare with yield on every channel: the SIP call finds no channel left
// and gets 503; both trunk calls proceed.
func TestTrunkGlareNoChannelLeft(t *testing.T) {
	e := casEnv(t, "MS", "yield", func(siptest.Incoming) siptest.Script { return siptest.Script{} }, nil)
	ctx := context.Background()
	for i, ch := range []string{tch1, tch2} {
		if err := e.gw.ArmGlare(ch, "555700"+string(rune('1'+i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	d := sipCaller(t, e.stack.LocalAddr().String())(ctx, "5550123", offer)
	select {
	case ev := <-d.Events():
		if ev.Kind != sip.EventFailed || ev.Status != 503 {
			t.Fatalf("SIP call: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the SIP call")
	}
	for _, ch := range []string{tch1, tch2} {
		e.waitSignalState(ch, func(st mgcptest.EndpointState) bool { return st.Answered && !st.NotificationState })
		if _, err := e.gw.TrunkRelease(ctx, ch); err != nil {
			t.Fatal(err)
		}
		e.idleChannel(ch, "MS")
	}
	if n := len(e.pbx.Received("INVITE")); n != 2 {
		t.Errorf("%d trunk calls placed, want 2", n)
	}
}

// SIP to a CAS trunk, released by the trunk: the caller gets a BYE and
// the release is completed (rlc).
func TestTrunkTerminatingReleasedByTrunk(t *testing.T) {
	e := casEnv(t, "DT", "", nil, nil)
	ctx := context.Background()
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	d := sipCaller(t, e.stack.LocalAddr().String())(ctx, "5550150", offer)
	e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
		return st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed == "5550150" && !st.NotificationState
	})
	if _, err := e.gw.TrunkAnswer(ctx, tch1); err != nil {
		t.Fatal(err)
	}
	e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
		return !st.NotificationState && hasEvent(st, "DT/rel") && len(st.Connections) == 1 && st.Connections[0].Mode == "sendrecv"
	})
	if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
		t.Fatal(err)
	}
	seen := map[sip.EventKind]bool{}
	for !seen[sip.EventBye] {
		select {
		case ev, ok := <-d.Events():
			if !ok {
				t.Fatalf("dialog ended without BYE: %v", seen)
			}
			seen[ev.Kind] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("no BYE from mgsip: %v", seen)
		}
	}
	if !seen[sip.EventRinging] || !seen[sip.EventAnswered] {
		t.Errorf("caller saw %v", seen)
	}
	if r := e.record(); !r.Answered || r.Result != "trunk released" {
		t.Errorf("record %+v", r)
	}
	e.idleChannel(tch1, "DT")
}

// The far end seized the channel first: its seizure is reported (or
// quarantined) before mgsip's sup reaches the gateway, which refuses that
// sup with 530. Whatever the glare rule, the SIP call hunts on to the next
// channel and the trunk's call is taken: no reorder on the channel the far
// end holds (issue 15, F1).
func TestTrunkSeizedFirst(t *testing.T) {
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	for _, pkg := range []string{"DT", "MS"} {
		for _, rule := range []string{"keep", "yield"} {
			t.Run(pkg+"/"+rule, func(t *testing.T) {
				invites := make(chan siptest.Incoming, 2)
				e := casEnv(t, pkg, rule, func(in siptest.Incoming) siptest.Script {
					invites <- in
					return siptest.Script{}
				}, nil)
				ctx := context.Background()
				// The far end seizes as mgsip's RQNT carrying sup is on its
				// way: the gateway reports it, then refuses the sup.
				if err := e.gw.SeizeBefore(tch1, mgcp.VerbRQNT, "5557001", "2125550001"); err != nil {
					t.Fatal(err)
				}
				d := sipCaller(t, e.stack.LocalAddr().String())(ctx, "5550123", offer)
				e.waitSignalState(tch2, func(st mgcptest.EndpointState) bool {
					return st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed == "5550123" && !st.NotificationState
				})
				select {
				case in := <-invites:
					if in.User != "5557001" || in.From != "2125550001" {
						t.Fatalf("trunk call to %q from %q", in.User, in.From)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the trunk's call was not placed")
				}
				e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool { return st.Answered && !st.NotificationState })
				if _, err := e.gw.TrunkAnswer(ctx, tch2); err != nil {
					t.Fatal(err)
				}
				var ev sip.Event
				for ev.Kind != sip.EventAnswered {
					select {
					case ev = <-d.Events():
						if ev.Kind == sip.EventFailed {
							t.Fatalf("SIP call failed: %+v", ev)
						}
					case <-time.After(10 * time.Second):
						t.Fatal("SIP call not answered")
					}
				}
				if err := d.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				e.idleChannel(tch2, pkg)
				if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
					t.Fatal(err)
				}
				e.idleChannel(tch1, pkg)
				refused := false
				for _, c := range e.gw.Commands() {
					if !strings.EqualFold(c.Endpoint.Local, tch1) {
						continue
					}
					for _, s := range c.Signals {
						if s.Is(pkg, "ro") || s.Is(pkg, "bz") {
							t.Errorf("the far end's channel got %s: %s", s, c.Verb)
						}
						refused = refused || s.Is(pkg, "sup")
					}
				}
				if !refused {
					t.Error("mgsip never tried to seize channel 1: the test did not cross the seizures")
				}
				answered, yielded, trunk := false, false, false
				for range 3 {
					r := e.record()
					answered = answered || (r.Answered && r.Line == "pstn/"+tch2 && r.Direction == "incoming")
					yielded = yielded || r.Result == "glare: the trunk seized first"
					trunk = trunk || (r.Answered && r.Line == "pstn/"+tch1 && r.Direction == "outgoing" && r.Called == "5557001")
				}
				if !answered || !yielded || !trunk {
					t.Errorf("records: SIP call answered on %s %v, attempt on %s yielded %v, trunk call answered %v", tch2, answered, tch1, yielded, trunk)
				}
			})
		}
	}
}

// The gateway refuses mgsip's sup with 530 but never reports a far-end
// seizure (here an injected 530 on a channel nobody seized): the SIP call
// hunts on, the channel waits tone_timeout for the far end's sup, then
// tries reorder, which the gateway refuses on its idle channel; the
// channel is armed again, not left stuck.
func TestTrunkSeizureRefusedUnreported(t *testing.T) {
	offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	e := casEnv(t, "DT", "keep", func(siptest.Incoming) siptest.Script { return siptest.Script{} }, nil)
	ctx := context.Background()
	e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbRQNT, Endpoint: tch1, Code: mgcp.CodeCASError, Count: 1})
	d := sipCaller(t, e.stack.LocalAddr().String())(ctx, "5550123", offer)
	e.waitSignalState(tch2, func(st mgcptest.EndpointState) bool {
		return st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed == "5550123" && !st.NotificationState
	})
	if _, err := e.gw.TrunkAnswer(ctx, tch2); err != nil {
		t.Fatal(err)
	}
	for ev := (sip.Event{}); ev.Kind != sip.EventAnswered; {
		select {
		case ev = <-d.Events():
			if ev.Kind == sip.EventFailed {
				t.Fatalf("SIP call failed: %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("SIP call not answered")
		}
	}
	e.waitFor("reorder tried on channel 1", func() bool {
		for _, c := range e.gw.Commands() {
			for _, s := range c.Signals {
				if strings.EqualFold(c.Endpoint.Local, tch1) && s.Is("DT", "ro") {
					return true
				}
			}
		}
		return false
	})
	e.idleChannel(tch1, "DT")
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e.idleChannel(tch2, "DT")
	if n := len(e.pbx.Received("INVITE")); n != 0 {
		t.Errorf("%d trunk calls placed for a seizure nobody made", n)
	}
	for range 2 {
		e.record()
	}
}

// headerLine returns the first line of a SIP message that starts with
// name and a colon, "" when there is none.
func headerLine(msg []byte, name string) string {
	for _, ln := range strings.Split(string(msg), "\r\n") {
		if k, _, ok := strings.Cut(ln, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return ln
		}
	}
	return ""
}

// A trunk call without ANI (no ani(...) in the seizure): the INVITE's
// From is anonymous (RFC 3323 §4.1.1.3), with no Privacy or
// P-Asserted-Identity (nothing to withhold or assert), unless the trunk
// group configures caller_id.number; a redirected INVITE keeps the same
// caller (issue 15, F3).
func TestTrunkOriginatedWithoutANI(t *testing.T) {
	for _, tc := range []struct {
		name     string
		number   string // caller_id.number
		redirect bool   // the provider answers the first INVITE 302
		from     string // the From header's value up to the tag
	}{
		{"anonymous", "", false, `"Anonymous" <sip:anonymous@anonymous.invalid>`},
		{"anonymous/redirected", "", true, `"Anonymous" <sip:anonymous@anonymous.invalid>`},
		{"configured number", "2125559999", false, "<sip:2125559999@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			e := casEnv(t, "MS", "", func(in siptest.Incoming) siptest.Script {
				n++
				if tc.redirect && n == 1 {
					return siptest.Script{Status: 302, Headers: map[string]string{"Contact": "<sip:5557999@127.0.0.1>"}}
				}
				return siptest.Script{Status: 486}
			}, func(tr *mapping.Trunk) { tr.CallerID.Number = tc.number })
			ctx := context.Background()
			if _, err := e.gw.Seize(ctx, tch1, "5557000", ""); err != nil {
				t.Fatal(err)
			}
			e.waitSignal(tch1, "MS/bz")
			invites := e.pbx.Received("INVITE")
			want := 1
			if tc.redirect {
				want = 2
			}
			if len(invites) != want {
				t.Fatalf("%d INVITEs, want %d", len(invites), want)
			}
			for _, inv := range invites {
				from := headerLine(inv.Data, "From")
				_, v, _ := strings.Cut(from, ":")
				if !strings.HasPrefix(strings.TrimSpace(v), tc.from) {
					t.Errorf("From %q, want %s...", from, tc.from)
				}
				if to := headerLine(inv.Data, "To"); strings.Contains(to, "anonymous") {
					t.Errorf("To %q", to)
				}
				for _, h := range []string{"Privacy", "P-Asserted-Identity"} {
					if l := headerLine(inv.Data, h); l != "" {
						t.Errorf("%s sent without a number to withhold: %q", h, l)
					}
				}
			}
			e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
			if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
				t.Fatal(err)
			}
			if r := e.record(); r.Answered || r.SIPStatus != 486 {
				t.Errorf("record %+v", r)
			}
			e.idleChannel(tch1, "MS")
		})
	}
}
