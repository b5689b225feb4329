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
	Name            mgcp.EndpointName
	OffHook         bool
	RequestID       string
	RequestedEvents []mgcp.RequestedEvent
	Signals         []mgcp.Event
	DigitMap        string
	NotifiedEntity  string
	Connections     []*Connection
}

// Gateway is a scriptable fake MGCP gateway: it answers CRCX/MDCX/DLCX/
// RQNT/AUEP/AUCX/EPCF like a residential gateway, keeps connection state,
// records every command, and sends NTFY, RSIP and DLCX on demand.
type Gateway struct {
	cfg   GatewayConfig
	ca    *mgcp.CallAgent
	conn  net.PacketConn
	ctx   context.Context
	stop  context.CancelFunc
	bg    sync.WaitGroup
	done  chan struct{}
	media netip.Addr

	mu           sync.Mutex
	disconnected bool // the disconnected procedure is running
	rng          *rand.Rand
	eps          map[string]*EndpointState // by lower-case local name
	order        []string
	log          []*mgcp.Command
	nextConn     uint64
	nextPort     int
	waiters      []chan struct{}
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
	g := &Gateway{cfg: cfg, conn: conn, eps: map[string]*EndpointState{}, nextPort: cfg.RTPPortBase, media: media,
		done: make(chan struct{}), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	for _, e := range cfg.Endpoints {
		name := mgcp.EndpointName{Local: e, Domain: cfg.Domain}
		g.eps[strings.ToLower(e)] = &EndpointState{Name: name, NotifiedEntity: cfg.CallAgent}
		g.order = append(g.order, strings.ToLower(e))
	}
	g.ca = mgcp.New(conn, cfg.MGCP, mgcp.WithHandler(mgcp.HandlerFunc(g.handle)))
	ctx, cancel := context.WithCancel(context.Background())
	g.ctx = ctx
	g.stop = cancel
	go func() {
		defer close(g.done)
		_ = g.ca.Serve(ctx)
	}()
	return g, nil
}

// Close stops the gateway.
func (g *Gateway) Close() error {
	g.stop()
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
	if g.disconnected || g.cfg.DisconnectedInitial < 0 || g.ctx.Err() != nil {
		g.mu.Unlock()
		return
	}
	g.disconnected = true
	wait := time.Duration(g.rng.Int64N(int64(g.cfg.DisconnectedInitial))) + time.Millisecond
	g.bg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.bg.Done()
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
	}()
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

// State returns a copy of an endpoint's state.
func (g *Gateway) State(local string) (EndpointState, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep, ok := g.eps[strings.ToLower(local)]
	if !ok {
		return EndpointState{}, false
	}
	cp := *ep
	cp.Connections = nil
	for _, c := range ep.Connections {
		cc := *c
		cp.Connections = append(cp.Connections, &cc)
	}
	return cp, true
}

func (g *Gateway) handle(_ context.Context, _ netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
	if !g.cfg.NoRecord {
		g.mu.Lock()
		g.log = append(g.log, cmd)
		for _, w := range g.waiters {
			close(w)
		}
		g.waiters = nil
		g.mu.Unlock()
	}
	if g.cfg.Respond != nil {
		if r := g.cfg.Respond(cmd); r != nil {
			return r
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
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
		return g.auep(cmd)
	case mgcp.VerbAUCX:
		return g.aucx(cmd)
	case mgcp.VerbEPCF:
		if cmd.BearerInformation == "" {
			return resp(cmd, mgcp.CodeProtocolError, "missing B:")
		}
		if _, r := g.endpoint(cmd); r != nil {
			return r
		}
		return resp(cmd, mgcp.CodeOK, "")
	}
	return resp(cmd, mgcp.CodeUnknownCommand, "")
}

func resp(cmd *mgcp.Command, code mgcp.ReturnCode, comment string) *mgcp.Response {
	r := mgcp.NewResponse(cmd, code)
	if comment != "" {
		r.Comment = comment
	}
	return r
}

// endpoint finds the endpoint of a command; must hold g.mu.
func (g *Gateway) endpoint(cmd *mgcp.Command) (*EndpointState, *mgcp.Response) {
	if !strings.EqualFold(cmd.Endpoint.Domain, g.cfg.Domain) {
		return nil, resp(cmd, mgcp.CodeEndpointUnknown, "")
	}
	ep, ok := g.eps[strings.ToLower(cmd.Endpoint.Local)]
	if !ok {
		return nil, resp(cmd, mgcp.CodeEndpointUnknown, "")
	}
	return ep, nil
}

// applyRequest stores an (embedded) notification request; must hold g.mu.
func (g *Gateway) applyRequest(ep *EndpointState, cmd *mgcp.Command) {
	if cmd.NotifiedEntity != "" {
		ep.NotifiedEntity = cmd.NotifiedEntity
	}
	if cmd.RequestID != "" {
		ep.RequestID = cmd.RequestID
		ep.RequestedEvents = cmd.RequestedEvents
		ep.DigitMap = cmd.DigitMap
	}
	if cmd.Signals != nil {
		ep.Signals = cmd.Signals
	}
}

func (g *Gateway) crcx(cmd *mgcp.Command) *mgcp.Response {
	if cmd.CallID == "" || cmd.Mode == "" {
		return resp(cmd, mgcp.CodeProtocolError, "CRCX needs C: and M:")
	}
	var ep *EndpointState
	if cmd.Endpoint.Wildcard() == '$' {
		pat := cmd.Endpoint
		for _, k := range g.order {
			if e := g.eps[k]; pat.Matches(e.Name) && len(e.Connections) == 0 {
				ep = e
				break
			}
		}
		if ep == nil {
			return resp(cmd, mgcp.CodeNoEndpointAvailable, "")
		}
	} else {
		var r *mgcp.Response
		if ep, r = g.endpoint(cmd); r != nil {
			return r
		}
	}
	if !cmd.Mode.Known() {
		return resp(cmd, mgcp.CodeInvalidMode, "")
	}
	if len(ep.Connections) >= 2 {
		return resp(cmd, mgcp.CodeConnectionLimit, "")
	}
	if cmd.Mode == mgcp.ModeSendRecv && len(cmd.SDP) == 0 {
		return resp(cmd, mgcp.CodeMissingRemoteSDP, "")
	}
	codecs := g.cfg.Codecs
	if cmd.LocalOptions != nil && len(cmd.LocalOptions.Codecs) > 0 {
		codecs = nil
		for _, want := range cmd.LocalOptions.Codecs {
			for _, have := range g.cfg.Codecs {
				if strings.EqualFold(want, have) {
					codecs = append(codecs, have)
				}
			}
		}
		if len(codecs) == 0 {
			return resp(cmd, mgcp.CodeCodecNegotiation, "")
		}
	}
	ptime := 20
	if cmd.LocalOptions != nil && !cmd.LocalOptions.Packetization.IsZero() {
		ptime = cmd.LocalOptions.Packetization.Min
	}
	g.nextConn++
	c := &Connection{
		ID:        strings.ToUpper(strconv.FormatUint(0xA000+g.nextConn, 16)),
		CallID:    cmd.CallID,
		Mode:      cmd.Mode,
		RemoteSDP: cmd.SDP,
		RTPPort:   g.nextPort,
		Options:   cmd.LocalOptions,
	}
	if g.cfg.RTP {
		st, err := newRTPStream(g.media)
		if err != nil {
			return resp(cmd, mgcp.CodeNoResources, "no RTP port")
		}
		c.stream, c.RTP, c.RTPPort = st, &st.stats, st.port()
		st.update(c.Mode, c.RemoteSDP)
	} else {
		// Even ports from the base up, wrapping before 65535 (a long load
		// run creates more connections than there are ports).
		g.nextPort += 2
		if g.nextPort > 65534 {
			g.nextPort = g.cfg.RTPPortBase
		}
	}
	c.LocalSDP = g.sdp(c.ID, c.RTPPort, codecs, ptime)
	ep.Connections = append(ep.Connections, c)
	g.applyRequest(ep, cmd)
	r := resp(cmd, mgcp.CodeOK, "")
	r.ConnectionID = c.ID
	if cmd.Endpoint.IsWildcard() {
		r.SpecificEndpoint = ep.Name.String()
	}
	r.SDP = c.LocalSDP
	return r
}

var payloadTypes = map[string]string{"PCMU": "0", "PCMA": "8", "G729": "18", "telephone-event": "101"}

// sdp writes the LocalConnectionDescriptor a typical gateway returns.
func (g *Gateway) sdp(id string, port int, codecs []string, ptime int) []byte {
	ipv := "IP4"
	if g.media.Is6() {
		ipv = "IP6"
	}
	var pts []string
	var attrs strings.Builder
	for _, c := range codecs {
		pt, ok := payloadTypes[c]
		if !ok {
			continue
		}
		pts = append(pts, pt)
		fmt.Fprintf(&attrs, "a=rtpmap:%s %s/8000\r\n", pt, c)
		if c == "telephone-event" {
			fmt.Fprintf(&attrs, "a=fmtp:%s 0-15\r\n", pt)
		}
	}
	return []byte(fmt.Sprintf("v=0\r\no=- %s 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\nm=audio %d RTP/AVP %s\r\n%sa=ptime:%d\r\n",
		id, ipv, g.media, ipv, g.media, port, strings.Join(pts, " "), attrs.String(), ptime))
}

func findConn(ep *EndpointState, id string) (int, *Connection) {
	for i, c := range ep.Connections {
		if strings.EqualFold(c.ID, id) {
			return i, c
		}
	}
	return -1, nil
}

// connection finds the endpoint and connection a command names; must
// hold g.mu.
func (g *Gateway) connection(cmd *mgcp.Command) (*EndpointState, *Connection, *mgcp.Response) {
	ep, r := g.endpoint(cmd)
	if r != nil {
		return nil, nil, r
	}
	_, c := findConn(ep, cmd.ConnectionID)
	if c == nil {
		return nil, nil, resp(cmd, mgcp.CodeIncorrectConnectionID, "")
	}
	return ep, c, nil
}

func (g *Gateway) mdcx(cmd *mgcp.Command) *mgcp.Response {
	ep, c, r := g.connection(cmd)
	if r != nil {
		return r
	}
	if cmd.CallID != "" && !strings.EqualFold(cmd.CallID, c.CallID) {
		return resp(cmd, mgcp.CodeUnknownCallID, "")
	}
	if cmd.Mode != "" {
		if !cmd.Mode.Known() {
			return resp(cmd, mgcp.CodeInvalidMode, "")
		}
		if cmd.Mode == mgcp.ModeSendRecv && len(cmd.SDP) == 0 && len(c.RemoteSDP) == 0 {
			return resp(cmd, mgcp.CodeMissingRemoteSDP, "")
		}
		c.Mode = cmd.Mode
	}
	if len(cmd.SDP) > 0 {
		c.RemoteSDP = cmd.SDP
	}
	if c.stream != nil {
		c.stream.update(c.Mode, c.RemoteSDP)
	}
	g.applyRequest(ep, cmd)
	r = resp(cmd, mgcp.CodeOK, "")
	r.SDP = c.LocalSDP
	return r
}

func (g *Gateway) dlcx(cmd *mgcp.Command) *mgcp.Response {
	var targets []*EndpointState
	if cmd.Endpoint.Wildcard() == '*' {
		for _, k := range g.order {
			if e := g.eps[k]; cmd.Endpoint.Matches(e.Name) {
				targets = append(targets, e)
			}
		}
	} else {
		ep, r := g.endpoint(cmd)
		if r != nil {
			return r
		}
		targets = []*EndpointState{ep}
	}
	deleted := 0
	var stats *RTPStats
	for _, ep := range targets {
		kept := ep.Connections[:0]
		for _, c := range ep.Connections {
			match := (cmd.ConnectionID == "" || strings.EqualFold(c.ID, cmd.ConnectionID)) &&
				(cmd.CallID == "" || strings.EqualFold(c.CallID, cmd.CallID))
			if match {
				deleted++
				if c.stream != nil {
					c.stream.close()
					stats = c.RTP
				}
			} else {
				kept = append(kept, c)
			}
		}
		ep.Connections = kept
		g.applyRequest(ep, cmd)
	}
	if cmd.ConnectionID != "" && deleted == 0 {
		return resp(cmd, mgcp.CodeIncorrectConnectionID, "")
	}
	if cmd.CallID != "" && deleted == 0 {
		return resp(cmd, mgcp.CodeUnknownCallID, "")
	}
	if cmd.ConnectionID != "" {
		r := resp(cmd, mgcp.CodeConnectionDeleted, "")
		r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: "1000"}, {Name: "OS", Value: "160000"},
			{Name: "PR", Value: "998"}, {Name: "OR", Value: "159680"}, {Name: "PL", Value: "2"},
			{Name: "JI", Value: "5"}, {Name: "LA", Value: "20"}}
		if stats != nil {
			ps, pr := stats.Sent(), stats.Received()
			r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: strconv.FormatUint(ps, 10)},
				{Name: "OS", Value: strconv.FormatUint(ps*160, 10)}, {Name: "PR", Value: strconv.FormatUint(pr, 10)},
				{Name: "OR", Value: strconv.FormatUint(pr*160, 10)}}
		}
		return r
	}
	return resp(cmd, mgcp.CodeOK, "")
}

