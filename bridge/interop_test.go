package bridge_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
)

func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// TestInteropOsmoMGWTrunk: osmo-mgw is a real media gateway serving a
// trunk group; a SIP call to the group's DID gets a real CRCX and MDCX on
// an osmo-mgw endpoint, the SDP osmo-mgw returns reaches the caller in the
// 200, and the hang-up deletes the connection (DLCX with osmo-mgw's
// statistics).
func TestInteropOsmoMGWTrunk(t *testing.T) {
	ca, setBridge := listenCA(t, mgcp.Config{})
	mgw := testutil.StartOsmoMGW(t, func(addr string) bool {
		// The call agent does not serve yet: probe with a datagram of our own.
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return false
		}
		defer c.Close()
		to, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return false
		}
		if _, err := c.WriteTo([]byte("AUEP 1 rtpbridge/1@mgw MGCP 1.0\r\n"), to); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 1500)
		n, _, err := c.ReadFrom(buf)
		return err == nil && strings.HasPrefix(string(buf[:n]), "200 1")
	})
	mgwHost, mgwPort := hostPort(t, mgw)
	cfg := mapping.Config{
		Peers:    []mapping.Peer{{Name: "pbx", Host: "127.0.0.1", Auth: "ip"}},
		Gateways: []mapping.Gateway{{Name: "mgw", Domain: "mgw", Address: mgwHost, Port: mgwPort, Quirks: "osmo-mgw", Codecs: []string{"PCMU", "PCMA"}}},
		Trunks:   []mapping.Trunk{{Name: "osmo", Gateway: "mgw", Endpoints: []string{"rtpbridge/{1..2}"}, Peer: "pbx", DIDs: []string{"5000"}}},
	}
	rules, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	records := make(chan bridge.CallRecord, 4)
	_, stack := startBridge(t, ca, setBridge, rules, bridge.Config{OnCall: func(r bridge.CallRecord) { records <- r }})

	offer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
	d := sipCaller(t, stack.LocalAddr().String())(context.Background(), "5000", []byte(offer))
	var e sip.Event
	select {
	case e = <-d.Events():
	case <-time.After(15 * time.Second):
		t.Fatal("no answer")
	}
	if e.Kind != sip.EventAnswered {
		select {
		case r := <-records:
			t.Logf("record %+v", r)
		case <-time.After(time.Second):
		}
		t.Fatalf("call to the trunk: %+v", e)
	}
	// osmo-mgw hands out RTP ports 16002-16099 (testutil's configuration).
	port := 0
	for _, ln := range strings.Split(string(e.SDP), "\r\n") {
		if f := strings.Fields(ln); len(f) > 1 && f[0] == "m=audio" {
			port, _ = strconv.Atoi(f[1])
		}
	}
	if port < 16002 || port > 16099 || !strings.Contains(string(e.SDP), "RTP/AVP 0") {
		t.Fatalf("the answer does not carry osmo-mgw's media description:\n%s", e.SDP)
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-records:
		if !r.Answered || r.Line != "osmo/rtpbridge/1" || len(r.Stats) == 0 {
			t.Errorf("record %+v", r)
		}
		t.Logf("osmo-mgw call: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("no call record")
	}
}

