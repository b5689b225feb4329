package bridge_test

// Interop tests of the residential features of issue 15 with a real
// Kamailio in the path, as a site runs them: the lines register at
// Kamailio with digest (password pw-<user>), every call of a line goes
// to Kamailio, which record-routes it and relays it to a registered
// contact or, for numbers 2xxx, to a SIPp far end (a static route:
// SIPp does not register). What a proxy changes is checked on the wire
// of mgsip's own socket: each request mgsip receives crossed Kamailio
// (its Via on top of the sender's), and each in-dialog request mgsip
// sends goes to Kamailio with a Route naming it (the route set learned
// from Record-Route, RFC 3261 §12.1), its Request-URI the far end's
// Contact (the remote target). Every wait is bounded; every test ends
// with the lines armed and the gateway idle (CheckIdle).

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
)

// kamDomain is the PBX domain of the lines' peer (Kamailio): the
// domain of their accounts (Kamailio challenges with realm From domain)
// and of the Refer-To of a transfer.
const kamDomain = "pbx.example.net"

// kamRig is mgsip between the strict fake gateway and a Kamailio that
// is the lines' registrar and proxy; wire records what mgsip's SIP
// socket sent and received.
type kamRig struct {
	*env
	kam  *testutil.Kamailio
	ip   string // Kamailio's address
	wire wireCapture
}

type kamOptions struct {
	uas     string // host:port of the SIPp that Kamailio relays numbers 2xxx to
	noThree bool   // features.three_way off (flash, number, hang-up is a blind transfer)
	local   bool   // numbers 1xxx are switched locally (the lines call each other without SIP)
	// More static routes, and features.conference_uri on a gateway that
	// cannot mix (quirk profile conference: false) when conference is set.
	routes     []testutil.KamailioRoute
	conference string
}

func newKamRig(t *testing.T, o kamOptions) *kamRig {
	t.Helper()
	var routes []testutil.KamailioRoute
	if o.uas != "" {
		routes = append(routes, testutil.KamailioRoute{Prefix: "2", To: o.uas})
	}
	routes = append(routes, o.routes...)
	r := &kamRig{env: &env{t: t, records: make(chan bridge.CallRecord, 16)}}
	r.kam = testutil.StartKamailioRoutes(t, "SHA-256", 3600, routes...)
	kamHost, kamPort := hostPort(t, r.kam.Addr)
	r.ip = kamHost
	var setBridge func(*bridge.Bridge)
	r.ca, setBridge = listenCA(t, mgcp.Config{})
	var err error
	r.gw, err = mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: 2, CallAgent: r.ca.LocalAddr().String(),
		RTP: true, Codecs: []string{"PCMU", "PCMA", "telephone-event"}, DisconnectedInitial: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.gw.Close() })
	gwHost, gwPort := hostPort(t, r.gw.Addr())
	yes := true
	outbound := []mapping.OutboundRoute{{Name: "kam", Match: mapping.NumberMatch{Prefix: ""}, Peer: "kam"}}
	if o.local {
		outbound = append([]mapping.OutboundRoute{{Name: "local", Match: mapping.NumberMatch{Prefix: "1"}, Local: true}}, outbound...)
	}
	line := mapping.Line{Gateway: "gw", Endpoint: "aaln/{1..2}", User: "{n+1000}", Password: "pw-{n+1000}", DisplayName: "Line {n}"}
	if o.noThree {
		line.Features.ThreeWay = new(bool)
	}
	var quirks []mapping.QuirkProfile
	gwQuirks := ""
	if o.conference != "" {
		line.Features.ConferenceURI = o.conference
		quirks = []mapping.QuirkProfile{{Name: "no-conf", Base: "generic", Conference: new(bool)}}
		gwQuirks = "no-conf"
	}
	r.rules, err = mapping.New(mapping.Config{
		Quirks:    quirks,
		Peers:     []mapping.Peer{{Name: "kam", Host: kamHost, Port: kamPort, Register: &yes, Realm: kamDomain}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gwPort, Codecs: []string{"PCMU", "PCMA"}, Quirks: gwQuirks}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(xxxx)", Default: true}},
		Lines:     []mapping.Line{line},
		Routes:    mapping.Routes{Outbound: outbound},
	}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.b, r.stack = startBridgeSIP(t, r.ca, setBridge, r.rules, bridge.Config{Register: true, RingTimeout: 15 * time.Second,
		ToneTimeout: 5 * time.Second, OnCall: func(c bridge.CallRecord) { r.records <- c }}, sip.Config{},
		sip.WithPacketConnWrapper(r.wire.wrap))
	t.Cleanup(func() {
		if t.Failed() {
			r.wire.mu.Lock()
			t.Logf("mgsip's SIP datagrams:\n%s", r.wire.log.String())
			r.wire.mu.Unlock()
		}
	})
	// Before mgsip stops: no connection left, nothing in quarantine.
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := r.gw.CheckIdle()
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
	for _, ep := range []string{"aaln/1", "aaln/2"} {
		r.waitArmed(ep)
	}
	r.waitFor("both lines registered at Kamailio", func() bool {
		n, err := r.kam.Stat("usrloc:location_contacts")
		return err == nil && n == 2
	})
	return r
}