func (g *Gateway) rqnt(cmd *mgcp.Command) *mgcp.Response {
	ep, r := g.endpoint(cmd)
	if r != nil {
		return r
	}
	if cmd.RequestID == "" {
		return resp(cmd, mgcp.CodeProtocolError, "RQNT needs X:")
	}
	g.applyRequest(ep, cmd)
	return resp(cmd, mgcp.CodeOK, "")
}

func (g *Gateway) auep(cmd *mgcp.Command) *mgcp.Response {
	if cmd.Endpoint.Wildcard() == '*' {
		r := resp(cmd, mgcp.CodeOK, "")
		for _, k := range g.order {
			e := g.eps[k]
			if !cmd.Endpoint.Matches(e.Name) {
				continue
			}
			if r.SpecificEndpoint == "" {
				r.SpecificEndpoint = e.Name.String()
			} else {
				r.Extra = append(r.Extra, mgcp.Param{Name: "Z", Value: e.Name.String()})
			}
		}
		if r.SpecificEndpoint == "" {
			return resp(cmd, mgcp.CodeEndpointUnknown, "")
		}
		return r
	}
	ep, r := g.endpoint(cmd)
	if r != nil {
		return r
	}
	r = resp(cmd, mgcp.CodeOK, "")
	for _, f := range cmd.RequestedInfo {
		switch f {
		case "R":
			r.RequestedEvents = append([]mgcp.RequestedEvent{}, ep.RequestedEvents...)
		case "S":
			r.Signals = append([]mgcp.Event{}, ep.Signals...)
		case "D":
			r.DigitMap = ep.DigitMap
		case "X":
			r.RequestID = ep.RequestID
		case "N":
			r.NotifiedEntity = ep.NotifiedEntity
		case "I":
			for i, c := range ep.Connections {
				if i == 0 {
					r.ConnectionID = c.ID
				} else {
					r.Extra = append(r.Extra, mgcp.Param{Name: "I", Value: c.ID})
				}
			}
		case "ES":
			hook := "hu"
			if ep.OffHook {
				hook = "hd"
			}
			r.EventStates = []mgcp.Event{{Package: "L", Name: hook}}
		case "A":
			r.Capabilities = "a:" + strings.Join(g.cfg.Codecs, ";") + ", p:10-30, e:on, s:on, v:L;G;D, m:sendonly;recvonly;sendrecv;inactive;netwloop"
		case "PL":
			r.PackageList = "L:1,G:1,D:1"
		case "MD":
			r.MaxDatagram = 4000
		case "RM":
			r.RestartMethod = mgcp.RestartRestart
		case "RD":
			r.RestartDelay, r.HasRestartDelay = 0, true
		case "B":
			r.BearerInformation = "e:mu"
		}
	}
	return r
}

