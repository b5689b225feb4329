package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/sirupsen/logrus"
)

// sourceConn records where each datagram the fake gateway receives came
// from, and what it was.
type sourceConn struct {
	net.PacketConn
	mu   sync.Mutex
	seen []received
}

type received struct {
	from string
	line string
	at   time.Time
}

func (c *sourceConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		line, _, _ := strings.Cut(string(p[:n]), "\n")
		c.mu.Lock()
		c.seen = append(c.seen, received{from: addr.String(), line: strings.TrimSpace(line), at: time.Now()})
		c.mu.Unlock()
	}
	return n, addr, err
}

// commands returns the commands (not responses) received from addr.
func (c *sourceConn) commands(from string) []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []received
	for _, r := range c.seen {
		if r.from == from && len(r.line) > 4 && r.line[0] >= 'A' && r.line[0] <= 'Z' {
			out = append(out, r)
		}
	}
	return out
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

type clusterDaemon struct {
	addr   string
	sip    string
	cancel context.CancelFunc
	done   chan error
	log    *testutil.Buffer
	sig    chan os.Signal // the daemon's stop signals (SIGTERM)
}

func startClusterDaemon(t *testing.T, etcd, node string, port, gwPort int, registrar string) *clusterDaemon {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sipAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	regHost, regPort, _ := net.SplitHostPort(registrar)
	conf := fmt.Sprintf(`mgcp:
  listen: %s
sip:
  listeners:
    - listen: %s
admin:
  listen: 127.0.0.1:0
cluster:
  endpoints: [%s]
  node: %s
  mgcp_address: %s
  lease_ttl: 2s
  preference:
    gw: [a, b]
peers:
  - name: pbx
    host: %s
    port: %s
    register_expiry: 60s
gateways:
  - name: gw
    domain: gw.test
    address: 127.0.0.1
    port: %d
lines:
  - gateway: gw
    endpoint: aaln/1
    user: "101"
    password: pw-101
`, addr, sipAddr, etcd, node, addr, regHost, regPort, gwPort)
	path := filepath.Join(t.TempDir(), "mgsip.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(path, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	d := &clusterDaemon{addr: addr, sip: sipAddr, done: make(chan error, 1), log: &testutil.Buffer{}, sig: make(chan os.Signal, 1)}
	log := logrus.New()
	log.SetOutput(d.log)
	log.SetLevel(logrus.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	ready := make(chan net.Addr, 1)
	go func() {
		d.done <- Run(ctx, Options{ConfigPath: path, Config: cfg, Log: log, Ready: ready, Stop: d.sig})
	}()
	select {
	case <-ready:
	case err := <-d.done:
		t.Fatalf("daemon %s ended: %v\n%s", node, err, d.log.String())
	}
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon %s log:\n%s", node, d.log.String())
		}
	})
	return d
}

func (d *clusterDaemon) stop(t *testing.T) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if err := <-d.done; err != nil {
		t.Errorf("daemon: %v", err)
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, limit)
}