// waitArmed waits until the line is idle: off-hook requested, no
// connection, nothing held in notification state.
func (r *kamRig) waitArmed(local string) {
	r.t.Helper()
	r.waitSignalState(local, func(st mgcptest.EndpointState) bool {
		return hasEvent(st, "L/hd") && len(st.Connections) == 0 && !st.NotificationState
	})
}

// modes lists the modes of the line's connections.
func (r *kamRig) modes(local string) string {
	var m []string
	for _, c := range r.state(local).Connections {
		m = append(m, string(c.Mode))
	}
	return strings.Join(m, " ")
}

// call takes line 1 off hook, dials number and waits until the call is
// answered.
func (r *kamRig) call(number string) {
	r.t.Helper()
	r.offHook("aaln/1")
	r.dial("aaln/1", number)
	r.waitFor(number+" answered", func() bool { return r.modes("aaln/1") == "sendrecv" && hasEvent(r.state("aaln/1"), "L/hf") })
}

// received returns the requests of method that mgsip received, each
// checked to have crossed Kamailio: its Via on top, the sender's under
// it. It fails the test when there are fewer than want.
func (r *kamRig) received(method string, want int) []*sipgo.Request {
	r.t.Helper()
	var reqs []*sipgo.Request
	r.waitFor(method+" received", func() bool {
		reqs = r.wire.requests(false, method)
		return len(reqs) >= want
	})
	for _, q := range reqs {
		vias := q.GetHeaders("Via")
		if len(vias) < 2 || !strings.Contains(vias[0].Value(), r.ip) {
			r.t.Errorf("%s did not cross Kamailio (%s): Via %v", method, r.ip, vias)
		}
	}
	return reqs
}

// sent returns the requests of method that mgsip sent (at least want),
// each checked to have gone to Kamailio; an in-dialog one (with a To
// tag) must carry Kamailio's Route and name a remote target that is not
// Kamailio.
func (r *kamRig) sent(method string, want int) []*sipgo.Request {
	r.t.Helper()
	var msgs []wireMsg
	r.waitFor(method+" sent", func() bool {
		msgs = r.wire.sentMsgs(method)
		return len(msgs) >= want
	})
	var reqs []*sipgo.Request
	for _, m := range msgs {
		q := m.req
		reqs = append(reqs, q)
		if m.addr != r.kam.Addr {
			r.t.Errorf("%s sent to %s, not to Kamailio %s", method, m.addr, r.kam.Addr)
		}
		if to := q.To(); to == nil || to.Params == nil || !to.Params.Has("tag") || method == "ACK" {
			continue // outside a dialog (or the ACK of a failure, hop by hop)
		}
		route := q.GetHeader("Route")
		if route == nil || !strings.Contains(route.Value(), r.ip) || !strings.Contains(route.Value(), ";lr") {
			r.t.Errorf("in-dialog %s without Kamailio's Route (%v):\n%s", method, route, q)
		}
		if q.Recipient.Host == r.ip {
			r.t.Errorf("in-dialog %s addressed to Kamailio, not to the far end's Contact:\n%s", method, q)
		}
	}
	return reqs
}