func (g *Gateway) aucx(cmd *mgcp.Command) *mgcp.Response {
	ep, c, r := g.connection(cmd)
	if r != nil {
		return r
	}
	r = resp(cmd, mgcp.CodeOK, "")
	var sdps [][]byte
	for _, f := range cmd.RequestedInfo {
		switch f {
		case "C":
			r.CallID = c.CallID
		case "N":
			r.NotifiedEntity = ep.NotifiedEntity
		case "L":
			r.LocalOptions = c.Options
		case "M":
			r.Mode = c.Mode
		case "LC":
			sdps = append(sdps, c.LocalSDP)
		case "RC":
			sdps = append(sdps, c.RemoteSDP)
		case "P":
			r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: "0"}, {Name: "PR", Value: "0"}}
		}
	}
	// RFC 3435 §2.3.11: with both descriptors, the local one comes first,
	// separated by an empty line.
	for i, s := range sdps {
		if i > 0 {
			r.SDP = append(r.SDP, "\r\n"...)
		}
		r.SDP = append(r.SDP, s...)
	}
	return r
}

// notifiedEntity returns where gateway-originated commands go for ep.
func (g *Gateway) notifiedEntity(ep *EndpointState) (string, error) {
	ne := ep.NotifiedEntity
	if ne == "" {
		return "", fmt.Errorf("mgcptest: %s has no notified entity", ep.Name)
	}
	if at := strings.LastIndexByte(ne, '@'); at >= 0 {
		ne = ne[at+1:]
	}
	if _, _, err := net.SplitHostPort(ne); err != nil {
		ne = net.JoinHostPort(strings.Trim(ne, "[]"), strconv.Itoa(mgcp.DefaultCallAgentPort))
	}
	return ne, nil
}

