package bridge_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

// Two mgsip nodes share one gateway (docs/cluster.md): node A has a
// connected call, dies without a word (its sockets go dead), and node B
// takes the gateway over with the calls A stored.

// memStore is the cluster's call store in memory, fenced as etcd's is: a
// node may write only while it owns the gateway.
type memStore struct {
	mu      sync.Mutex
	owner   string
	calls   map[string]bridge.StoredCall
	refused int
}

var errNotOwner = errors.New("memstore: not the owner")

func (s *memStore) handle(node string) bridge.CallStore { return storeHandle{s: s, node: node} }

func (s *memStore) setOwner(n string) { s.mu.Lock(); s.owner = n; s.mu.Unlock() }

func (s *memStore) list() []bridge.StoredCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []bridge.StoredCall
	for _, c := range s.calls {
		out = append(out, c)
	}
	return out
}

type storeHandle struct {
	s    *memStore
	node string
}

func (h storeHandle) PutCall(_ context.Context, c bridge.StoredCall) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if h.s.owner != h.node {
		h.s.refused++
		return errNotOwner
	}
	h.s.calls[c.Gateway+"/"+c.Endpoint+"/"+c.CallID] = c
	return nil
}

func (h storeHandle) DeleteCall(_ context.Context, gw, ep, id string) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if h.s.owner != h.node {
		h.s.refused++
		return errNotOwner
	}
	delete(h.s.calls, gw+"/"+ep+"/"+id)
	return nil
}

// killConn is a socket that goes dead: after kill nothing is sent and
// what arrives is dropped, as for a process killed with -9.
type killConn struct {
	net.PacketConn
	dead *atomic.Bool
}

var errKilled = errors.New("killed")

func (c killConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if c.dead.Load() {
		return 0, errKilled
	}
	return c.PacketConn.WriteTo(p, a)
}

func (c killConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.dead.Load() {
			return n, a, err
		}
	}
}

type node struct {
	name  string
	b     *bridge.Bridge
	ca    *mgcp.CallAgent
	stack *sip.Stack
	dead  atomic.Bool
}

func (n *node) ne() string   { return "mgsip@" + n.ca.LocalAddr().String() }
func (n *node) sipPort() int { return n.stack.LocalAddr().(*net.UDPAddr).Port }
func (n *node) kill()        { n.dead.Store(true) }

type cluster2 struct {
	t     *testing.T
	gw    *mgcptest.Gateway
	pbx   *siptest.Registrar
	store *memStore
	a, b  *node
	owner atomic.Pointer[string]
	env   *env // helpers over gw
}

// newCluster2 starts the PBX, the gateway (provisioned with A as its
// call agent) and nodes A and B; A owns the gateway.
func newCluster2(t *testing.T) *cluster2 { return newCluster2Peer(t, "", "pw") }

// newCluster2Peer is newCluster2 with the lines' SIP peer at peer
// (host:port; "" for the siptest PBX) and their password (a template).
func newCluster2Peer(t *testing.T, peer, password string) *cluster2 {
	t.Helper()
	c := &cluster2{t: t, store: &memStore{calls: map[string]bridge.StoredCall{}, owner: "A"}}
	a := "A"
	c.owner.Store(&a)
	var err error
	c.pbx, err = siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"1001": "pw", "1002": "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.pbx.Close() })
	c.a, c.b = c.newNode("A"), c.newNode("B")
	c.gw, err = mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: 2, CallAgent: c.a.ca.LocalAddr().String(), RTP: true,
		Codecs: []string{"PCMU", "PCMA", "telephone-event"}, DisconnectedInitial: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.gw.Close() })
	gwHost, gp := hostPort(t, c.gw.Addr())
	if peer == "" {
		peer = c.pbx.Addr()
	}
	pbxHost, pbxPort := hostPort(t, peer)
	yes := true
	rules, err := mapping.New(mapping.Config{
		Peers:     []mapping.Peer{{Name: "pbx", Host: pbxHost, Port: pbxPort, Register: &yes}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gp, Codecs: []string{"PCMU", "PCMA"}}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}},
		Lines: []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1..2}", User: "{n+1000}", Password: mapping.Secret(password),
			DisplayName: "Line {n}"}},
		Routes: mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"}}},
	}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.env = &env{t: t, gw: c.gw, pbx: c.pbx, rules: rules}
	for _, n := range []*node{c.a, c.b} {
		c.startNode(n, rules)
	}
	// The gateway is left as the strict device wants it when the test
	// ends: no connection, nothing in quarantine.
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := c.gw.CheckIdle()
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
		c.env.waitSignalState(ep, func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	}
	return c
}

