package mgcptest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// GatewayConfig configures a fake gateway.
type GatewayConfig struct {
	// Conn is the socket to use; nil binds UDP 127.0.0.1:0.
	Conn net.PacketConn
	// Domain is the part of endpoint names after '@' (default "gw.test").
	Domain string
	// Endpoints are the local names served, default aaln/1..aaln/Lines.
	Endpoints []string
	// Lines is the number of aaln/N endpoints when Endpoints is empty
	// (default 2).
	Lines int
	// CallAgent is where NTFY, RSIP and gateway DLCX go until a command
	// sets N: (host:port).
	CallAgent string
	// MediaIP is the address put in SDP (default 127.0.0.1).
	MediaIP string
	// RTPPortBase is the first RTP port handed out (default 16000).
	RTPPortBase int
	// Codecs the gateway supports, preferred first (default PCMU, PCMA,
	// telephone-event).
	Codecs []string
	// Respond, if set, may answer a command itself (return non-nil) before
	// the built-in behaviour; use it to script errors or slowness.
	Respond func(cmd *mgcp.Command) *mgcp.Response
	// NoRecord stops the gateway keeping every command (for load runs,
	// where the record would only grow); WaitCommands then never returns.
	NoRecord bool
	// Faults, if set, is applied to every datagram the gateway sends.
	Faults func(b []byte, to net.Addr) Fault
	// MGCP is the transaction-layer config (defaults apply).
	MGCP mgcp.Config
	// DisconnectedInitial and DisconnectedMax drive the disconnected
	// procedure (RFC 3435 §4.4.7): when a command to the call agent gives
	// up, the gateway waits a random time up to DisconnectedInitial (15s),
	// then sends "RSIP RM: disconnected" for "*", doubling the wait up to
	// DisconnectedMax (600s) until one is answered. A negative
	// DisconnectedInitial turns the procedure off.
	DisconnectedInitial time.Duration
	DisconnectedMax     time.Duration
	// RTP gives every connection a real UDP socket on MediaIP: RTP is
	// sent to the remote SDP's address while the mode sends and counted
	// both ways (Connection.RTP); DLCX reports the real counts in P:.
	RTP bool
	// DigitTimeout is the short (critical) inter-digit timer: when the
	// digits collected so far match the digit map once the timer expires,
	// the gateway waits this long, then adds T and notifies
	// (RFC 3435 §2.1.5). Default 300ms, to keep tests quick; hardware
	// uses about 4s.
	DigitTimeout time.Duration
	// DigitLongTimeout is the long inter-digit timer, run while the digit
	// map needs more digits: on expiry T is added and the (mismatching)
	// digits are notified. Default 4 x DigitTimeout (hardware: about
	// 16s); negative turns it off.
	DigitLongTimeout time.Duration
	// NoCallerID makes a gateway that cannot send caller id (a quirk of
	// some hardware): L/ci is refused with 513.
	NoCallerID bool
	// NoConference makes a gateway that cannot mix connections: a CRCX
	// or MDCX with M: confrnce is refused with 517.
	NoConference bool
	// TrunkPackage is the RFC 3064 CAS package of the trunk channels
	// (endpoints named ds/...): "MS" (default) or "DT" (trunk.go).
	TrunkPackage string
}

// Connection is one connection on a fake endpoint.
type Connection struct {
	ID        string
	CallID    string
	Mode      mgcp.ConnectionMode
	LocalSDP  []byte
	RemoteSDP []byte
	RTPPort   int
	Options   *mgcp.LocalConnectionOptions
	// RTP counts the media of the connection when GatewayConfig.RTP is set.
	RTP *RTPStats

	stream *rtpStream
}

