package clustertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// The binary under test, built once per test process.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// mgsipBinary builds ./cmd/mgsip (once) and returns its path.
func mgsipBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mgsip-clustertest")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "mgsip")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/mgsip")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/mgsip: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 20 ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- the gateways ----

// wire is one MGCP datagram a gateway received.
type wire struct {
	at       time.Time
	from     string // source host:port (a node's MGCP socket)
	command  bool   // a command (else a response)
	verb     string
	endpoint string // local name
	line     string // the first line
}

// recConn records every datagram the gateway's socket reads.
type recConn struct {
	net.PacketConn
	mu   sync.Mutex
	seen []wire
}

func (c *recConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		first, _, _ := strings.Cut(string(p[:n]), "\n")
		first = strings.TrimSpace(first)
		w := wire{at: time.Now(), from: addr.String(), line: first}
		f := strings.Fields(first)
		if len(f) >= 3 && len(f[0]) == 4 && f[0][0] >= 'A' && f[0][0] <= 'Z' {
			w.command, w.verb = true, f[0]
			w.endpoint, _, _ = strings.Cut(f[2], "@")
		}
		c.mu.Lock()
		c.seen = append(c.seen, w)
		c.mu.Unlock()
	}
	return n, addr, err
}

// commands returns the commands received, in order, optionally only those
// from one address (from == "": all).
func (c *recConn) commands(from string) []wire { return c.commandsSince(from, time.Time{}) }

// commandsSince is commands received after t.
func (c *recConn) commandsSince(from string, t time.Time) []wire {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []wire
	for _, w := range c.seen {
		if w.command && (from == "" || w.from == from) && w.at.After(t) {
			out = append(out, w)
		}
	}
	return out
}

// signals routes what the call agent asks of each endpoint to whoever
// waits for it (dial tone, ringing, the caller's connection answered).
type signals struct {
	mu sync.Mutex
	ch map[string]chan struct{} // "dl|aaln/1", "rg|aaln/1", "answered|aaln/1", "dlcx|aaln/1"
}

func (s *signals) get(kind, ep string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := kind + "|" + strings.ToLower(ep)
	ch, ok := s.ch[k]
	if !ok {
		ch = make(chan struct{}, 1)
		s.ch[k] = ch
	}
	return ch
}

func (s *signals) fire(kind, ep string) {
	select {
	case s.get(kind, ep) <- struct{}{}:
	default:
	}
}

func (s *signals) drain(kind, ep string) {
	select {
	case <-s.get(kind, ep):
	default:
	}
}

func (s *signals) watch(cmd *mgcp.Command) *mgcp.Response {
	ep := cmd.Endpoint.Local
	for _, sg := range cmd.Signals {
		switch {
		case sg.Is("L", "dl"):
			s.fire("dl", ep)
		case sg.Is("L", "rg"):
			s.fire("rg", ep)
		}
	}
	switch {
	case cmd.Verb == mgcp.VerbMDCX && cmd.Mode == mgcp.ModeSendRecv:
		s.fire("answered", ep)
	case cmd.Verb == mgcp.VerbDLCX:
		s.fire("dlcx", ep)
	}
	return nil // the gateway's own behaviour answers
}

// Gateway is one simulated gateway (mgcptest's strict fake over real UDP,
// with RTP) and the record of what reached it.
type Gateway struct {
	*mgcptest.Gateway
	Name      string
	Domain    string
	Lines     int
	FirstUser int // SIP user of aaln/1; aaln/N is FirstUser+N-1
	rec       *recConn
	sig       *signals
}

// User is the SIP user (and number) of line n.
func (g *Gateway) User(n int) string { return strconv.Itoa(g.FirstUser + n - 1) }