func (c *cluster2) newNode(name string) *node {
	n := &node{name: name}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	var mu sync.Mutex
	handler := mgcp.HandlerFunc(func(ctx context.Context, from netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
		mu.Lock()
		b := n.b
		mu.Unlock()
		if b == nil {
			return mgcp.NewResponse(cmd, mgcp.CodeTransientError)
		}
		return b.HandleMGCP(ctx, from, cmd)
	})
	n.ca = mgcp.New(killConn{PacketConn: pc, dead: &n.dead}, mgcp.Config{}, mgcp.WithHandler(handler))
	n.stack, err = sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}},
		sip.WithPacketConnWrapper(func(pc net.PacketConn) net.PacketConn { return killConn{PacketConn: pc, dead: &n.dead} }))
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *cluster2) startNode(n *node, rules *mapping.Rules) {
	var err error
	n.b, err = bridge.New(bridge.Config{CallAgent: n.ca, SIP: n.stack, Rules: mapping.NewHolder(rules), Register: true,
		RingTimeout: 10 * time.Second, ToneTimeout: time.Second, Calls: c.store.handle(n.name),
		Owns: func(*mapping.GatewayRule) bool { return *c.owner.Load() == n.name }})
	if err != nil {
		c.t.Fatal(err)
	}
	n.stack.SetHandler(n.b)
	ctx, cancel := context.WithCancel(context.Background())
	svc, stopSvc := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = n.ca.Serve(svc) }()
	go func() { defer wg.Done(); _ = n.stack.Serve(svc) }()
	go func() { defer wg.Done(); defer stopSvc(); _ = n.b.Run(ctx) }()
	c.t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = n.stack.Close()
	})
}

// takeOver kills A and lets B take the gateway with A's stored calls
// (mutate may change them first).
func (c *cluster2) takeOver(mutate func([]bridge.StoredCall)) {
	c.t.Helper()
	c.a.kill()
	b := "B"
	c.owner.Store(&b)
	c.store.setOwner("B")
	calls := c.store.list()
	if mutate != nil {
		mutate(calls)
	}
	c.b.b.GatewayAcquired("gw", calls)
}

// waitStored waits until the store holds n calls with a confirmed dialog.
func (c *cluster2) waitStored(n int) []bridge.StoredCall {
	c.t.Helper()
	var calls []bridge.StoredCall
	c.env.waitFor(strconv.Itoa(n)+" stored calls", func() bool {
		calls = c.store.list()
		if len(calls) != n {
			return false
		}
		for _, sc := range calls {
			if sc.Dialog.CallID == "" || sc.ConnectionID == "" {
				return false
			}
		}
		return true
	})
	return calls
}

// sipRequests returns the requests of a method the PBX received.
func (c *cluster2) sipRequests(method string) []*sipgo.Request {
	var out []*sipgo.Request
	for _, m := range c.pbx.Received(method) {
		msg, err := sipgo.ParseMessage(m.Data)
		if err != nil {
			continue
		}
		if r, ok := msg.(*sipgo.Request); ok && r.Method == sipgo.RequestMethod(method) {
			out = append(out, r)
		}
	}
	return out
}

func contactPort(r *sipgo.Request) int {
	if c := r.Contact(); c != nil {
		return c.Address.Port
	}
	return 0
}