// EndpointState is the recorded state of one fake endpoint.
type EndpointState struct {
	Name mgcp.EndpointName
	// OffHook is the physical hook state of the phone.
	OffHook bool
	// RequestID, RequestedEvents and DigitMap are the current request
	// (after any embedded request took effect); RequestID is "" before
	// the first request and after a restart.
	RequestID       string
	RequestedEvents []mgcp.RequestedEvent
	// Signals are the time-out and brief signals of the current request;
	// they stop (become empty) when a requested event without K fires and
	// are replaced by the next S:. On/off signals are not listed: see MWI.
	Signals  []mgcp.Event
	DigitMap string
	// MWI is the on/off L/vmwi signal: set by L/vmwi or L/vmwi(+),
	// cleared by L/vmwi(-) or a restart.
	MWI bool
	// QuarantineHandling is the Q: of the current request.
	QuarantineHandling string
	NotifiedEntity     string
	// NotificationState is set from an NTFY until the next request
	// (RFC 3435 §4.4.1).
	NotificationState bool
	// Observed are the events observed under the current request and not
	// yet notified; Quarantined the events kept in notification state.
	Observed    []mgcp.Event
	Quarantined []mgcp.Event
	// OutOfService is set after RSIP forced and during a restart delay:
	// every command but AUEP is answered 501.
	OutOfService bool
	Connections  []*Connection
	// Trunk marks a trunk channel (ds/...). Seizure is its CAS state
	// (SeizureIdle, SeizureIncoming, ...), Answered whether the call on
	// it was answered, Outpulsed the address of the call agent's seizure.
	Trunk     bool
	Seizure   string
	Answered  bool
	Outpulsed string
}

// Gateway is a fake MGCP residential gateway that behaves like the
// strictest hardware: it answers CRCX/MDCX/DLCX/RQNT/AUEP/AUCX/EPCF,
// keeps connection, request and signal state, models the phone (hook
// state, digits) against the call agent's requests with notification
// state and quarantine (RFC 3435 §4.4.1), refuses hook-state conflicts
// (401/402), goes out of service on restarts, records every command, and
// answers with injected codes, delays or silence on demand. See
// docs/testing.md for its rules.
type Gateway struct {
	cfg   GatewayConfig
	ca    *mgcp.CallAgent
	conn  net.PacketConn
	wire  *gwConn
	ctx   context.Context
	stop  context.CancelFunc
	bg    sync.WaitGroup
	done  chan struct{}
	media netip.Addr

	mu           sync.Mutex
	closed       bool // no goroutine may be added to bg
	disconnected bool // the disconnected procedure is running
	redirects    int  // 521 redirections followed
	rng          *rand.Rand
	eps          map[string]*endpoint // by lower-case local name
	order        []string
	log          []*mgcp.Command
	nextConn     uint64
	nextPort     int
	waiters      []chan struct{}

	imu        sync.Mutex // guards injections and wire.dropped
	injections []*injection
}