// TestClusterOwnerDrivesGatewayOthersRedirect runs two daemons on one
// etcd and one gateway: only the owner commands it, the other answers the
// gateway's commands 521 naming the owner, and when the owner stops the
// other takes the gateway over with its own N:.
func TestClusterOwnerDrivesGatewayOthersRedirect(t *testing.T) {
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
	registeredAt := func(sipAddr string) bool {
		b, ok := reg.Binding("101")
		return ok && strings.Contains(b.Contact, sipAddr) && time.Until(b.Expires) > 0
	}
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Lines: 1, CallAgent: fmt.Sprintf("127.0.0.1:%d", pa)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gwPort := conn.LocalAddr().(*net.UDPAddr).Port
	a := startClusterDaemon(t, etcd.Endpoint, "a", pa, gwPort, reg.Addr())
	armedBy := func(addr string) bool {
		for _, c := range rec.commands(addr) {
			if strings.HasPrefix(c.line, "RQNT") {
				st, _ := gw.State("aaln/1")
				return st.NotifiedEntity == "mgsip@"+addr
			}
		}
		return false
	}
	waitUntil(t, 10*time.Second, "a arms the line", func() bool { return armedBy(a.addr) })

	waitUntil(t, 10*time.Second, "a registers the line", func() bool { return registeredAt(a.sip) })
	b := startClusterDaemon(t, etcd.Endpoint, "b", pb, gwPort, reg.Addr())
	// b joined: it must not command a's gateway. Let it run a TTL.
	time.Sleep(2 * time.Second)
	if got := rec.commands(b.addr); len(got) != 0 {
		t.Fatalf("b sent commands to a gateway a owns: %v", got)
	}
	fromA := 0
	for _, r := range reg.RequestsFor("101") {
		if r.Source == b.sip {
			t.Fatalf("b registered a line of a's gateway: %+v", r)
		}
		if r.Source == a.sip {
			fromA++
		}
	}
	if fromA == 0 {
		t.Fatalf("no REGISTER seen from a (%s): %+v", a.sip, reg.RequestsFor("101"))
	}
	// A command of the gateway that reaches b is redirected to a.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := gw.Agent().Do(ctx, b.addr, &mgcp.Command{Verb: mgcp.VerbNTFY, Endpoint: gw.Endpoint("aaln/1"),
		Parameters: mgcp.Parameters{RequestID: "0", ObservedEvents: []mgcp.Event{{Package: "L", Name: "hd"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != mgcp.CodeRedirected || r.NotifiedEntity != "mgsip@"+a.addr {
		t.Fatalf("b answered %d N: %q, want 521 naming a", r.Code, r.NotifiedEntity)
	}

	// a stops (gracefully: its lease is revoked); b takes the gateway.
	stopped := time.Now()
	a.stop(t)
	waitUntil(t, 4*time.Second, "b arms the line", func() bool { return armedBy(b.addr) })
	t.Logf("b armed the line %v after a stopped", time.Since(stopped))
	waitUntil(t, 10*time.Second, "b registers the line with its Contact", func() bool { return registeredAt(b.sip) })
	bFirst := rec.commands(b.addr)[0].at
	for _, c := range rec.commands(a.addr) {
		if !c.at.Before(bFirst) {
			t.Errorf("a sent %q after b started commanding the gateway", c.line)
		}
	}
	if err := gw.CheckIdle(); err != nil {
		t.Fatal(err)
	}
}

func TestCommandGateway(t *testing.T) {
	rules, err := mapping.New(mapping.Config{Gateways: []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: "127.0.0.1"}}}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, wire string
		want       bool
	}{
		{"command", "RQNT 1201 aaln/1@gw.test MGCP 1.0\r\nX: 1\r\n", true},
		{"domain case", "AUEP 1 aaln/1@GW.TEST MGCP 1.0\n", true},
		{"other gateway", "RQNT 1201 aaln/1@other.test MGCP 1.0\n", false},
		{"response", "200 1201 OK\n", false},
		{"junk", "x", false},
		{"no domain", "RQNT 1 aaln/1 MGCP 1.0\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commandGateway([]byte(tc.wire), rules) != nil; got != tc.want {
				t.Fatalf("commandGateway(%q) = %v", tc.wire, got)
			}
		})
	}
}