// Send sends a command from the gateway to the endpoint's notified entity
// (or the configured call agent) with retransmission, and returns the
// answer.
func (g *Gateway) Send(ctx context.Context, local string, cmd *mgcp.Command) (*mgcp.Response, error) {
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
	if errors.Is(err, mgcp.ErrTimeout) {
		g.startDisconnected()
	}
	return r, err
}

// Notify sends NTFY with the observed events and the current request id.
func (g *Gateway) Notify(ctx context.Context, local string, observed ...mgcp.Event) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	var x, ne string
	if ok {
		x, ne = ep.RequestID, ep.NotifiedEntity
		for _, o := range observed {
			switch {
			case o.Is("L", "hd"):
				ep.OffHook = true
			case o.Is("L", "hu"):
				ep.OffHook = false
			}
		}
	}
	g.mu.Unlock()
	return g.Send(ctx, local, &mgcp.Command{Verb: mgcp.VerbNTFY, Parameters: mgcp.Parameters{
		NotifiedEntity: ne, RequestID: x, ObservedEvents: observed}})
}

// OffHook reports L/hd.
func (g *Gateway) OffHook(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.Notify(ctx, local, mgcp.Event{Package: "L", Name: "hd"})
}

// OnHook reports L/hu.
func (g *Gateway) OnHook(ctx context.Context, local string) (*mgcp.Response, error) {
	return g.Notify(ctx, local, mgcp.Event{Package: "L", Name: "hu"})
}