// NewGateway starts a fake gateway.
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.Domain == "" {
		cfg.Domain = "gw.test"
	}
	if len(cfg.Endpoints) == 0 {
		if cfg.Lines == 0 {
			cfg.Lines = 2
		}
		for i := 1; i <= cfg.Lines; i++ {
			cfg.Endpoints = append(cfg.Endpoints, "aaln/"+strconv.Itoa(i))
		}
	}
	if cfg.MediaIP == "" {
		cfg.MediaIP = "127.0.0.1"
	}
	media, err := netip.ParseAddr(cfg.MediaIP)
	if err != nil {
		return nil, fmt.Errorf("mgcptest: media ip: %w", err)
	}
	if cfg.RTPPortBase == 0 {
		cfg.RTPPortBase = 16000
	}
	if len(cfg.Codecs) == 0 {
		cfg.Codecs = []string{"PCMU", "PCMA", "telephone-event"}
	}
	switch strings.ToUpper(cfg.TrunkPackage) {
	case "":
		cfg.TrunkPackage = "MS"
	case "MS", "DT":
	default:
		return nil, fmt.Errorf("mgcptest: trunk package %q: MS or DT", cfg.TrunkPackage)
	}
	if cfg.DigitTimeout <= 0 {
		cfg.DigitTimeout = 300 * time.Millisecond
	}
	if cfg.DigitLongTimeout == 0 {
		cfg.DigitLongTimeout = 4 * cfg.DigitTimeout
	}
	conn := cfg.Conn
	if conn == nil {
		if conn, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	if cfg.Faults != nil {
		conn = NewFaultConn(conn, cfg.Faults)
	}
	if cfg.DisconnectedInitial == 0 {
		cfg.DisconnectedInitial = 15 * time.Second
	}
	if cfg.DisconnectedMax == 0 {
		cfg.DisconnectedMax = 600 * time.Second
	}
	g := &Gateway{cfg: cfg, conn: conn, eps: map[string]*endpoint{}, nextPort: cfg.RTPPortBase, media: media,
		done: make(chan struct{}), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	g.wire = &gwConn{PacketConn: conn, g: g}
	for _, e := range cfg.Endpoints {
		name := mgcp.EndpointName{Local: e, Domain: cfg.Domain}
		ep := &endpoint{EndpointState: EndpointState{Name: name, NotifiedEntity: cfg.CallAgent}, noCID: cfg.NoCallerID}
		if strings.HasPrefix(strings.ToLower(e), "ds/") {
			ep.trunk = &trunkChannel{pkg: strings.ToLower(cfg.TrunkPackage)}
		}
		g.eps[strings.ToLower(e)] = ep
		g.order = append(g.order, strings.ToLower(e))
	}
	g.ca = mgcp.New(g.wire, cfg.MGCP, mgcp.WithHandler(mgcp.HandlerFunc(g.handle)))
	ctx, cancel := context.WithCancel(context.Background())
	g.ctx = ctx
	g.stop = cancel
	go func() {
		defer close(g.done)
		_ = g.ca.Serve(ctx)
	}()
	return g, nil
}

// Close stops the gateway and waits for every goroutine it started.
// It is idempotent.
func (g *Gateway) Close() error {
	g.stop()
	g.mu.Lock()
	g.closed = true
	for _, ep := range g.eps {
		g.stopTimer(ep)
	}
	g.mu.Unlock()
	err := g.ca.Close()
	<-g.done
	g.bg.Wait()
	g.mu.Lock()
	for _, ep := range g.eps {
		for _, c := range ep.Connections {
			if c.stream != nil {
				c.stream.close()
				c.stream = nil
			}
		}
	}
	g.mu.Unlock()
	return err
}

// goBg runs f on a goroutine counted in g.bg unless the gateway is
// closing; must hold g.mu.
func (g *Gateway) goBg(f func()) bool {
	if g.closed {
		return false
	}
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		f()
	}()
	return true
}

// Disconnected reports whether the gateway is running the disconnected
// procedure (it lost the call agent and has not got an RSIP through yet).
func (g *Gateway) Disconnected() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.disconnected
}

// startDisconnected enters the disconnected state unless already in it.
func (g *Gateway) startDisconnected() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.disconnected || g.cfg.DisconnectedInitial < 0 || g.closed {
		return
	}
	g.disconnected = true
	wait := time.Duration(g.rng.Int64N(int64(g.cfg.DisconnectedInitial))) + time.Millisecond
	g.goBg(func() {
		limit := g.cfg.DisconnectedInitial
		for {
			t := time.NewTimer(wait)
			select {
			case <-g.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			r, err := g.ca.Do(g.ctx, g.cfg.CallAgent, &mgcp.Command{Verb: mgcp.VerbRSIP, Endpoint: g.Endpoint("*"),
				Parameters: mgcp.Parameters{RestartMethod: mgcp.RestartDisconnected}})
			if err == nil && r.Code.IsSuccess() {
				g.mu.Lock()
				g.disconnected = false
				g.mu.Unlock()
				return
			}
			// Double the waiting delay up to the maximum (§4.4.7).
			limit = min(2*limit, g.cfg.DisconnectedMax)
			g.mu.Lock()
			wait = time.Duration(g.rng.Int64N(int64(limit))) + time.Millisecond
			g.mu.Unlock()
		}
	})
}