// wireCapture records the SIP datagrams of mgsip's socket.
type wireCapture struct {
	mu   sync.Mutex
	msgs []wireMsg
	log  strings.Builder // every datagram, for a failed test's log
}

type wireMsg struct {
	out  bool   // sent by mgsip
	addr string // the other end
	req  *sipgo.Request
}

func (c *wireCapture) wrap(pc net.PacketConn) net.PacketConn { return wireConn{PacketConn: pc, c: c} }

func (c *wireCapture) add(out bool, b []byte, a net.Addr) {
	dir := "from"
	if out {
		dir = "to"
	}
	c.mu.Lock()
	fmt.Fprintf(&c.log, "--- %s %s\n%s\n", dir, a, b)
	c.mu.Unlock()
	msg, err := sipgo.ParseMessage(b)
	if err != nil {
		return
	}
	q, ok := msg.(*sipgo.Request)
	if !ok {
		return
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, wireMsg{out: out, addr: a.String(), req: q})
	c.mu.Unlock()
}

// requests returns the requests of method sent (out) or received, in
// order; retransmissions (same Via branch) are counted once.
func (c *wireCapture) requests(out bool, method string) []*sipgo.Request {
	var reqs []*sipgo.Request
	for _, m := range c.list(out, method) {
		reqs = append(reqs, m.req)
	}
	return reqs
}

func (c *wireCapture) sentMsgs(method string) []wireMsg { return c.list(true, method) }

func (c *wireCapture) list(out bool, method string) []wireMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var res []wireMsg
	seen := map[string]bool{}
	for _, m := range c.msgs {
		if m.out != out || string(m.req.Method) != method {
			continue
		}
		key := ""
		if v := m.req.Via(); v != nil {
			key, _ = v.Params.Get("branch")
		}
		if key != "" && seen[key] {
			continue
		}
		seen[key] = true
		res = append(res, m)
	}
	return res
}

type wireConn struct {
	net.PacketConn
	c *wireCapture
}

func (w wireConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := w.PacketConn.ReadFrom(b)
	if err == nil {
		w.c.add(false, b[:n], a)
	}
	return n, a, err
}

func (w wireConn) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := w.PacketConn.WriteTo(b, a)
	if err == nil {
		w.c.add(true, b[:n], a)
	}
	return n, err
}

// TestInteropKamailioBlindTransfer: line 1 calls 2000 through Kamailio
// (SIPp, which copies the Record-Route), flashes (the hold re-INVITE
// follows the route set), dials 2005 and hangs up. The REFER goes
// through Kamailio to SIPp's Contact with Refer-To naming 2005 at the
// PBX domain, not at SIPp or Kamailio's address; SIPp's NOTIFYs come
// back through Kamailio, and the BYE follows them (SIPp's scenario fails
// on a BYE before the final NOTIFY).
func TestInteropKamailioBlindTransfer(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_transferee.xml")
	r := newKamRig(t, kamOptions{uas: uas.Addr, noThree: true})
	r.call("2000")
	r.flash("aaln/1")
	r.waitFor("held", func() bool { return r.modes("aaln/1") == "inactive" })
	r.dial("aaln/1", "2005")
	r.waitFor("the number taken (dial tone stopped)", func() bool { return !hasSignal(r.state("aaln/1"), "L/dl") })
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Result != "transferred to 2005" {
		t.Errorf("record of the call: %+v", c)
	}
	r.sent("INVITE", 2) // the call and its hold
	refer := r.sent("REFER", 1)[0]
	if rt := refer.GetHeader("Refer-To"); rt == nil || !strings.Contains(rt.Value(), "sip:2005@"+kamDomain) {
		t.Errorf("Refer-To %v, want 2005 at %s", rt, kamDomain)
	}
	r.received("NOTIFY", 2)
	r.sent("BYE", 1)
}