// newGateway starts a simulated gateway on a free loopback port whose
// configured call agent is callAgent (where its RSIPs would go; commands
// from the nodes set N:, and NTFYs follow it).
func newGateway(t testing.TB, name string, lines, firstUser int, callAgent string, rtp bool) *Gateway {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recConn{PacketConn: conn}
	sig := &signals{ch: map[string]chan struct{}{}}
	domain := name + ".test"
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: rec, Domain: domain, Lines: lines, CallAgent: callAgent,
		Respond: sig.watch, RTP: rtp, NoRecord: true, DisconnectedInitial: -1, DigitTimeout: 2 * time.Second,
		MGCP: mgcp.Config{MaxCachedPerPeer: 1 << 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return &Gateway{Gateway: gw, Name: name, Domain: domain, Lines: lines, FirstUser: firstUser, rec: rec, sig: sig}
}

func (g *Gateway) port() int { return g.rec.LocalAddr().(*net.UDPAddr).Port }

// armedBy says whether line n is armed for off-hook with N: naming the
// node whose MGCP address is addr.
func (g *Gateway) armedBy(n int, addr string) bool {
	st, ok := g.State("aaln/" + strconv.Itoa(n))
	return ok && !st.OffHook && st.NotifiedEntity == "mgsip@"+addr &&
		slices.ContainsFunc(st.RequestedEvents, func(r mgcp.RequestedEvent) bool { return r.Event.Is("L", "hd") })
}

// ---- the nodes ----

// Node is one `mgsip run` process.
type Node struct {
	Name  string
	MGCP  string // host:port of its MGCP socket (and its N:)
	SIP   string // host:port of its SIP listener (its Contact)
	Admin string // host:port of its admin API (/metrics)
	Etcd  string // the etcd URL it uses (etcd, or a proxy in front of it)

	cfgPath string
	c       *Cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *testutil.Buffer
	runs int
}

// Cluster is etcd, Kamailio, the gateways and the nodes of one test.
type Cluster struct {
	t        testing.TB
	Etcd     *testutil.Etcd
	Kam      *testutil.Kamailio
	TTL      time.Duration
	LogLevel string
	Gateways []*Gateway
	Nodes    []*Node
	// Preference per gateway name (best first); others by rendezvous.
	Preference map[string][]string
	byAddr     map[string]*Node
}

// newCluster starts etcd and Kamailio.
func newCluster(t testing.TB, ttl time.Duration) *Cluster {
	t.Helper()
	mgsipBinary(t)
	c := &Cluster{t: t, Etcd: testutil.StartEtcd(t), Kam: testutil.StartKamailio(t, "MD5", 120), TTL: ttl,
		LogLevel: "info", Preference: map[string][]string{}, byAddr: map[string]*Node{}}
	return c
}

// addGateway adds a simulated gateway of lines lines; the gateway's
// configured call agent is the first node's address (nodes must be added
// first).
func (c *Cluster) addGateway(name string, lines, firstUser int, rtp bool) *Gateway {
	c.t.Helper()
	ca := "127.0.0.1:2427"
	if len(c.Nodes) > 0 {
		ca = c.Nodes[0].MGCP
	}
	g := newGateway(c.t, name, lines, firstUser, ca, rtp)
	c.Gateways = append(c.Gateways, g)
	c.t.Cleanup(func() {
		if !c.t.Failed() || len(c.Gateways) > 10 {
			return // the soak's hundreds of gateways: too much to read
		}
		cmds := g.rec.commands("")
		var b strings.Builder
		for _, w := range cmds[max(0, len(cmds)-80):] {
			who := w.from
			if n := c.node(w.from); n != nil {
				who = n.Name
			}
			fmt.Fprintf(&b, "  %s %s %s\n", w.at.Format("15:04:05.000"), who, w.line)
		}
		c.t.Logf("gateway %s: last %d of %d commands received:\n%s", g.Name, min(80, len(cmds)), len(cmds), b.String())
	})
	return g
}

// addNode reserves a node's addresses (started by start).
func (c *Cluster) addNode(name string) *Node {
	c.t.Helper()
	n := &Node{Name: name, c: c, Etcd: c.Etcd.Endpoint,
		MGCP:  fmt.Sprintf("127.0.0.1:%d", freeUDPPort(c.t)),
		SIP:   fmt.Sprintf("127.0.0.1:%d", freeUDPPort(c.t)),
		Admin: fmt.Sprintf("127.0.0.1:%d", freeTCPPort(c.t)),
		logs:  &testutil.Buffer{}}
	c.Nodes = append(c.Nodes, n)
	c.byAddr[n.MGCP] = n
	c.t.Cleanup(func() {
		n.stop()
		if c.t.Failed() {
			c.t.Logf("node %s log (last 60 kB):\n%s", n.Name, tail(n.logs.String(), 60000))
		}
	})
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// node returns the node whose MGCP socket is addr (nil: none).
func (c *Cluster) node(addr string) *Node { return c.byAddr[addr] }

// config writes the one configuration every node shares, plus this
// node's own listeners and cluster section.
func (n *Node) config() string {
	c := n.c
	kamHost, kamPort, _ := net.SplitHostPort(c.Kam.Addr)
	var b strings.Builder
	fmt.Fprintf(&b, `log:
  level: %s
mgcp:
  listen: %s
sip:
  listeners:
    - transport: udp
      listen: %s
  register_rate: 2000
admin:
  listen: %s
cluster:
  endpoints: [%s]
  node: %s
  mgcp_address: %s
  sip_address: %s
  lease_ttl: %s
`, c.LogLevel, n.MGCP, n.SIP, n.Admin, n.Etcd, n.Name, n.MGCP, n.SIP, c.TTL)
	if len(c.Preference) > 0 {
		b.WriteString("  preference:\n")
		for gw, nodes := range c.Preference {
			fmt.Fprintf(&b, "    %s: [%s]\n", gw, strings.Join(nodes, ", "))
		}
	}
	fmt.Fprintf(&b, `peers:
  - name: kam
    host: %s
    port: %s
    auth: digest
    register_expiry: 120s
dial_plans:
  - name: p
    digit_map: "(xxxxx)"
    default: true
routes:
  outbound:
    - name: kam
      match: { prefix: "" }
      peer: kam
gateways:
`, kamHost, kamPort)
	for _, g := range c.Gateways {
		fmt.Fprintf(&b, "  - name: %s\n    domain: %s\n    address: 127.0.0.1\n    port: %d\n    codecs: [PCMU]\n", g.Name, g.Domain, g.port())
	}
	b.WriteString("lines:\n")
	for _, g := range c.Gateways {
		fmt.Fprintf(&b, "  - gateway: %s\n    endpoint: aaln/{1..%d}\n    user: \"{n+%d}\"\n    password: \"pw-{n+%d}\"\n",
			g.Name, g.Lines, g.FirstUser-1, g.FirstUser-1)
	}
	return b.String()
}

// start runs the node's process and waits until its admin API answers.
func (n *Node) start() {
	t := n.c.t
	t.Helper()
	if n.cfgPath == "" {
		n.cfgPath = filepath.Join(t.TempDir(), n.Name+".yaml")
	}
	if err := os.WriteFile(n.cfgPath, []byte(n.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mgsipBinary(t), "run", "--config", n.cfgPath)
	n.mu.Lock()
	n.runs++
	fmt.Fprintf(n.logs, "==== run %d ====\n", n.runs)
	n.mu.Unlock()
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	// Should the test process die without its cleanups, the node goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	if !waitFor(20*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		resp, err := hc.Get("http://" + n.Admin + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("node %s: admin API not up within 20 s\n%s", n.Name, tail(n.logs.String(), 20000))
	}
	select {
	case <-done:
		t.Fatalf("node %s exited at start:\n%s", n.Name, tail(n.logs.String(), 20000))
	default:
	}
}

// kill sends SIGKILL to the node's PID and waits for it to exit.
func (n *Node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop ends the node gracefully (SIGTERM; SIGKILL after 15 s).
func (n *Node) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// metrics reads the node's /metrics and returns the samples whose name
// starts with prefix (name{labels} -> value).
func (n *Node) metrics(prefix string) (map[string]float64, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + n.Admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("/metrics: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// ---- registrations ----

// registeredFrom lists the users of g's lines that have no live binding
// at Kamailio whose Contact is node's SIP address (nil: all have one).
func (c *Cluster) notRegisteredFrom(g *Gateway, node *Node) ([]string, error) {
	cs, err := c.Kam.Contacts()
	if err != nil {
		return nil, err
	}
	ok := map[string]bool{}
	for _, ct := range cs {
		if strings.Contains(ct.Address, "@"+node.SIP) && ct.Expires > 0 {
			ok[ct.AoR] = true
		}
	}
	var missing []string
	for i := 1; i <= g.Lines; i++ {
		if !ok[g.User(i)] {
			missing = append(missing, g.User(i))
		}
	}
	return missing, nil
}

// ---- calls ----

// notifiedOK: the phone's action was answered 2xx, or needed no NTFY.
func notifiedOK(r *mgcp.Response, err error) bool {
	if errors.Is(err, mgcptest.ErrNotNotified) {
		return true
	}
	return err == nil && r.Code.IsSuccess()
}

// Call is a call between two lines of simulated gateways, through mgsip
// and Kamailio.
type Call struct {
	From     *Gateway
	FromLine string
	To       *Gateway
	ToLine   string
}

// place dials from line `from` of gateway a the number of line `to` of
// gateway b, answers, and returns once both ends are connected
// (the caller's connection went send-receive).
func place(ctx context.Context, a *Gateway, from int, b *Gateway, to int) (*Call, error) {
	caller, callee := "aaln/"+strconv.Itoa(from), "aaln/"+strconv.Itoa(to)
	a.sig.drain("dl", caller)
	a.sig.drain("answered", caller)
	b.sig.drain("rg", callee)
	c := &Call{From: a, FromLine: caller, To: b, ToLine: callee}
	fail := func(format string, args ...any) (*Call, error) {
		_, _ = a.OnHook(context.Background(), caller)
		if st, _ := b.State(callee); st.OffHook {
			_, _ = b.OnHook(context.Background(), callee)
		}
		return nil, fmt.Errorf("%s@%s -> %s@%s: %s", caller, a.Name, callee, b.Name, fmt.Sprintf(format, args...))
	}
	if r, err := a.OffHook(ctx, caller); !notifiedOK(r, err) {
		return fail("off-hook: %v %v", r, err)
	}
	if st, _ := a.State(caller); !slices.ContainsFunc(st.Signals, func(e mgcp.Event) bool { return e.Is("L", "dl") }) {
		select {
		case <-a.sig.get("dl", caller):
		case <-ctx.Done():
			return fail("no dial tone")
		}
	}
	if r, err := a.Collect(ctx, caller, b.User(to)); err != nil || !r.Code.IsSuccess() {
		return fail("digits: %v %v", r, err)
	}
	select {
	case <-b.sig.get("rg", callee):
	case <-ctx.Done():
		return fail("callee never rang")
	}
	// The watch sees the ring requested before the gateway has executed
	// the command that carries it (a CRCX): a phone picked up in between
	// is off hook when the CRCX runs, and the gateway answers it 401. A
	// person picks up once the phone rings.
	for {
		st, _ := b.State(callee)
		if slices.ContainsFunc(st.Signals, func(e mgcp.Event) bool { return e.Is("L", "rg") }) {
			break
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
			return fail("the ring requested never played")
		}
	}
	if r, err := b.OffHook(ctx, callee); !notifiedOK(r, err) {
		return fail("answer: %v %v", r, err)
	}
	select {
	case <-a.sig.get("answered", caller):
	case <-ctx.Done():
		return fail("caller not connected")
	}
	return c, nil
}

// connections returns the connection of each end (nil when gone).
func (c *Call) connections() (from, to *mgcptest.Connection) {
	if cs := c.From.Connections(c.FromLine); len(cs) > 0 {
		from = &cs[0]
	}
	if cs := c.To.Connections(c.ToLine); len(cs) > 0 {
		to = &cs[0]
	}
	return from, to
}

// rtpFlows says whether both ends' connections exist and each received
// more RTP within d.
func (c *Call) rtpFlows(d time.Duration) error {
	f0, t0 := c.connections()
	if f0 == nil || t0 == nil || f0.RTP == nil || t0.RTP == nil {
		return fmt.Errorf("a connection is gone (caller %v, callee %v)", f0 != nil, t0 != nil)
	}
	rf, rt := f0.RTP.Received(), t0.RTP.Received()
	time.Sleep(d)
	f1, t1 := c.connections()
	if f1 == nil || t1 == nil || f1.ID != f0.ID || t1.ID != t0.ID {
		return fmt.Errorf("a connection was deleted or replaced")
	}
	if f1.RTP.Received() <= rf || t1.RTP.Received() <= rt {
		return fmt.Errorf("RTP stalled: caller received %d -> %d, callee %d -> %d", rf, f1.RTP.Received(), rt, t1.RTP.Received())
	}
	return nil
}

// hangUp puts both phones on hook, the caller first.
func (c *Call) hangUp(ctx context.Context) error {
	var errs []error
	if st, _ := c.From.State(c.FromLine); st.OffHook {
		if r, err := c.From.OnHook(ctx, c.FromLine); !notifiedOK(r, err) {
			errs = append(errs, fmt.Errorf("caller on-hook: %v %v", r, err))
		}
	}
	if st, _ := c.To.State(c.ToLine); st.OffHook {
		if r, err := c.To.OnHook(ctx, c.ToLine); !notifiedOK(r, err) {
			errs = append(errs, fmt.Errorf("callee on-hook: %v %v", r, err))
		}
	}
	return errors.Join(errs...)
}

// ---- the wire ----

// takeoverAfter returns when the first command from a node other than
// old reached g after t0 (waiting up to limit), and that node.
func (c *Cluster) takeoverAfter(g *Gateway, old *Node, t0 time.Time, limit time.Duration) (time.Duration, *Node) {
	var d time.Duration
	var who *Node
	waitFor(limit, func() bool {
		for _, w := range g.rec.commands("") {
			if w.at.After(t0) && w.from != old.MGCP {
				d, who = w.at.Sub(t0), c.node(w.from)
				return true
			}
		}
		return false
	})
	return d, who
}

// interleavings checks the record of one gateway for two nodes driving
// it at once: when node X's commands are followed by node Y's and then by
// X's again, X must have been silent for at least quiet around Y's
// commands (a legitimate return, after X's lease expired or Y handed the
// gateway back, leaves X silent for at least the fencing margin; two
// nodes that both believe they own the gateway alternate within
// milliseconds). It returns a description of every violation.
func interleavings(cmds []wire, quiet time.Duration) []string {
	type stint struct {
		from        string
		first, last time.Time
	}
	var stints []stint
	for _, w := range cmds {
		if n := len(stints); n > 0 && stints[n-1].from == w.from {
			stints[n-1].last = w.at
			continue
		}
		stints = append(stints, stint{from: w.from, first: w.at, last: w.at})
	}
	var bad []string
	for i := 1; i+1 < len(stints); i++ {
		prev, cur, next := stints[i-1], stints[i], stints[i+1]
		if prev.from == next.from && next.first.Sub(prev.last) < quiet {
			bad = append(bad, fmt.Sprintf("%s until %s, %s %s..%s, %s again at %s",
				prev.from, prev.last.Format("15:04:05.000"), cur.from, cur.first.Format("15:04:05.000"),
				cur.last.Format("15:04:05.000"), next.from, next.first.Format("15:04:05.000")))
		}
	}
	return bad
}