// Addr returns the gateway's MGCP address as host:port.
func (g *Gateway) Addr() string { return g.conn.LocalAddr().String() }

// Domain returns the domain of the endpoint names.
func (g *Gateway) Domain() string { return g.cfg.Domain }

// Endpoint returns the full name of a local endpoint name.
func (g *Gateway) Endpoint(local string) mgcp.EndpointName {
	return mgcp.EndpointName{Local: local, Domain: g.cfg.Domain}
}

// Agent returns the gateway's transaction layer (for its Stats).
func (g *Gateway) Agent() *mgcp.CallAgent { return g.ca }

// Commands returns every command received so far, duplicates excluded.
func (g *Gateway) Commands() []*mgcp.Command {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*mgcp.Command(nil), g.log...)
}

// Verbs returns the verbs of Commands, in order.
func (g *Gateway) Verbs() []mgcp.Verb {
	var out []mgcp.Verb
	for _, c := range g.Commands() {
		out = append(out, c.Verb)
	}
	return out
}

// WaitCommands waits until at least n commands were received or ctx ends,
// and returns them.
func (g *Gateway) WaitCommands(ctx context.Context, n int) ([]*mgcp.Command, error) {
	for {
		g.mu.Lock()
		if len(g.log) >= n {
			out := append([]*mgcp.Command(nil), g.log...)
			g.mu.Unlock()
			return out, nil
		}
		ch := make(chan struct{})
		g.waiters = append(g.waiters, ch)
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("mgcptest: waiting for %d commands: %w", n, ctx.Err())
		}
	}
}

// record keeps a received command unless NoRecord.
func (g *Gateway) record(cmd *mgcp.Command) {
	if g.cfg.NoRecord {
		return
	}
	g.mu.Lock()
	g.log = append(g.log, cmd)
	for _, w := range g.waiters {
		close(w)
	}
	g.waiters = nil
	g.mu.Unlock()
}

func cloneConn(c *Connection) *Connection {
	cc := *c
	cc.stream = nil
	return &cc
}

// State returns a copy of an endpoint's state.
func (g *Gateway) State(local string) (EndpointState, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok {
		return EndpointState{}, false
	}
	cp := ep.EndpointState
	cp.RequestedEvents = append([]mgcp.RequestedEvent(nil), ep.RequestedEvents...)
	cp.Signals = append([]mgcp.Event(nil), ep.Signals...)
	cp.Observed = append([]mgcp.Event(nil), ep.observed...)
	cp.Quarantined = append([]mgcp.Event(nil), ep.quar...)
	cp.NotificationState = ep.notifying
	cp.OutOfService = !ep.inService(time.Now())
	cp.Connections = nil
	for _, c := range ep.Connections {
		cp.Connections = append(cp.Connections, cloneConn(c))
	}
	if ep.trunk != nil {
		ep.trunk.state(&cp)
	}
	return cp, true
}

// Quarantined returns the events an endpoint holds in quarantine, in
// order (nil for an unknown endpoint).
func (g *Gateway) Quarantined(local string) []mgcp.Event {
	st, _ := g.State(local)
	return st.Quarantined
}

// InNotificationState reports whether the endpoint sent an NTFY and has
// not had a new request since (RFC 3435 §4.4.1).
func (g *Gateway) InNotificationState(local string) bool {
	st, _ := g.State(local)
	return st.NotificationState
}

// Connections returns copies of the connections of an endpoint, or of
// every endpoint for local "".
func (g *Gateway) Connections(local string) []Connection {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Connection
	for _, k := range g.order {
		if local != "" && k != strings.ToLower(local) {
			continue
		}
		for _, c := range g.eps[k].Connections {
			out = append(out, *cloneConn(c))
		}
	}
	return out
}