// TestInteropKamailioCallWaitingCallerID: line 1 talks to 2000 (SIPp
// behind Kamailio) when a second SIPp calls 1001 at Kamailio, which
// finds the line's registered contact: the waiting tone carries the
// caller id of the relayed INVITE. The phone hangs up (BYE along the
// first call's route set), rings again with the caller id, answers, and
// the caller's BYE comes through Kamailio.
func TestInteropKamailioCallWaitingCallerID(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_answers.xml")
	r := newKamRig(t, kamOptions{uas: uas.Addr})
	r.call("2000")
	uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_hangs_up.xml", "-s", "1001", r.kam.Addr)
	cid := func(what, tone string) {
		t.Helper()
		r.waitSignal("aaln/1", tone)
		for _, s := range r.state("aaln/1").Signals {
			if s.Is("L", "ci") {
				if s.Param(1) != "sipp" || s.Param(2) != "sipp" {
					t.Errorf("%s: caller id %v", what, s)
				}
				return
			}
		}
		t.Errorf("%s without caller id: %v", what, r.state("aaln/1").Signals)
	}
	cid("waiting tone", "L/wt")
	inv := r.received("INVITE", 1)[0]
	if rr := inv.GetHeader("Record-Route"); rr == nil || !strings.Contains(rr.Value(), r.ip) {
		t.Errorf("the waiting call's INVITE has no Record-Route of Kamailio:\n%s", inv)
	}
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	cid("ring back", "L/rg")
	r.offHook("aaln/1")
	uac.WaitFor(t, 20*time.Second)
	r.waitSignal("aaln/1", "L/ro")
	r.onHook("aaln/1")
	r.waitArmed("aaln/1")
	for range 2 {
		if c := r.record(); !c.Answered {
			t.Errorf("record %+v", c)
		}
	}
	r.sent("INVITE", 1)  // the first call, to Kamailio
	r.sent("ACK", 1)     // its ACK, along the route set
	r.sent("BYE", 1)     // its end, likewise
	r.received("ACK", 1) // the waiting call's ACK, loose-routed by Kamailio
	r.received("BYE", 1) // and the waiting caller's BYE
}

// TestInteropKamailioReferReceived: SIPp calls 1001 at Kamailio and,
// answered, sends REFER (through Kamailio) naming 2000 at Kamailio.
// mgsip calls 2000 from the line's account through Kamailio, which
// relays it to the target SIPp; the NOTIFYs (100, 180, 200) and the
// BYE of the old call follow the transferor's route set. The phone ends
// up talking to the target.
func TestInteropKamailioReferReceived(t *testing.T) {
	target := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_answers.xml")
	r := newKamRig(t, kamOptions{uas: target.Addr})
	transferor := testutil.StartSIPp(t, "-sf", "testdata/sipp/uac_transfers.xml", "-s", "1001", r.kam.Addr)
	r.waitSignal("aaln/1", "L/rg")
	r.offHook("aaln/1")
	transferor.WaitFor(t, 20*time.Second)
	r.waitFor("the phone talks to the target", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv &&
			strings.Contains(string(st.Connections[0].RemoteSDP), "o=target")
	})
	if c := r.record(); c.Result != "transferred by the far end to 2000" {
		t.Errorf("record of the transferred call: %+v", c)
	}
	r.received("REFER", 1)
	r.sent("NOTIFY", 3)
	inv := r.sent("INVITE", 1)
	if inv[0].Recipient.User != "2000" {
		t.Errorf("the new call went to %s, want 2000", inv[0].Recipient.String())
	}
	r.sent("BYE", 1)
	r.onHook("aaln/1")
	target.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Number != "2000" {
		t.Errorf("record of the new call: %+v", c)
	}
	if byes := r.sent("BYE", 2); byes[1].Recipient.Host == byes[0].Recipient.Host && byes[1].Recipient.Port == byes[0].Recipient.Port {
		t.Errorf("both BYEs to %s: the new call's remote target is the transferor's", byes[0].Recipient.String())
	}
}