// outgoingCall places a call from aaln/1 to the PBX and waits until it
// is connected and stored.
func (c *cluster2) outgoingCall() (mgcptest.Connection, bridge.StoredCall) {
	c.t.Helper()
	e := c.env
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	conn := *e.conn("aaln/1")
	stored := c.waitStored(1)
	if stored[0].ConnectionID != conn.ID || stored[0].CallID != conn.CallID || stored[0].Mode != string(mgcp.ModeSendRecv) ||
		!stored[0].Dialog.UAC || stored[0].Dialog.LocalCSeq == 0 {
		c.t.Fatalf("stored %+v for connection %+v", stored[0], conn)
	}
	return conn, stored[0]
}

// TestTakeoverKeepsCall: A's outgoing call survives A's death: B keeps
// the gateway's connection, sends the PBX a re-INVITE with B's Contact,
// and the phone's hang-up afterwards makes B send a BYE the PBX accepts;
// then a new call works from B, and both lines registered from B.
func TestTakeoverKeepsCall(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	e.waitFor("registrations from A", func() bool {
		b, ok := c.pbx.Binding("1001")
		return ok && strings.Contains(b.Contact, ":"+strconv.Itoa(c.a.sipPort()))
	})
	conn, stored := c.outgoingCall()
	c.takeOver(nil)

	// The far end gets the target refresh from B, in the same dialog with
	// the next CSeq and the same media (version + 1).
	var reinv *sipgo.Request
	e.waitFor("the re-INVITE from B", func() bool {
		invs := c.sipRequests("INVITE")
		if len(invs) == 2 {
			reinv = invs[1]
		}
		return reinv != nil
	})
	if contactPort(reinv) != c.b.sipPort() || reinv.CallID().Value() != stored.Dialog.CallID || reinv.CSeq().SeqNo != stored.Dialog.LocalCSeq+1 {
		t.Errorf("re-INVITE Contact %v Call-ID %s CSeq %d; want B's port %d, %s, %d", reinv.Contact(), reinv.CallID().Value(),
			reinv.CSeq().SeqNo, c.b.sipPort(), stored.Dialog.CallID, stored.Dialog.LocalCSeq+1)
	}
	if !strings.Contains(string(reinv.Body()), "m=audio "+strconv.Itoa(conn.RTPPort)) {
		t.Errorf("re-INVITE SDP does not keep the gateway's media:\n%s", reinv.Body())
	}
	// The gateway kept its connection, and talks to B now.
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/1").NotifiedEntity == c.b.ne() })
	if now := e.conn("aaln/1"); now.ID != conn.ID || now.Mode != mgcp.ModeSendRecv {
		t.Fatalf("connection after the takeover %s %s, want %s sendrecv", now.ID, now.Mode, conn.ID)
	}
	e.waitFor("registrations from B", func() bool {
		for _, u := range []string{"1001", "1002"} {
			if b, ok := c.pbx.Binding(u); !ok || !strings.Contains(b.Contact, ":"+strconv.Itoa(c.b.sipPort())) {
				return false
			}
		}
		return true
	})
	// B stores the call under its own Contact.
	e.waitFor("the call stored by B", func() bool {
		l := c.store.list()
		return len(l) == 1 && strings.Contains(l[0].Dialog.LocalContact, ":"+strconv.Itoa(c.b.sipPort())) &&
			l[0].Dialog.LocalCSeq == stored.Dialog.LocalCSeq+1
	})

	// Hang-up: B's BYE, accepted by the PBX; the connection goes.
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE at the PBX", func() bool { return len(c.sipRequests("BYE")) == 1 })
	bye := c.sipRequests("BYE")[0]
	if bye.CSeq().SeqNo != stored.Dialog.LocalCSeq+2 || bye.CallID().Value() != stored.Dialog.CallID {
		t.Errorf("BYE CSeq %d Call-ID %s", bye.CSeq().SeqNo, bye.CallID().Value())
	}
	e.waitFor("200 to the BYE", func() bool {
		for _, m := range c.pbx.Messages() {
			if m.Outgoing && strings.HasPrefix(string(m.Data), "SIP/2.0 200") && strings.Contains(string(m.Data), " BYE\r\n") {
				return true
			}
		}
		return false
	})
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })

	// A new call, all from B.
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	e.offHook("aaln/1")
	e.dial("aaln/1", "2001")
	e.waitFor("second call answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	if invs := c.sipRequests("INVITE"); len(invs) != 3 || contactPort(invs[2]) != c.b.sipPort() {
		t.Errorf("%d INVITEs; the new one's Contact %v", len(invs), invs[len(invs)-1].Contact())
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("second BYE", func() bool { return len(c.sipRequests("BYE")) == 2 })
	for _, cmd := range e.gw.Commands() {
		if strings.EqualFold(cmd.Endpoint.Local, "aaln/1") && cmd.Verb == mgcp.VerbDLCX && cmd.ConnectionID == conn.ID {
			return // deleted once, by B at the hang-up
		}
	}
	t.Error("the kept connection was never deleted")
}