func TestFencedConnDropsCommandsForGatewaysNotOwned(t *testing.T) {
	rules, err := mapping.New(mapping.Config{Gateways: []mapping.Gateway{
		{Name: "mine", Domain: "mine.test", Address: "127.0.0.1"}, {Name: "theirs", Domain: "theirs.test", Address: "127.0.0.1"}}}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	holder := mapping.NewHolder(rules)
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	raw, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var dropped atomic.Uint64
	c := fencedConn{PacketConn: raw, rules: holder, owns: func(g *mapping.GatewayRule) bool { return g.Name == "mine" }, dropped: &dropped}
	defer c.Close()
	send := func(wire string) error {
		_, err := c.WriteTo([]byte(wire), peer.LocalAddr())
		return err
	}
	if err := send("RQNT 1 aaln/1@theirs.test MGCP 1.0\r\n"); !errors.Is(err, errFenced) {
		t.Fatalf("a command for another node's gateway: %v", err)
	}
	for _, wire := range []string{"RQNT 2 aaln/1@mine.test MGCP 1.0\r\n", "521 7 redirected\r\nN: mgsip@b\r\n"} {
		if err := send(wire); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	for _, want := range []string{"RQNT 2", "521 7"} {
		_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := peer.ReadFrom(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), want) {
			t.Fatalf("peer got %q, %v; want %s", buf[:n], err, want)
		}
	}
	if dropped.Load() != 1 {
		t.Fatalf("dropped %d", dropped.Load())
	}
}

func TestRedirectWithoutKnownOwnerIsTransient(t *testing.T) {
	rules, err := mapping.New(mapping.Config{Gateways: []mapping.Gateway{{Name: "gw", Domain: "gw.test", Address: "127.0.0.1"}}}, mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A node that never reached etcd owns nothing and knows no owner.
	node, err := cluster.New(cluster.Config{Name: "a", Endpoints: []string{"http://127.0.0.1:1"}, Gateways: []string{"gw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	d := &daemon{rules: mapping.NewHolder(rules), node: node}
	cmd := &mgcp.Command{Verb: mgcp.VerbNTFY, TransactionID: 9, Endpoint: mgcp.EndpointName{Local: "aaln/1", Domain: "gw.test"}}
	trusted := func(*mapping.GatewayRule) bool { return true }
	if r := d.redirect(cmd, trusted); r == nil || r.Code != mgcp.CodeTransientError || r.NotifiedEntity != "" {
		t.Fatalf("no owner known: %+v", r)
	}
	if r := d.redirect(cmd, func(*mapping.GatewayRule) bool { return false }); r != nil {
		t.Fatalf("a stranger's command was answered by the cluster: %+v", r)
	}
	other := *cmd
	other.Endpoint.Domain = "unknown.test"
	if r := d.redirect(&other, trusted); r != nil {
		t.Fatalf("a command for no configured gateway: %+v", r)
	}
	alone := &daemon{rules: mapping.NewHolder(rules)}
	if r := alone.redirect(cmd, trusted); r != nil {
		t.Fatalf("a node alone redirected: %+v", r)
	}
}

// TestClusterDuplicateNodeNameStopsDaemon: a second daemon configured
// with a live node's name does not take over its node key: it exits with
// an error naming the key (issue 16: it overwrote the first's key).
func TestClusterDuplicateNodeNameStopsDaemon(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	reg, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"101": "pw-101"}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	_, gwPort := splitHostPort(t, gw.Addr())
	startClusterDaemon(t, etcd.Endpoint, "a", freeUDPPort(t), gwPort, reg.Addr())
	before := etcd.Ctl("get", "/mgsip/nodes/a", "-w", "fields")
	dup := startClusterDaemon(t, etcd.Endpoint, "a", freeUDPPort(t), gwPort, reg.Addr())
	select {
	case err := <-dup.done:
		dup.cancel()
		dup.cancel = nil
		if err == nil || !strings.Contains(err.Error(), "/mgsip/nodes/a") {
			t.Fatalf("the duplicate ended with %v, want an error naming the node key", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the duplicate daemon kept running")
	}
	leaseOf := func(fields string) string {
		for _, l := range strings.Split(fields, "\n") {
			if strings.HasPrefix(l, `"Lease"`) {
				return l
			}
		}
		return ""
	}
	if after := etcd.Ctl("get", "/mgsip/nodes/a", "-w", "fields"); leaseOf(after) != leaseOf(before) || leaseOf(after) == "" {
		t.Fatalf("the node key changed lease: before\n%s\nafter\n%s", before, after)
	}
	if !strings.Contains(dup.log.String(), "waiting for it to expire") {
		t.Errorf("the duplicate did not say it waited:\n%s", dup.log.String())
	}
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscanf(p, "%d", &n); err != nil {
		t.Fatal(err)
	}
	return h, n
}