// TestInteropKamailioThreeWay: line 1 calls 2000 and, after a flash,
// 2001, both through Kamailio to SIPp; the second flash puts both
// connections in confrnce and resumes the first call; each re-INVITE
// follows its call's route set, and so do both BYEs on hang-up.
func TestInteropKamailioThreeWay(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_holdable.xml", "-m", "2")
	r := newKamRig(t, kamOptions{uas: uas.Addr})
	r.call("2000")
	r.flash("aaln/1")
	r.dial("aaln/1", "2001")
	r.waitFor("A held, C answered", func() bool { return r.modes("aaln/1") == "inactive sendrecv" })
	r.flash("aaln/1")
	r.waitFor("three-way", func() bool { return r.modes("aaln/1") == "confrnce confrnce" })
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	for range 2 {
		if c := r.record(); !c.Answered {
			t.Errorf("record %+v", c)
		}
	}
	invs := r.sent("INVITE", 4) // A, A's hold, C, A's resume
	calls := map[string]bool{}
	for _, q := range invs {
		calls[q.CallID().Value()] = true
	}
	if len(calls) != 2 {
		t.Errorf("INVITEs of %d calls, want 2", len(calls))
	}
	r.sent("BYE", 2)
}

// TestInteropKamailioAttendedTransfer: line 1 talks to 2000, flashes,
// talks to 2001 (both SIPp behind Kamailio) and hangs up: the REFER goes
// along the first call's route set with Refer-To naming 2001 at the PBX
// domain and Replaces for the second call's dialog as mgsip knows it
// (Call-ID and tags are end to end, so Kamailio keeps them); SIPp's
// NOTIFY comes back through Kamailio; both BYEs follow.
func TestInteropKamailioAttendedTransfer(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_transferable.xml", "-m", "2")
	r := newKamRig(t, kamOptions{uas: uas.Addr})
	r.call("2000")
	r.flash("aaln/1")
	r.dial("aaln/1", "2001")
	r.waitFor("A held, C answered", func() bool { return r.modes("aaln/1") == "inactive sendrecv" })
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	got := map[string]string{}
	for range 2 {
		c := r.record()
		got[c.Number] = c.Result
	}
	if got["2000"] != "transferred to 2001" {
		t.Errorf("records %v", got)
	}
	invs := r.sent("INVITE", 3)
	var second *sipgo.Request
	for _, q := range invs {
		if q.Recipient.User == "2001" {
			second = q
		}
	}
	refer := r.sent("REFER", 1)[0]
	rt := refer.GetHeader("Refer-To")
	if second == nil || rt == nil {
		t.Fatalf("no INVITE to 2001 (%v) or no Refer-To (%v)", second, rt)
	}
	raw, err := url.QueryUnescape(rt.Value())
	if err != nil {
		t.Fatalf("Refer-To %q: %v", rt.Value(), err)
	}
	ftag, _ := second.From().Params.Get("tag")
	if !strings.Contains(raw, "sip:2001@"+kamDomain) || !strings.Contains(raw, "Replaces="+second.CallID().Value()) ||
		!strings.Contains(raw, "from-tag="+ftag) {
		t.Errorf("Refer-To %s does not replace the call to 2001 (Call-ID %s, our tag %s)", raw, second.CallID().Value(), ftag)
	}
	if refer.CallID().Value() == second.CallID().Value() {
		t.Error("the REFER went in the consultation call, not the held one")
	}
	r.received("NOTIFY", 1)
	r.sent("BYE", 2)
}