// CheckIdle returns an error listing every connection left on any
// endpoint and every quarantined event, or nil when there is none: call
// it at the end of a test, when every call should be torn down.
func (g *Gateway) CheckIdle() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for _, k := range g.order {
		ep := g.eps[k]
		for _, c := range ep.Connections {
			errs = append(errs, fmt.Errorf("mgcptest: %s: connection %s of call %s left (%s)", ep.Name, c.ID, c.CallID, c.Mode))
		}
		for _, e := range ep.quar {
			errs = append(errs, fmt.Errorf("mgcptest: %s: event %s left in quarantine", ep.Name, e))
		}
		if ep.trunk != nil && ep.trunk.seizure != SeizureIdle {
			errs = append(errs, fmt.Errorf("mgcptest: %s: trunk channel left %s", ep.Name, ep.trunk.seizure))
		}
	}
	return errors.Join(errs...)
}

func (g *Gateway) handle(_ context.Context, _ netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
	g.record(cmd)
	if f, ok := g.take(cmd, false); ok {
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-g.ctx.Done():
				t.Stop()
			}
		}
		if f.Code != 0 {
			return resp(cmd, f.Code, "")
		}
	}
	if g.cfg.Respond != nil {
		if r := g.cfg.Respond(cmd); r != nil {
			return r
		}
	}
	g.crossSeizure(cmd) // a far-end seizure crossing this command (trunk.go)
	g.mu.Lock()
	defer g.mu.Unlock()
	r, pending := g.execute(cmd)
	if len(pending) > 0 {
		// The notifications that follow from this command go once its
		// response is on the wire (or after a second, should the
		// response be lost in a way the conn does not see).
		after := g.wire.afterResponse(cmd.TransactionID)
		id := cmd.TransactionID
		if !g.goBg(func() {
			t := time.NewTimer(time.Second)
			defer t.Stop()
			select {
			case <-after:
			case <-t.C:
				g.wire.forget(id)
			case <-g.ctx.Done():
				g.wire.forget(id)
				return
			}
			for _, p := range pending {
				_, _ = g.send(g.ctx, p.local, p.cmd)
			}
		}) {
			g.wire.forget(id)
		}
	}
	return r
}

// execute runs a command's built-in behaviour; must hold g.mu.
func (g *Gateway) execute(cmd *mgcp.Command) (*mgcp.Response, []pendingNotify) {
	if cmd.Verb != mgcp.VerbAUEP && !cmd.Endpoint.IsWildcard() {
		// RFC 3435 §4.4.6: an endpoint out of service answers 501.
		if ep, ok := g.eps[strings.ToLower(cmd.Endpoint.Local)]; ok && strings.EqualFold(cmd.Endpoint.Domain, g.cfg.Domain) &&
			!ep.inService(time.Now()) {
			return resp(cmd, mgcp.CodeEndpointNotReady, "endpoint not ready"), nil
		}
	}
	switch cmd.Verb {
	case mgcp.VerbCRCX:
		return g.crcx(cmd)
	case mgcp.VerbMDCX:
		return g.mdcx(cmd)
	case mgcp.VerbDLCX:
		return g.dlcx(cmd)
	case mgcp.VerbRQNT:
		return g.rqnt(cmd)
	case mgcp.VerbAUEP:
		return g.auep(cmd), nil
	case mgcp.VerbAUCX:
		return g.aucx(cmd), nil
	case mgcp.VerbEPCF:
		if cmd.BearerInformation == "" {
			return resp(cmd, mgcp.CodeProtocolError, "missing B:"), nil
		}
		if _, r := g.endpoint(cmd); r != nil {
			return r, nil
		}
		return resp(cmd, mgcp.CodeOK, ""), nil
	}
	return resp(cmd, mgcp.CodeUnknownCommand, ""), nil
}