// TestTakeoverFarEndHangsUp: an incoming call answered on A; after the
// takeover the far end's BYE reaches B (its remote target was
// refreshed), which deletes the connection and re-arms the line.
func TestTakeoverFarEndHangsUp(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	var cap sipCapture
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}}, sip.WithPacketConnWrapper(cap.wrap))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = caller.Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = caller.Close() })
	<-caller.Ready()
	d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "5551234"}, To: "1001", Peer: c.a.stack.LocalAddr().String(),
		SDP: []byte(siptest.DefaultAnswerSDP)})
	if err != nil {
		t.Fatal(err)
	}
	e.waitSignal("aaln/1", "L/rg")
	e.offHook("aaln/1")
	waitDialogEvent(t, d, sip.EventAnswered)
	stored := c.waitStored(1)[0]
	if stored.Dialog.UAC || stored.Direction != "incoming" {
		t.Fatalf("stored %+v", stored)
	}
	conn := *e.conn("aaln/1")
	c.takeOver(nil)
	// Our stack allows UPDATE: the target refresh is one.
	up := cap.request(t, "UPDATE")
	if contactPort(up) != c.b.sipPort() {
		t.Fatalf("UPDATE Contact %v, want B's port %d", up.Contact(), c.b.sipPort())
	}
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/1").NotifiedEntity == c.b.ne() })
	if now := e.conn("aaln/1"); now.ID != conn.ID || now.Mode != mgcp.ModeSendRecv {
		t.Fatalf("connection after the takeover %s %s", now.ID, now.Mode)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatalf("far end's BYE: %v", err)
	}
	e.noConnections("aaln/1")
	e.waitSignal("aaln/1", "L/ro") // off hook, the call gone
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}

// TestTakeoverRefreshUnanswered: the far end never answers the target
// refresh (its UPDATE and the retransmissions are swallowed). The refresh
// is bounded by the call's end: the phone hanging up while it is pending
// sends the BYE at once, rather than behind the unanswered UPDATE (whose
// transaction would last until Timer F, 64*T1 = 32 s, RFC 3261 §17.1.2.2),
// and the connection is deleted.
func TestTakeoverRefreshUnanswered(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	cap := sipCapture{swallow: "UPDATE"}
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}}, sip.WithPacketConnWrapper(cap.wrap))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = caller.Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = caller.Close() })
	<-caller.Ready()
	d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "5551234"}, To: "1001", Peer: c.a.stack.LocalAddr().String(),
		SDP: []byte(siptest.DefaultAnswerSDP)})
	if err != nil {
		t.Fatal(err)
	}
	e.waitSignal("aaln/1", "L/rg")
	e.offHook("aaln/1")
	waitDialogEvent(t, d, sip.EventAnswered)
	c.waitStored(1)
	c.takeOver(nil)
	up := cap.request(t, "UPDATE") // arrived, and never answered
	if contactPort(up) != c.b.sipPort() {
		t.Fatalf("UPDATE Contact %v, want B's port %d", up.Contact(), c.b.sipPort())
	}
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/1").NotifiedEntity == c.b.ne() })
	e.onHook("aaln/1")
	// Within waitDialogEvent's 10 s: well before the UPDATE would time out.
	waitDialogEvent(t, d, sip.EventBye)
	e.noConnections("aaln/1")
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}