// Dial reports digits as D/ events in one NTFY, as a gateway does once its
// digit map matched.
func (g *Gateway) Dial(ctx context.Context, local, digits string) (*mgcp.Response, error) {
	var evs []mgcp.Event
	for _, d := range digits {
		evs = append(evs, mgcp.Event{Package: "D", Name: string(d)})
	}
	return g.Notify(ctx, local, evs...)
}

// Restart sends RSIP for local ("*" for all endpoints).
func (g *Gateway) Restart(ctx context.Context, local string, method mgcp.RestartMethod, delay time.Duration) (*mgcp.Response, error) {
	p := mgcp.Parameters{RestartMethod: method}
	if delay > 0 || method == mgcp.RestartGraceful {
		p.RestartDelay, p.HasRestartDelay = int(delay/time.Second), true
	}
	return g.Send(ctx, local, &mgcp.Command{Verb: mgcp.VerbRSIP, Parameters: p})
}

// DeleteConnection sends a gateway-initiated DLCX for a connection, with a
// reason code, and forgets the connection.
func (g *Gateway) DeleteConnection(ctx context.Context, local, connID string, reason mgcp.Reason) (*mgcp.Response, error) {
	g.mu.Lock()
	ep, ok := g.eps[strings.ToLower(local)]
	var callID string
	if ok {
		if i, c := findConn(ep, connID); c != nil {
			callID = c.CallID
			ep.Connections = append(ep.Connections[:i], ep.Connections[i+1:]...)
		}
	}
	g.mu.Unlock()
	return g.Send(ctx, local, &mgcp.Command{Verb: mgcp.VerbDLCX, Parameters: mgcp.Parameters{
		CallID: callID, ConnectionID: connID, Reason: &reason,
		ConnectionParams: []mgcp.ConnParam{{Name: "PS", Value: "20"}, {Name: "PR", Value: "18"}}}})
}