func resp(cmd *mgcp.Command, code mgcp.ReturnCode, comment string) *mgcp.Response {
	r := mgcp.NewResponse(cmd, code)
	if comment != "" {
		r.Comment = comment
	}
	return r
}

// endpoint finds the endpoint of a command; must hold g.mu.
func (g *Gateway) endpoint(cmd *mgcp.Command) (*endpoint, *mgcp.Response) {
	if !strings.EqualFold(cmd.Endpoint.Domain, g.cfg.Domain) {
		return nil, resp(cmd, mgcp.CodeEndpointUnknown, "")
	}
	ep, ok := g.eps[strings.ToLower(cmd.Endpoint.Local)]
	if !ok {
		return nil, resp(cmd, mgcp.CodeEndpointUnknown, "")
	}
	return ep, nil
}

// notifiedEntity returns where gateway-originated commands go for ep.
func (g *Gateway) notifiedEntity(ep *endpoint) (string, error) {
	ne := ep.NotifiedEntity
	if ne == "" {
		return "", fmt.Errorf("mgcptest: %s has no notified entity", ep.Name)
	}
	return addressOf(ne), nil
}

// addressOf turns a notified entity ([name@]host[:port]) into host:port,
// with the call agent's default port when none is given (RFC 3435 §3.2.1.3).
func addressOf(ne string) string {
	if at := strings.LastIndexByte(ne, '@'); at >= 0 {
		ne = ne[at+1:]
	}
	if _, _, err := net.SplitHostPort(ne); err != nil {
		ne = net.JoinHostPort(strings.Trim(ne, "[]"), strconv.Itoa(mgcp.DefaultCallAgentPort))
	}
	return ne
}

// Send sends a command from the gateway to the endpoint's notified entity
// (or, for "*", the configured call agent) with retransmission, and
// returns the answer. It changes no endpoint state.
func (g *Gateway) Send(ctx context.Context, local string, cmd *mgcp.Command) (*mgcp.Response, error) {
	return g.send(ctx, local, cmd)
}

func (g *Gateway) send(ctx context.Context, local string, cmd *mgcp.Command) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	var to string
	var err error
	if ok {
		to, err = g.notifiedEntity(ep)
	} else if local == "*" {
		to = g.cfg.CallAgent
	} else {
		err = fmt.Errorf("mgcptest: no endpoint %q", local)
	}
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	cmd.Endpoint = g.Endpoint(local)
	r, err := g.ca.Do(ctx, to, cmd)
	// 521 with N: redirects the endpoint to another call agent (RFC 3435
	// §2.3.8, §4.3): the gateway takes it as its notified entity and sends
	// the command there, as a new transaction. A few hops at most, so two
	// call agents naming each other cannot keep it busy.
	for hop := 0; hop < maxRedirects && err == nil && r.Code == mgcp.CodeRedirected && r.NotifiedEntity != ""; hop++ {
		g.mu.Lock()
		if ok {
			ep.NotifiedEntity = r.NotifiedEntity
			to, err = g.notifiedEntity(ep)
		} else {
			to, err = addressOf(r.NotifiedEntity), nil
		}
		g.redirects++
		g.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if cmd.NotifiedEntity != "" {
			cmd.NotifiedEntity = r.NotifiedEntity
		}
		cmd.TransactionID = 0
		r, err = g.ca.Do(ctx, to, cmd)
	}
	if errors.Is(err, mgcp.ErrTimeout) {
		g.startDisconnected()
	}
	return r, err
}

// maxRedirects bounds the 521 redirections one command follows.
const maxRedirects = 3

// Redirects counts the 521 redirections the gateway followed.
func (g *Gateway) Redirects() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.redirects
}