// TestTakeoverPBXHangsUp: a call the PBX placed to a line, answered on
// A; after the takeover the PBX follows the target refresh, and its BYE
// reaches B, which ends the call (DLCX, the line re-armed).
func TestTakeoverPBXHangsUp(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	e.waitFor("registration from A", func() bool { _, ok := c.pbx.Binding("1002"); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := make(chan *siptest.OutCall, 1)
	go func() {
		oc, err := c.pbx.Call(ctx, "1002", "5550100", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		out <- oc
	}()
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	oc := <-out
	if oc == nil {
		t.FailNow()
	}
	stored := c.waitStored(1)[0]
	conn := *e.conn("aaln/2")
	c.takeOver(nil)
	// The line is the dialog's UAS; the PBX allows no UPDATE: a re-INVITE.
	e.waitFor("the re-INVITE at the PBX", func() bool {
		for _, r := range c.sipRequests("INVITE") {
			if r.CallID().Value() == stored.Dialog.CallID && contactPort(r) == c.b.sipPort() {
				return true
			}
		}
		return false
	})
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/2").NotifiedEntity == c.b.ne() })
	if now := e.conn("aaln/2"); now.ID != conn.ID || now.Mode != mgcp.ModeSendRecv {
		t.Fatalf("connection after the takeover %s %s", now.ID, now.Mode)
	}
	if err := oc.HangUp(ctx); err != nil {
		t.Fatalf("PBX's BYE: %v", err)
	}
	e.noConnections("aaln/2")
	e.waitSignal("aaln/2", "L/ro")
	e.onHook("aaln/2")
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}

// TestTakeoverConnectionGone: a stored call whose connection the gateway
// no longer has is ended towards the far end (BYE with a Q.850 reason);
// the connection no stored call names is deleted; the off-hook phone
// hears reorder.
func TestTakeoverConnectionGone(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	conn, _ := c.outgoingCall()
	c.takeOver(func(calls []bridge.StoredCall) { calls[0].ConnectionID = "DEADBEEF" })
	e.waitFor("BYE with a reason at the PBX", func() bool {
		byes := c.sipRequests("BYE")
		return len(byes) == 1 && byes[0].GetHeader("Reason") != nil && strings.Contains(byes[0].GetHeader("Reason").Value(), "Q.850;cause=41")
	})
	e.noConnections("aaln/1")
	deleted := false
	for _, cmd := range e.gw.Commands() {
		deleted = deleted || (cmd.Verb == mgcp.VerbDLCX && cmd.ConnectionID == conn.ID)
	}
	if !deleted {
		t.Error("the connection no stored call keeps was not deleted")
	}
	e.waitSignal("aaln/1", "L/ro")
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}

// TestLostGatewayForgetsCalls: a node told it lost a gateway forgets its
// calls without a BYE or a DLCX, and deletes nothing from the store.
func TestLostGatewayForgetsCalls(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	conn, _ := c.outgoingCall()
	b := "B"
	c.owner.Store(&b)
	c.a.b.GatewayOwned("gw", false)
	e.waitFor("the call forgotten on A", func() bool { return c.a.b.ActiveCalls() == 0 })
	if len(c.store.list()) != 1 {
		t.Errorf("store holds %d calls, want the one the new owner takes", len(c.store.list()))
	}
	// B takes it over and ends it cleanly.
	c.store.setOwner("B")
	c.b.b.GatewayAcquired("gw", c.store.list())
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/1").NotifiedEntity == c.b.ne() })
	if now := e.conn("aaln/1"); now.ID != conn.ID {
		t.Fatalf("connection %s after the takeover, want %s", now.ID, conn.ID)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE from B", func() bool { return len(c.sipRequests("BYE")) == 1 })
	// A sent neither a BYE nor a DLCX: the one of each is B's.
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
	if n := len(c.sipRequests("BYE")); n != 1 {
		t.Errorf("%d BYEs, want B's only", n)
	}
	dlcx := 0
	for _, cmd := range e.gw.Commands() {
		if cmd.Verb == mgcp.VerbDLCX && cmd.ConnectionID == conn.ID {
			dlcx++
		}
	}
	if dlcx != 1 {
		t.Errorf("%d DLCX of the call's connection, want B's only", dlcx)
	}
}

// sipCapture records the requests a SIP stack receives; with swallow
// set (a method), such requests are recorded but never reach the stack,
// as for a far end that does not answer them.
type sipCapture struct {
	mu      sync.Mutex
	msgs    []string
	swallow string
}

func (c *sipCapture) wrap(pc net.PacketConn) net.PacketConn { return capConn{PacketConn: pc, c: c} }

type capConn struct {
	net.PacketConn
	c *sipCapture
}

func (cc capConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := cc.PacketConn.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
		cc.c.mu.Lock()
		cc.c.msgs = append(cc.c.msgs, string(b[:n]))
		swallowed := cc.c.swallow != "" && strings.HasPrefix(string(b[:n]), cc.c.swallow+" ")
		cc.c.mu.Unlock()
		if !swallowed {
			return n, a, err
		}
	}
}

// request waits for the first request of method received.
func (c *sipCapture) request(t *testing.T, method string) *sipgo.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		msgs := append([]string(nil), c.msgs...)
		c.mu.Unlock()
		for _, m := range msgs {
			if strings.HasPrefix(m, method+" ") {
				if msg, err := sipgo.ParseMessage([]byte(m)); err == nil {
					return msg.(*sipgo.Request)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s received", method)
	return nil
}

// TestAcquiredAgainKeepsOwnCalls: a node told it owns a gateway it never
// lost (its own calls still up) keeps its calls; the stored ones are its
// own and nothing is hung up.
func TestAcquiredAgainKeepsOwnCalls(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	_, stored := c.outgoingCall()
	c.a.b.GatewayAcquired("gw", c.store.list())
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE at the PBX", func() bool { return len(c.sipRequests("BYE")) == 1 })
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
	byes := c.sipRequests("BYE")
	if len(byes) != 1 || byes[0].GetHeader("Reason") != nil || byes[0].CSeq().SeqNo != stored.Dialog.LocalCSeq+1 {
		t.Errorf("BYEs %d, first %v", len(byes), byes[0])
	}
	if n := len(c.sipRequests("INVITE")); n != 1 {
		t.Errorf("%d INVITEs: the call was refreshed or placed again", n)
	}
}

// TestInteropTakeoverThroughKamailio: a far end calls line 1001 through
// Kamailio, which stays in the path (Record-Route); the call is answered
// on A; after A's death B restores the dialog with its route set, and
// B's target refresh and the far end's BYE afterwards both pass through
// Kamailio.
func TestInteropTakeoverThroughKamailio(t *testing.T) {
	kam := testutil.StartKamailio(t, "MD5", 3600)
	c := newCluster2Peer(t, kam.Addr, "pw-{n+1000}")
	e := c.env
	e.waitFor("both lines registered at Kamailio", func() bool {
		n, err := kam.Stat("usrloc:location_contacts")
		return err == nil && n == 2
	})
	var cap sipCapture
	caller, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}}, sip.WithPacketConnWrapper(cap.wrap))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = caller.Serve(ctx) }()
	t.Cleanup(func() { cancel(); _ = caller.Close() })
	<-caller.Ready()
	d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "5551234"}, To: "1001", Peer: kam.Addr,
		SDP: []byte(siptest.DefaultAnswerSDP)})
	if err != nil {
		t.Fatal(err)
	}
	e.waitSignal("aaln/1", "L/rg")
	e.offHook("aaln/1")
	waitDialogEvent(t, d, sip.EventAnswered)
	stored := c.waitStored(1)[0]
	kamIP, _ := hostPort(t, kam.Addr)
	if len(stored.Dialog.RouteSet) != 1 || !strings.Contains(stored.Dialog.RouteSet[0], "sip:"+kamIP) {
		t.Fatalf("stored route set %q, want Kamailio's", stored.Dialog.RouteSet)
	}
	conn := *e.conn("aaln/1")
	c.takeOver(nil)
	up := cap.request(t, "UPDATE")
	// Relayed by Kamailio: its Via on top, B's under it.
	vias := up.GetHeaders("Via")
	if contactPort(up) != c.b.sipPort() || len(vias) != 2 || !strings.Contains(vias[0].Value(), kamIP) ||
		!strings.Contains(vias[1].Value(), ":"+strconv.Itoa(c.b.sipPort())) {
		t.Fatalf("UPDATE Contact %v Via %v; want B's port %d, through Kamailio", up.Contact(), vias, c.b.sipPort())
	}
	e.waitFor("gateway's events to B", func() bool { return e.state("aaln/1").NotifiedEntity == c.b.ne() })
	if now := e.conn("aaln/1"); now.ID != conn.ID || now.Mode != mgcp.ModeSendRecv {
		t.Fatalf("connection after the takeover %s %s", now.ID, now.Mode)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatalf("far end's BYE through Kamailio: %v", err)
	}
	e.noConnections("aaln/1")
	e.waitSignal("aaln/1", "L/ro")
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasEvent(st, "L/hd") })
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}