// TestInteropSIPpKamailioSimulator: the lines of a simulated gateway
// register at a real Kamailio (SHA-256 digest). Line 1 dials a number
// routed to SIPp acting as the PBX (its built-in UAS answers) and hangs
// up; then SIPp calls line 2's account through Kamailio, line 2 rings and
// answers, and SIPp hangs up. SIPp checks its side of both calls.
func TestInteropSIPpKamailioSimulator(t *testing.T) {
	kam := testutil.StartKamailio(t, "SHA-256", 3600)
	uas := testutil.StartSIPp(t, "-sn", "uas")
	ca, setBridge := listenCA(t, mgcp.Config{})
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: "gw.test", Lines: 2, CallAgent: ca.LocalAddr().String(), RTP: true,
		DisconnectedInitial: -1})
	if err != nil {
		t.Fatal(err)
	}
	gwHost, gwPort := hostPort(t, gw.Addr())
	kamHost, kamPort := hostPort(t, kam.Addr)
	uasHost, uasPort := hostPort(t, uas.Addr)
	yes := true
	cfg := mapping.Config{
		Peers: []mapping.Peer{{Name: "kam", Host: kamHost, Port: kamPort, Register: &yes},
			{Name: "sipp", Host: uasHost, Port: uasPort, Auth: "ip"}},
		Gateways:  []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: gwHost, Port: gwPort}},
		DialPlans: []mapping.DialPlan{{Name: "p", DigitMap: "(xxxx)", Default: true}},
		Lines: []mapping.Line{{Gateway: "gw", Endpoint: "aaln/{1..2}", User: "{n+1000}", Password: "pw-{n+1000}", Peer: "kam",
			DisplayName: "Line {n}"}},
		Routes: mapping.Routes{Outbound: []mapping.OutboundRoute{{Name: "pbx", Match: mapping.NumberMatch{Prefix: "2"}, Peer: "sipp"}}},
	}
	rules, err := mapping.New(cfg, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	records := make(chan bridge.CallRecord, 4)
	b, _ := startBridge(t, ca, setBridge, rules, bridge.Config{Register: true, ToneTimeout: time.Second,
		OnCall: func(r bridge.CallRecord) { records <- r }})
	t.Cleanup(func() { _ = gw.Close() })
	sim := simOf(t, gw)
	sim.waitFor("both lines registered at Kamailio", func() bool {
		n, err := kam.Stat("usrloc:location_contacts")
		return err == nil && n == 2
	})
	for _, id := range []string{"gw/aaln/1", "gw/aaln/2"} {
		if st, ok := b.Registrations().Status(id); !ok || st.State != sip.RegRegistered || st.Algorithm != "SHA-256" {
			t.Fatalf("%s: %+v", id, st)
		}
	}

	// Line 1 calls SIPp.
	sim.offHook("aaln/1")
	sim.waitSignal("aaln/1", "L/dl")
	sim.collect("aaln/1", "2000")
	sim.waitFor("answered by SIPp", func() bool {
		st, _ := gw.State("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv
	})
	sim.onHook("aaln/1")
	uas.Wait(t)
	if r := <-records; !r.Answered || r.Direction != "outgoing" {
		t.Errorf("record %+v", r)
	}

	// SIPp calls line 2 through Kamailio and hangs up.
	uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_hangs_up.xml", "-s", "1002", kam.Addr)
	sim.waitSignal("aaln/2", "L/rg")
	sim.offHook("aaln/2")
	uac.Wait(t)
	sim.waitSignal("aaln/2", "L/ro")
	sim.onHook("aaln/2")
	if r := <-records; !r.Answered || r.Direction != "incoming" || r.Number != "sipp" {
		t.Errorf("record %+v", r)
	}
}

// simDriver drives a fake gateway from a test.
type simDriver struct {
	t  *testing.T
	gw *mgcptest.Gateway
}

func simOf(t *testing.T, gw *mgcptest.Gateway) simDriver { return simDriver{t, gw} }

func (s simDriver) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s simDriver) waitSignal(local, sig string) {
	s.t.Helper()
	s.waitFor(sig+" on "+local, func() bool {
		st, _ := s.gw.State(local)
		return hasSignal(st, sig)
	})
}

func (s simDriver) do(f func(ctx context.Context) (*mgcp.Response, error)) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f(ctx)
	if err != nil && heldBack(err) {
		return
	}
	if err != nil || !r.Code.IsSuccess() {
		s.t.Fatalf("gateway command: %v %v", r, err)
	}
}

func (s simDriver) offHook(local string) {
	s.do(func(ctx context.Context) (*mgcp.Response, error) { return s.gw.OffHook(ctx, local) })
}

func (s simDriver) onHook(local string) {
	s.do(func(ctx context.Context) (*mgcp.Response, error) { return s.gw.OnHook(ctx, local) })
}

func (s simDriver) flash(local string) {
	s.do(func(ctx context.Context) (*mgcp.Response, error) { return s.gw.Flash(ctx, local) })
}

func (s simDriver) collect(local, digits string) {
	s.do(func(ctx context.Context) (*mgcp.Response, error) { return s.gw.Collect(ctx, local, digits) })
}