// Notify sends a raw NTFY with the given observed events and the current
// request id, bypassing the endpoint model: hook, request and
// notification state do not change. Use it to confront the call agent
// with a gateway that misbehaves; use OffHook, OnHook, Flash and Dial to
// model the phone.
func (g *Gateway) Notify(ctx context.Context, local string, observed ...mgcp.Event) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	var x, ne string
	if ok {
		x, ne = ep.RequestID, ep.NotifiedEntity
		if x == "" {
			x = "0"
		}
	}
	g.mu.Unlock()
	return g.send(ctx, local, &mgcp.Command{Verb: mgcp.VerbNTFY, Parameters: mgcp.Parameters{
		NotifiedEntity: ne, RequestID: x, ObservedEvents: observed}})
}

// act performs a user action on the phone: hook changes the physical
// state (or refuses with ErrHookState), then each event is detected in
// turn (RFC 3435 §2.3.3, §4.4.1). Every NTFY that follows is sent before
// the next event happens; act returns the last NTFY's answer, or
// ErrNotNotified with the reason the last event sent none.
func (g *Gateway) act(ctx context.Context, local string, hook func(ep *endpoint) error, events ...mgcp.Event) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok {
		g.mu.Unlock()
		return nil, fmt.Errorf("mgcptest: no endpoint %q", local)
	}
	if err := hook(ep); err != nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", err, ep.Name)
	}
	var last *mgcp.Response
	var lastErr error
	for _, e := range events {
		n, why := g.detect(ep, e)
		if n == nil {
			if last == nil {
				lastErr = why
			}
			continue
		}
		g.mu.Unlock()
		last, lastErr = g.send(ctx, local, n)
		g.mu.Lock()
		if lastErr != nil {
			break
		}
	}
	g.mu.Unlock()
	if last == nil && lastErr == nil {
		lastErr = errNotRequested
	}
	return last, lastErr
}

var (
	evOffHook = mgcp.Event{Package: "L", Name: "hd"}
	evOnHook  = mgcp.Event{Package: "L", Name: "hu"}
	evFlash   = mgcp.Event{Package: "L", Name: "hf"}
)

// OffHook lifts the handset: L/hd, persistent (RFC 3660 §2.2).
func (g *Gateway) OffHook(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.act(ctx, local, func(ep *endpoint) error {
		if ep.OffHook {
			return fmt.Errorf("%w: already off hook", ErrHookState)
		}
		ep.OffHook = true
		return nil
	}, evOffHook)
}

// OnHook hangs up: L/hu, persistent.
func (g *Gateway) OnHook(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.act(ctx, local, func(ep *endpoint) error {
		if !ep.OffHook {
			return fmt.Errorf("%w: already on hook", ErrHookState)
		}
		ep.OffHook = false
		return nil
	}, evOnHook)
}

// Flash presses the hook switch briefly: L/hf, persistent. The phone must
// be off hook.
func (g *Gateway) Flash(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.act(ctx, local, offHookOnly, evFlash)
}

func offHookOnly(ep *endpoint) error {
	if !ep.OffHook {
		return fmt.Errorf("%w: on hook", ErrHookState)
	}
	return nil
}

// Dial presses digits (0-9, *, #, A-D) one at a time on an off-hook phone.
// Each is a D/ event evaluated against the current request: with action D
// the digits collect against the digit map and notify on a match, a
// mismatch, or when the inter-digit timer adds T (RFC 3435 §2.1.5); the
// timer's NTFY is sent in the background, after Dial returned
// ErrNotNotified ("collecting digits").
func (g *Gateway) Dial(ctx context.Context, local, digits string) (*mgcp.Response, error) {
	var evs []mgcp.Event
	for i := 0; i < len(digits); i++ {
		if !isDTMF(digits[i]) {
			return nil, fmt.Errorf("mgcptest: %q is not a DTMF digit", digits[i])
		}
		evs = append(evs, mgcp.Event{Package: "D", Name: strings.ToUpper(digits[i : i+1])})
	}
	return g.act(ctx, local, offHookOnly, evs...)
}

