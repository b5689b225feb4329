package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/sirupsen/logrus"
)

// TestClusterCallSurvivesPartition: two daemons on a real etcd, one
// gateway. The PBX calls the line, answered on a (the owner); a is cut
// off from etcd, fences itself and forgets the call without a BYE or a
// DLCX; b takes the gateway with the call a stored: the connection stays,
// the gateway's events go to b, the PBX gets b's target refresh, and the
// PBX's hang-up reaches b, which deletes the connection.
func TestClusterCallSurvivesPartition(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	px := testutil.StartProxy(t, etcd.Endpoint)
	pa, pb := freeUDPPort(t), freeUDPPort(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &sourceConn{PacketConn: conn}
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"101": "pw-101"}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Lines: 1, CallAgent: fmt.Sprintf("127.0.0.1:%d", pa)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gwPort := conn.LocalAddr().(*net.UDPAddr).Port
	a := startClusterDaemon(t, px.Addr(), "a", pa, gwPort, reg.Addr())
	waitUntil(t, 10*time.Second, "a registers the line", func() bool {
		b, ok := reg.Binding("101")
		return ok && strings.Contains(b.Contact, a.sip)
	})
	b := startClusterDaemon(t, etcd.Endpoint, "b", pb, gwPort, reg.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calls := make(chan *siptest.OutCall, 1)
	go func() {
		oc, err := reg.Call(ctx, "101", "5550100", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		calls <- oc
	}()
	waitUntil(t, 10*time.Second, "the phone rings", func() bool {
		st, _ := gw.State("aaln/1")
		for _, s := range st.Signals {
			if s.Is("L", "rg") {
				return true
			}
		}
		return false
	})
	if _, err := gw.OffHook(ctx, "aaln/1"); err != nil {
		t.Fatal(err)
	}
	oc := <-calls
	if oc == nil {
		t.FailNow()
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	observer, err := cluster.New(cluster.Config{Name: "observer", Endpoints: []string{etcd.Endpoint}, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	var stored cluster.CallState
	waitUntil(t, 10*time.Second, "a stores the call", func() bool {
		cs, err := observer.Calls(ctx, "gw")
		if err != nil || len(cs) != 1 || cs[0].SIP.CallID == "" {
			return false
		}
		stored = cs[0]
		return true
	})
	st, _ := gw.State("aaln/1")
	if len(st.Connections) != 1 {
		t.Fatalf("connections %+v", st.Connections)
	}
	connID := st.Connections[0].ID

	cut := time.Now()
	px.Cut()
	waitUntil(t, 15*time.Second, "b drives the gateway", func() bool {
		st, _ := gw.State("aaln/1")
		return st.NotifiedEntity == "mgsip@"+b.addr
	})
	t.Logf("b drove the gateway %v after the partition", time.Since(cut).Round(time.Millisecond))
	st, _ = gw.State("aaln/1")
	if len(st.Connections) != 1 || st.Connections[0].ID != connID || st.Connections[0].Mode != "sendrecv" {
		t.Fatalf("connections after the takeover %+v, want %s sendrecv", st.Connections, connID)
	}
	waitUntil(t, 10*time.Second, "the PBX gets b's target refresh", func() bool {
		for _, m := range reg.Received("INVITE") {
			s := string(m.Data)
			if strings.Contains(s, "Call-ID: "+stored.SIP.CallID+"\r\n") &&
				(strings.Contains(s, "\r\nContact: <sip:101@"+b.sip+">") || strings.Contains(s, "\r\nContact: <sip:"+b.sip+">")) {
				return true
			}
		}
		return false
	})
	if err := oc.HangUp(ctx); err != nil {
		t.Fatalf("the PBX's BYE: %v", err)
	}
	waitUntil(t, 10*time.Second, "b deletes the connection", func() bool {
		st, _ := gw.State("aaln/1")
		return len(st.Connections) == 0
	})
	if _, err := gw.OnHook(ctx, "aaln/1"); err != nil && !strings.Contains(err.Error(), "quarantined") {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the call leaves the store", func() bool {
		cs, err := observer.Calls(ctx, "gw")
		return err == nil && len(cs) == 0
	})
	for _, c := range rec.commands(a.addr) {
		if strings.HasPrefix(c.line, "DLCX") && c.at.After(cut) {
			t.Errorf("a deleted a connection after the partition: %s", c.line)
		}
	}
	if n := len(reg.Received("BYE")); n != 0 {
		t.Errorf("the PBX received %d BYEs (a must send none)", n)
	}
	waitUntil(t, 10*time.Second, "the gateway idle", func() bool { return gw.CheckIdle() == nil })
	px.Heal()
}

// TestClusterGracefulStopHandsCallsOver: SIGTERM on the owner with a call
// up. The owner does not drain for drain_timeout nor hang up: it stores the
// call, forgets it without a BYE or a DLCX and revokes its lease; b takes
// the gateway at once and keeps the call (connection kept, target
// refresh), and the PBX's hang-up afterwards reaches b.
func TestClusterGracefulStopHandsCallsOver(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	pa, pb := freeUDPPort(t), freeUDPPort(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &sourceConn{PacketConn: conn}
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"101": "pw-101"}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Lines: 1, CallAgent: fmt.Sprintf("127.0.0.1:%d", pa)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gwPort := conn.LocalAddr().(*net.UDPAddr).Port
	a := startClusterDaemon(t, etcd.Endpoint, "a", pa, gwPort, reg.Addr())
	waitUntil(t, 10*time.Second, "a registers the line", func() bool {
		b, ok := reg.Binding("101")
		return ok && strings.Contains(b.Contact, a.sip)
	})
	b := startClusterDaemon(t, etcd.Endpoint, "b", pb, gwPort, reg.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calls := make(chan *siptest.OutCall, 1)
	go func() {
		oc, err := reg.Call(ctx, "101", "5550100", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		calls <- oc
	}()
	waitUntil(t, 10*time.Second, "the phone rings", func() bool {
		st, _ := gw.State("aaln/1")
		for _, s := range st.Signals {
			if s.Is("L", "rg") {
				return true
			}
		}
		return false
	})
	if _, err := gw.OffHook(ctx, "aaln/1"); err != nil {
		t.Fatal(err)
	}
	oc := <-calls
	if oc == nil {
		t.FailNow()
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	observer, err := cluster.New(cluster.Config{Name: "observer", Endpoints: []string{etcd.Endpoint}, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	var stored cluster.CallState
	waitUntil(t, 10*time.Second, "a stores the call", func() bool {
		cs, err := observer.Calls(ctx, "gw")
		if err != nil || len(cs) != 1 || cs[0].SIP.CallID == "" {
			return false
		}
		stored = cs[0]
		return true
	})
	st, _ := gw.State("aaln/1")
	if len(st.Connections) != 1 {
		t.Fatalf("connections %+v", st.Connections)
	}
	connID := st.Connections[0].ID

	cut := time.Now()
	a.sig <- syscall.SIGTERM
	// The call is handed over, not waited for (drain_timeout is 30 s).
	select {
	case err := <-a.done:
		a.cancel()
		a.cancel = nil
		if err != nil {
			t.Fatalf("a's graceful stop: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a did not stop: it waited for the call instead of handing it over")
	}
	if !strings.Contains(a.log.String(), "handed_over=1") {
		t.Errorf("a's log does not say it handed the call over:\n%s", a.log.String())
	}
	waitUntil(t, 15*time.Second, "b drives the gateway", func() bool {
		st, _ := gw.State("aaln/1")
		return st.NotifiedEntity == "mgsip@"+b.addr
	})
	t.Logf("b drove the gateway %v after a's SIGTERM", time.Since(cut).Round(time.Millisecond))
	st, _ = gw.State("aaln/1")
	if len(st.Connections) != 1 || st.Connections[0].ID != connID || st.Connections[0].Mode != "sendrecv" {
		t.Fatalf("connections after the takeover %+v, want %s sendrecv", st.Connections, connID)
	}
	waitUntil(t, 10*time.Second, "the PBX gets b's target refresh", func() bool {
		for _, m := range reg.Received("INVITE") {
			s := string(m.Data)
			if strings.Contains(s, "Call-ID: "+stored.SIP.CallID+"\r\n") &&
				(strings.Contains(s, "\r\nContact: <sip:101@"+b.sip+">") || strings.Contains(s, "\r\nContact: <sip:"+b.sip+">")) {
				return true
			}
		}
		return false
	})
	if err := oc.HangUp(ctx); err != nil {
		t.Fatalf("the PBX's BYE: %v", err)
	}
	waitUntil(t, 10*time.Second, "b deletes the connection", func() bool {
		st, _ := gw.State("aaln/1")
		return len(st.Connections) == 0
	})
	if _, err := gw.OnHook(ctx, "aaln/1"); err != nil && !strings.Contains(err.Error(), "quarantined") {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the call leaves the store", func() bool {
		cs, err := observer.Calls(ctx, "gw")
		return err == nil && len(cs) == 0
	})
	for _, c := range rec.commands(a.addr) {
		if strings.HasPrefix(c.line, "DLCX") && c.at.After(cut) {
			t.Errorf("a deleted a connection after its SIGTERM: %s", c.line)
		}
	}
	if n := len(reg.Received("BYE")); n != 0 {
		t.Errorf("the PBX received %d BYEs (a must send none)", n)
	}
	waitUntil(t, 10*time.Second, "the gateway idle", func() bool { return gw.CheckIdle() == nil })
}

// TestClusterCallSurvivesEtcdOutage: etcd stops answering for longer than
// the owner's fencing margin while a call is up. The owner fences itself
// and forgets the call (no BYE, no DLCX), and when etcd answers again it
// takes its gateway and its own stored call back: the connection stays,
// the PBX gets a target refresh, and the call ends normally afterwards.
func TestClusterCallSurvivesEtcdOutage(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	pa := freeUDPPort(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &sourceConn{PacketConn: conn}
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"101": "pw-101"}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Lines: 1, CallAgent: fmt.Sprintf("127.0.0.1:%d", pa)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	a := startClusterDaemon(t, etcd.Endpoint, "a", pa, conn.LocalAddr().(*net.UDPAddr).Port, reg.Addr())
	waitUntil(t, 10*time.Second, "a registers the line", func() bool {
		b, ok := reg.Binding("101")
		return ok && strings.Contains(b.Contact, a.sip)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	calls := make(chan *siptest.OutCall, 1)
	go func() {
		oc, err := reg.Call(ctx, "101", "5550100", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		calls <- oc
	}()
	waitUntil(t, 10*time.Second, "the phone rings", func() bool {
		st, _ := gw.State("aaln/1")
		for _, s := range st.Signals {
			if s.Is("L", "rg") {
				return true
			}
		}
		return false
	})
	if _, err := gw.OffHook(ctx, "aaln/1"); err != nil {
		t.Fatal(err)
	}
	oc := <-calls
	if oc == nil {
		t.FailNow()
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	observer, err := cluster.New(cluster.Config{Name: "observer", Endpoints: []string{etcd.Endpoint}, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	var stored cluster.CallState
	waitUntil(t, 10*time.Second, "a stores the call", func() bool {
		cs, err := observer.Calls(ctx, "gw")
		if err != nil || len(cs) != 1 || cs[0].SIP.CallID == "" {
			return false
		}
		stored = cs[0]
		return true
	})
	st, _ := gw.State("aaln/1")
	connID := st.Connections[0].ID
	invites := len(reg.Received("INVITE"))

	etcd.Pause()
	waitUntil(t, 10*time.Second, "a fences itself", func() bool { return strings.Contains(a.log.String(), "reason=fenced") })
	etcd.Resume()
	waitUntil(t, 20*time.Second, "the PBX gets a's target refresh", func() bool {
		for _, m := range reg.Received("INVITE")[invites:] {
			if strings.Contains(string(m.Data), "Call-ID: "+stored.SIP.CallID+"\r\n") {
				return true
			}
		}
		return false
	})
	st, _ = gw.State("aaln/1")
	if len(st.Connections) != 1 || st.Connections[0].ID != connID || st.Connections[0].Mode != "sendrecv" {
		t.Fatalf("connections after the outage %+v, want %s sendrecv", st.Connections, connID)
	}
	if n := len(reg.Received("BYE")); n != 0 {
		t.Fatalf("the call was hung up (%d BYEs)", n)
	}
	if err := oc.HangUp(ctx); err != nil {
		t.Fatalf("the PBX's BYE: %v", err)
	}
	waitUntil(t, 10*time.Second, "a deletes the connection", func() bool {
		st, _ := gw.State("aaln/1")
		return len(st.Connections) == 0
	})
	if _, err := gw.OnHook(ctx, "aaln/1"); err != nil && !strings.Contains(err.Error(), "quarantined") {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the gateway idle", func() bool { return gw.CheckIdle() == nil })
	for _, ln := range strings.Split(a.log.String(), "\n") {
		if strings.Contains(ln, "ownership changed") || strings.Contains(ln, "stored calls") {
			t.Log(ln)
		}
	}
}

// TestClusterTakeoverSurvivesUnadoptableRecords: the owner of a gateway
// with no call stops; under the gateway's calls lie records no takeover
// can use (another gateway's call copied under this one, a minimal
// record, garbage), written without a lease. The new owner must still
// audit, arm and register the line, and delete the bad records (issue 16:
// with zero calls adopted it used to stop after "gateway acquired").
func TestClusterTakeoverSurvivesUnadoptableRecords(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	pa, pb := freeUDPPort(t), freeUDPPort(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &sourceConn{PacketConn: conn}
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"101": "pw-101"}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Lines: 1, CallAgent: fmt.Sprintf("127.0.0.1:%d", pa)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gwPort := conn.LocalAddr().(*net.UDPAddr).Port
	a := startClusterDaemon(t, etcd.Endpoint, "a", pa, gwPort, reg.Addr())
	waitUntil(t, 10*time.Second, "a registers the line", func() bool {
		b, ok := reg.Binding("101")
		return ok && strings.Contains(b.Contact, a.sip)
	})
	b := startClusterDaemon(t, etcd.Endpoint, "b", pb, gwPort, reg.Addr())
	bad := map[string]string{
		"/mgsip/calls/gw/aaln%2F1/BOGUS4": `{"gateway":"gw2","endpoint":"aaln/2","mgcp":{"call_id":"BOGUS4"},"sip":{"call_id":"x"}}`,
		"/mgsip/calls/gw/aaln%2F1/MIN":    `{"gateway":"gw"}`,
		"/mgsip/calls/gw/aaln%2F1/JUNK":   `not json`,
	}
	for k, v := range bad {
		etcd.Ctl("put", k, v)
	}
	a.stop(t)
	waitUntil(t, 10*time.Second, "b arms the line", func() bool {
		for _, c := range rec.commands(b.addr) {
			if strings.HasPrefix(c.line, "RQNT") {
				st, _ := gw.State("aaln/1")
				return st.NotifiedEntity == "mgsip@"+b.addr
			}
		}
		return false
	})
	waitUntil(t, 10*time.Second, "b registers the line", func() bool {
		r, ok := reg.Binding("101")
		return ok && strings.Contains(r.Contact, b.sip) && time.Until(r.Expires) > 0
	})
	if left := etcd.Ctl("get", "--prefix", "--keys-only", "/mgsip/calls/"); strings.TrimSpace(left) != "" {
		t.Fatalf("bad records left in etcd:\n%s", left)
	}
	if !strings.Contains(b.log.String(), "BOGUS4") {
		t.Errorf("b's log does not name the bad record:\n%s", b.log.String())
	}
}