// TestTakeoverEndsCallOfEndpointWithoutLine: the new owner's configuration
// lacks the line of a stored call. The call cannot be kept, but the far
// end and the gateway still have it: the far end gets a BYE with Q.850
// cause 41 on the restored dialog, the gateway a DLCX of the connection,
// and the state leaves the store (issue 16: it was only deleted).
func TestTakeoverEndsCallOfEndpointWithoutLine(t *testing.T) {
	c := newCluster2(t)
	e := c.env
	conn, _ := c.outgoingCall()
	gwHost, gp := hostPort(t, c.gw.Addr())
	pbxHost, pbxPort := hostPort(t, c.pbx.Addr())
	yes := true
	only2, err := mapping.New(mapping.Config{
		Peers:     []mapping.Peer{{Name: "pbx", Host: pbxHost, Port: pbxPort, Register: &yes}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gp, Codecs: []string{"PCMU", "PCMA"}}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(1xxx|[2-9]xxx|0T)", Default: true}},
		Lines:     []mapping.Line{{Gateway: "gw", Endpoint: "aaln/2", User: "1002", Password: "pw"}},
		Routes:    mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: ""}, Peer: "pbx"}}},
	}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep := c.b.b.Update(only2); len(rep.Removed) != 1 {
		t.Fatalf("B's reload: %+v", rep)
	}
	c.takeOver(nil)
	e.waitFor("BYE with a reason at the PBX", func() bool {
		byes := c.sipRequests("BYE")
		return len(byes) == 1 && byes[0].GetHeader("Reason") != nil && strings.Contains(byes[0].GetHeader("Reason").Value(), "Q.850;cause=41")
	})
	e.noConnections("aaln/1")
	deleted := false
	for _, cmd := range e.gw.Commands() {
		deleted = deleted || (cmd.Verb == mgcp.VerbDLCX && cmd.ConnectionID == conn.ID && cmd.CallID == conn.CallID)
	}
	if !deleted {
		t.Error("the stored call's connection was not deleted")
	}
	e.waitFor("store emptied", func() bool { return len(c.store.list()) == 0 })
}