// Collect is Dial (kept for callers of the lenient fake, where it alone
// followed the digit map).
func (g *Gateway) Collect(ctx context.Context, local, digits string) (*mgcp.Response, error) {
	return g.Dial(ctx, local, digits)
}

// reset forgets an endpoint's connections and request, as a restart does
// (RFC 3435 §4.4.6); must hold g.mu.
func (g *Gateway) reset(ep *endpoint) {
	for _, c := range ep.Connections {
		if c.stream != nil {
			c.stream.close()
			c.stream = nil
		}
	}
	ep.Connections = nil
	ep.RequestID, ep.RequestedEvents, ep.Signals, ep.DigitMap, ep.dm = "", nil, nil, "", nil
	ep.QuarantineHandling, ep.discard, ep.loop = "", false, false
	ep.notifying, ep.quar, ep.observed, ep.dialed = false, nil, nil, ""
	ep.MWI = false
	if ep.trunk != nil {
		ep.trunk.reset()
	}
	g.stopTimer(ep)
}

// Restart changes the endpoint (local, or "*" for all) as the restart
// method says, then sends RSIP (RFC 3435 §2.3.12, §4.4.6):
//   - restart: connections and request are gone; with a delay the
//     endpoint is out of service (501 to all but AUEP) until it passes;
//   - forced: connections and request are gone and the endpoint is out
//     of service until a later Restart with restart and no delay;
//   - graceful: once the delay passes new CRCX are refused with 501,
//     existing connections stay; cancel-graceful undoes it;
//   - disconnected: nothing changes.
func (g *Gateway) Restart(ctx context.Context, local string, method mgcp.RestartMethod, delay time.Duration) (*mgcp.Response, error) {
	g.mu.Lock()
	now := time.Now()
	keys := g.order
	if local != "*" {
		// One endpoint: looked up, not searched for (a storm of
		// per-endpoint restarts on 100,000 lines would be quadratic).
		keys = nil
		if _, ok := g.eps[strings.ToLower(local)]; ok {
			keys = []string{strings.ToLower(local)}
		}
	}
	for _, k := range keys {
		ep := g.eps[k]
		switch method {
		case mgcp.RestartRestart:
			g.reset(ep)
			ep.forced, ep.graceful = false, false
			ep.outUntil = now.Add(delay)
		case mgcp.RestartForced:
			g.reset(ep)
			ep.forced, ep.graceful = true, false
		case mgcp.RestartGraceful:
			ep.graceful, ep.gracefulAt = true, now.Add(delay)
		case mgcp.RestartCancelGraceful:
			ep.graceful = false
		}
	}
	g.mu.Unlock()
	p := mgcp.Parameters{RestartMethod: method}
	if delay > 0 || method == mgcp.RestartGraceful {
		p.RestartDelay, p.HasRestartDelay = int(delay/time.Second), true
	}
	return g.send(ctx, local, &mgcp.Command{Verb: mgcp.VerbRSIP, Parameters: p})
}

// DeleteConnection sends a gateway-initiated DLCX for a connection, with a
// reason code, and forgets the connection (RFC 3435 §2.3.8).
func (g *Gateway) DeleteConnection(ctx context.Context, local, connID string, reason mgcp.Reason) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	var callID string
	if ok {
		if i, c := findConn(ep, connID); c != nil {
			callID = c.CallID
			if c.stream != nil {
				c.stream.close()
				c.stream = nil
			}
			ep.Connections = append(ep.Connections[:i], ep.Connections[i+1:]...)
		}
	}
	g.mu.Unlock()
	return g.send(ctx, local, &mgcp.Command{Verb: mgcp.VerbDLCX, Parameters: mgcp.Parameters{
		CallID: callID, ConnectionID: connID, Reason: &reason,
		ConnectionParams: []mgcp.ConnParam{{Name: "PS", Value: "20"}, {Name: "PR", Value: "18"}}}})
}