// TestInteropKamailioReplaces: line 1 calls 2000 (SIPp A behind
// Kamailio), then SIPp B calls 1001 at Kamailio with Replaces naming that
// dialog (RFC 3891): Kamailio relays it to the line's contact, mgsip
// matches the dialog (its Call-ID and tags crossed the proxy unchanged),
// moves the connection to B and hangs up A along A's route set; B's BYE
// comes through Kamailio.
func TestInteropKamailioReplaces(t *testing.T) {
	uasA := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_replaced.xml")
	r := newKamRig(t, kamOptions{uas: uasA.Addr})
	r.call("2000")
	connID := r.state("aaln/1").Connections[0].ID
	a := r.sent("INVITE", 1)[0]
	ftag, _ := a.From().Params.Get("tag")
	inf := t.TempDir() + "/replaces.csv"
	if err := os.WriteFile(inf, []byte("SEQUENTIAL\n"+a.CallID().Value()+";"+ftag+";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uacB := testutil.StartSIPp(t, "-sf", "testdata/sipp/uac_replaces.xml", "-inf", inf, "-s", "1001", r.kam.Addr)
	bHost, _, _ := net.SplitHostPort(uacB.Addr)
	r.waitFor("the line's connection toward B", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].ID == connID && st.Connections[0].Mode == mgcp.ModeSendRecv &&
			strings.Contains(string(st.Connections[0].RemoteSDP), "c=IN IP4 "+bHost)
	})
	uasA.WaitFor(t, 20*time.Second) // A got its BYE
	uacB.WaitFor(t, 20*time.Second) // B was answered and its BYE taken
	inv := r.received("INVITE", 1)[0]
	if inv.GetHeader("Replaces") == nil || inv.GetHeader("Record-Route") == nil {
		t.Errorf("B's INVITE lost its Replaces or has no Record-Route:\n%s", inv)
	}
	r.sent("BYE", 1)
	r.received("BYE", 1)
	r.onHook("aaln/1")
	r.waitArmed("aaln/1")
}

// TestInteropKamailioRedirect: SIPp answers line 1's INVITE for 2000
// with 302 (Contact 2001 at SIPp's own address), relayed by Kamailio;
// mgsip calls 2001 through the same peer, Kamailio (not at the address
// of the redirect's choosing), which relays it to SIPp; the phone hangs
// up along the new call's route set.
func TestInteropKamailioRedirect(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_redirects.xml", "-m", "2")
	r := newKamRig(t, kamOptions{uas: uas.Addr})
	r.call("2000")
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Number != "2001" {
		t.Errorf("record %+v", c)
	}
	invs := r.sent("INVITE", 2)
	if len(invs) != 2 || invs[0].Recipient.User != "2000" || invs[1].Recipient.User != "2001" {
		var got []string
		for _, q := range invs {
			got = append(got, q.Recipient.String())
		}
		t.Errorf("INVITEs to %v, want 2000 then 2001", got)
	}
	r.sent("BYE", 1)
}

// TestInteropKamailio422: SIPp answers line 1's INVITE with 422 (Min-SE
// 3600) through Kamailio; mgsip places the call again through Kamailio
// with Session-Expires 3600, which SIPp answers; the BYE follows the
// route set.
func TestInteropKamailio422(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_422.xml", "-m", "2")
	r := newKamRig(t, kamOptions{uas: uas.Addr})
	r.offHook("aaln/1")
	r.dial("aaln/1", "2000")
	r.waitFor("answered after the 422", func() bool { return r.modes("aaln/1") == "sendrecv" })
	r.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered {
		t.Errorf("record %+v", c)
	}
	invs := r.sent("INVITE", 2)
	if se := invs[1].GetHeader("Session-Expires"); se == nil || !strings.HasPrefix(se.Value(), "3600") {
		t.Errorf("the retried INVITE's Session-Expires %v, want 3600", se)
	}
	r.sent("BYE", 1)
}
