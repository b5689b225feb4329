package mgcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Handler serves commands that peers send to the CallAgent (NTFY, RSIP,
// DLCX from a gateway, ...). Duplicates never reach it: the CallAgent
// answers them from its response cache. A handler should route the command
// to its owner and return quickly; one that takes longer than
// Config.ProvisionalAfter causes a provisional 100 to be sent. Returning
// nil answers 400. The transaction id of the response is set by the
// CallAgent.
type Handler interface {
	HandleMGCP(ctx context.Context, from netip.AddrPort, cmd *Command) *Response
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, from netip.AddrPort, cmd *Command) *Response

// HandleMGCP calls f.
func (f HandlerFunc) HandleMGCP(ctx context.Context, from netip.AddrPort, cmd *Command) *Response {
	return f(ctx, from, cmd)
}

// PeerState is what the transaction layer knows of a peer.
type PeerState int

// Peer states.
const (
	PeerUnknown      PeerState = iota // nothing exchanged yet
	PeerReachable                     // last exchange succeeded
	PeerDisconnected                  // a transaction gave up (Max2 / T-max)
)

func (s PeerState) String() string {
	switch s {
	case PeerReachable:
		return "reachable"
	case PeerDisconnected:
		return "disconnected"
	}
	return "unknown"
}

// PeerInfo is a snapshot of one peer's transaction state.
type PeerInfo struct {
	Addr            netip.AddrPort
	State           PeerState
	RTT             time.Duration // smoothed round trip; 0 before the first sample
	RTO             time.Duration // current retransmission timeout
	Retransmissions uint64
	Timeouts        uint64
	CachedResponses int
	LastHeard       time.Time
	// Window is the number of commands that may be outstanding to the
	// peer now; Outstanding are sent and not yet answered, Queued wait
	// for a slot (window.go).
	Window, Outstanding, Queued int
}

// Stats are counters of the transaction layer since start.
type Stats struct {
	CommandsSent, Retransmissions, Timeouts, ResponsesReceived uint64
	CommandsReceived, Duplicates, ProvisionalSent, AcksSent    uint64
	ParseErrors, Refused, Overloaded, LateResponses            uint64
	// WindowWaits counts commands that waited in a peer's queue for a
	// slot of its transaction window, QueueFull those refused because
	// the queue was full (ErrQueueFull), WindowDecreases the times a
	// window was cut (retransmission, overload answer, timeout).
	WindowWaits, QueueFull, WindowDecreases uint64
	// ResponseRetransmissions counts our final responses sent again for
	// want of the peer's "000" (RFC 3435 §3.5.6); Retransmissions counts
	// commands only.
	ResponseRetransmissions uint64
}

type stats struct {
	commandsSent, retransmissions, timeouts, responsesReceived atomic.Uint64
	commandsReceived, duplicates, provisionalSent, acksSent    atomic.Uint64
	parseErrors, refused, overloaded, lateResponses            atomic.Uint64
	windowWaits, queueFull, windowDecreases                    atomic.Uint64
	responseRetransmissions                                    atomic.Uint64
}

// Option configures a CallAgent.
type Option func(*CallAgent)

// WithHandler sets the handler for incoming commands. Without one, every
// command is answered 504.
func WithHandler(h Handler) Option { return func(ca *CallAgent) { ca.handler = h } }

// WithLogger sets the logger (default: a discarding logger).
func WithLogger(l *logrus.Entry) Option { return func(ca *CallAgent) { ca.log = l } }

// WithAuthorizer restricts which addresses may send commands and
// responses. Datagrams from refused addresses are dropped without an
// answer and counted.
func WithAuthorizer(allow func(netip.AddrPort) bool) Option {
	return func(ca *CallAgent) { ca.allow = allow }
}

// WithPeerStateFunc registers a function called (on its own goroutine)
// whenever a peer's state changes.
func WithPeerStateFunc(f func(netip.AddrPort, PeerState)) Option {
	return func(ca *CallAgent) { ca.onState = f }
}

// WithRoundTripFunc sets a function called once per completed outgoing
// transaction with its peer, verb, final code and the time from the first
// send to the final response (retransmissions included). It runs on the
// caller's goroutine and must be quick (metrics).
func WithRoundTripFunc(f func(peer netip.AddrPort, verb Verb, code ReturnCode, rtt time.Duration)) Option {
	return func(ca *CallAgent) { ca.onRoundTrip = f }
}

// Resolver looks up the addresses of a gateway name.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// WithResolver replaces net.DefaultResolver for names given to Do.
func WithResolver(r Resolver) Option { return func(ca *CallAgent) { ca.resolver = r } }

// CallAgent is the MGCP transaction layer over one UDP socket: it sends
// commands with retransmission (Do) and serves commands from peers with
// at-most-once semantics (Serve). Safe for concurrent use.
type CallAgent struct {
	conn        net.PacketConn
	cfg         Config
	log         *logrus.Entry
	handler     Handler
	allow       func(netip.AddrPort) bool
	onState     func(netip.AddrPort, PeerState)
	onRoundTrip func(netip.AddrPort, Verb, ReturnCode, time.Duration)
	resolver    Resolver

	nextTx  atomic.Uint32
	stats   stats
	lastLog atomic.Int64 // unix ns of the last sampled log line

	mu      sync.Mutex
	pending map[uint32]*outTx
	peers   map[netip.AddrPort]*peer
	// totals keeps the counters of peers forgotten while idle, so that a
	// peer's retransmissions and timeouts never go back (they are
	// counters in the metrics); bounded by MaxPeers.
	totals   map[netip.AddrPort][2]uint64
	names    map[string]nameEntry
	inflight int

	msgs []Message // read loop's scratch list of parsed messages
	// txs and timers recycle the waiting state of outgoing transactions
	// (two channels, the struct, the retransmission timer): one set per
	// command sent is a lot of garbage at thousands of commands a second.
	// They belong to the CallAgent, not the package, so that the channels
	// and timers of one synctest bubble never reach another.
	txs, timers sync.Pool
	work        chan work // idle workers wait here for a command (workers.go)

	ctx       context.Context // ends on Close; parent of handler contexts
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
	serving   atomic.Bool
}

type outTx struct {
	final chan *Response
	prov  chan struct{}
	done  atomic.Bool // a final response was delivered
	// peer is the address the command went to; only it may answer
	// (guarded by CallAgent.mu): transaction ids are matched per peer,
	// so one gateway cannot answer for another.
	peer netip.Addr
}

func newOutTx() any {
	return &outTx{final: make(chan *Response, 1), prov: make(chan struct{}, 1)}
}

// reset empties tx for reuse. It must be out of ca.pending.
func (tx *outTx) reset() {
	select {
	case <-tx.final:
	default:
	}
	select {
	case <-tx.prov:
	default:
	}
	tx.done.Store(false)
	tx.peer = netip.Addr{}
}

func newStoppedTimer() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// getTimer returns a recycled timer set to fire after d. A stopped timer's
// channel is empty (Go 1.23 timers), so a reused one holds no stale tick.
func (ca *CallAgent) getTimer(d time.Duration) *time.Timer {
	t := ca.timers.Get().(*time.Timer)
	t.Reset(d)
	return t
}

func (ca *CallAgent) putTimer(t *time.Timer) {
	t.Stop()
	ca.timers.Put(t)
}

type nameEntry struct {
	addr    netip.AddrPort
	expires time.Time
}

// peer is the per-address transaction state. Guarded by CallAgent.mu.
type peer struct {
	state     PeerState
	lastHeard time.Time
	// RTT estimate (RFC 3435 §3.5.3: average delay plus twice the
	// average deviation), valid when hasRTT.
	srtt, rttvar time.Duration
	hasRTT       bool
	// received responses to confirm with K: on the next command
	acks []uint32
	// noAcks is set once the peer refused a command for its K: line
	// (osmo-mgw answers 539); K: is then never sent to it again.
	noAcks bool
	// response cache for commands received from this peer
	cache map[uint32]*cached
	order []uint32 // insertion order, for expiry and the size cap
	head  int

	retransmissions, timeouts uint64

	// transaction window (window.go)
	cwnd, ssthresh      float64
	outstanding, queued int
	queue               []*waiter
	qhead               int
	sendSeq, recoverSeq uint64
}

// cached is one entry of a peer's response cache.
type cached struct {
	at       time.Time
	wire     []byte // final response; nil while the handler runs
	provSent bool   // a provisional response was sent
	acked    chan struct{}
	// hctx is the context of the handler serving the command, kept in
	// the entry so that a command costs one allocation less.
	hctx handlerCtx
}

// New returns a CallAgent over conn. The caller keeps ownership of conn
// until Close, which closes it.
func New(conn net.PacketConn, cfg Config, opts ...Option) *CallAgent {
	ca := &CallAgent{
		conn:     conn,
		cfg:      cfg.WithDefaults(),
		pending:  make(map[uint32]*outTx),
		peers:    make(map[netip.AddrPort]*peer),
		totals:   make(map[netip.AddrPort][2]uint64),
		names:    make(map[string]nameEntry),
		resolver: net.DefaultResolver,
		work:     make(chan work),
	}
	ca.txs.New = newOutTx
	ca.timers.New = newStoppedTimer
	for _, o := range opts {
		o(ca)
	}
	if ca.log == nil {
		l := logrus.New()
		l.Out = discard{}
		ca.log = logrus.NewEntry(l)
	}
	ca.ctx, ca.cancel = context.WithCancel(context.Background())
	// Start transaction ids at a random-looking point so that a restarted
	// call agent does not collide with ids the gateway still remembers.
	ca.nextTx.Store(uint32(time.Now().UnixNano()%MaxTransactionID) + 1)
	return ca
}

// sendBufs recycles the buffers commands are serialized into while Do
// waits for their answer.
var sendBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Listen binds cfg.ListenAddr over UDP and returns a CallAgent on it.
func Listen(cfg Config, opts ...Option) (*CallAgent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := net.ListenPacket("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("mgcp: listen %s: %w", cfg.ListenAddr, err)
	}
	if cfg.SocketBuffer > 0 {
		if _, _, err := SetSocketBuffers(conn, cfg.SocketBuffer); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("listen %s: %w", cfg.ListenAddr, err)
		}
	}
	return New(conn, cfg, opts...), nil
}

// LocalAddr returns the address of the socket.
func (ca *CallAgent) LocalAddr() net.Addr { return ca.conn.LocalAddr() }

// Config returns the effective configuration.
func (ca *CallAgent) Config() Config { return ca.cfg }

// Close stops Serve, fails outstanding transactions with ErrClosed and
// closes the socket. It waits for goroutines the CallAgent started (not
// for handlers still running). Safe to call more than once.
func (ca *CallAgent) Close() error {
	var err error
	ca.closeOnce.Do(func() {
		// Cancel under mu so no goroutine is added to wg after Wait starts.
		ca.mu.Lock()
		ca.cancel()
		ca.mu.Unlock()
		err = ca.conn.Close()
	})
	ca.wg.Wait()
	return err
}

// Serve reads datagrams until ctx ends or Close is called, then returns
// nil; it returns an error only if the socket fails. Do needs Serve
// running to receive responses.
func (ca *CallAgent) Serve(ctx context.Context) error {
	if !ca.serving.CompareAndSwap(false, true) {
		return errors.New("mgcp: Serve called twice")
	}
	stop := context.AfterFunc(ctx, func() { _ = ca.Close() })
	defer stop()
	if !ca.goAdd() {
		return nil
	}
	go func() {
		defer ca.wg.Done()
		ca.janitor()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := ca.read(buf)
		if err != nil {
			if ca.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("mgcp: read: %w", err)
		}
		ca.receive(buf[:n], from)
	}
}

// AddrPortConn is the part of *net.UDPConn the CallAgent uses to read and
// write without allocating an address per datagram. A wrapper of a UDP
// socket given to New may implement it too (the fake gateway's does); a
// wrapper that embeds *net.UDPConn and overrides ReadFrom or WriteTo must
// override these as well, or the CallAgent bypasses its overrides.
type AddrPortConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

func (ca *CallAgent) read(buf []byte) (int, netip.AddrPort, error) {
	if u, ok := ca.conn.(AddrPortConn); ok {
		n, ap, err := u.ReadFromUDPAddrPort(buf)
		return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err
	}
	n, addr, err := ca.conn.ReadFrom(buf)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if u, ok := addr.(*net.UDPAddr); ok {
		// A wrapped UDP socket (the trace tap, the fake gateway's
		// fault injection): no string round trip.
		ap := u.AddrPort()
		return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ap, _ := netip.ParseAddrPort(addr.String())
	return n, ap, nil
}

func (ca *CallAgent) write(b []byte, to netip.AddrPort) error {
	if ca.cfg.Trace {
		ca.log.WithFields(logrus.Fields{"to": to.String(), "message": string(b)}).Info("mgcp send")
	}
	if u, ok := ca.conn.(AddrPortConn); ok {
		_, err := u.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := ca.conn.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// Stats returns a snapshot of the counters.
func (ca *CallAgent) Stats() Stats {
	s := &ca.stats
	return Stats{
		CommandsSent: s.commandsSent.Load(), Retransmissions: s.retransmissions.Load(),
		Timeouts: s.timeouts.Load(), ResponsesReceived: s.responsesReceived.Load(),
		CommandsReceived: s.commandsReceived.Load(), Duplicates: s.duplicates.Load(),
		ProvisionalSent: s.provisionalSent.Load(), AcksSent: s.acksSent.Load(),
		ParseErrors: s.parseErrors.Load(), Refused: s.refused.Load(),
		Overloaded: s.overloaded.Load(), LateResponses: s.lateResponses.Load(),
		WindowWaits: s.windowWaits.Load(), QueueFull: s.queueFull.Load(), WindowDecreases: s.windowDecreases.Load(),
		ResponseRetransmissions: s.responseRetransmissions.Load(),
	}
}

// Peers returns a snapshot of every tracked peer, and of the peers
// forgotten while idle that had retransmissions or timeouts (their
// counters only), so that the counters never go back.
func (ca *CallAgent) Peers() []PeerInfo {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	out := make([]PeerInfo, 0, len(ca.peers)+len(ca.totals))
	for a, p := range ca.peers {
		out = append(out, ca.peerInfo(a, p))
	}
	for a, t := range ca.totals {
		out = append(out, PeerInfo{Addr: a, Retransmissions: t[0], Timeouts: t[1]})
	}
	return out
}

// Peer returns the state of one peer.
func (ca *CallAgent) Peer(addr netip.AddrPort) (PeerInfo, bool) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	p, ok := ca.peers[addr]
	if !ok {
		return PeerInfo{Addr: addr}, false
	}
	return ca.peerInfo(addr, p), true
}

func (ca *CallAgent) peerInfo(a netip.AddrPort, p *peer) PeerInfo {
	w := p.windowSize()
	if p.cwnd == 0 {
		w = ca.cfg.WindowInitial
	}
	return PeerInfo{Addr: a, State: p.state, RTT: p.srtt, RTO: ca.rto(p), Retransmissions: p.retransmissions,
		Timeouts: p.timeouts, CachedResponses: len(p.cache), LastHeard: p.lastHeard,
		Window: w, Outstanding: p.outstanding, Queued: p.queued}
}

// getPeer returns the peer for addr, creating it unless the table is
// full. Must hold ca.mu.
func (ca *CallAgent) getPeer(a netip.AddrPort) *peer {
	if p, ok := ca.peers[a]; ok {
		return p
	}
	if len(ca.peers) >= ca.cfg.MaxPeers {
		return nil
	}
	p := &peer{}
	if t, ok := ca.totals[a]; ok {
		p.retransmissions, p.timeouts = t[0], t[1]
		delete(ca.totals, a)
	}
	ca.peers[a] = p
	return p
}

// setState changes a peer's state and reports the change. Must hold ca.mu.
func (ca *CallAgent) setState(a netip.AddrPort, p *peer, s PeerState) {
	if p.state == s {
		return
	}
	p.state = s
	if ca.onState != nil {
		f := ca.onState
		go f(a, s)
	}
}

// rto is the retransmission timeout for the first attempt. Must hold ca.mu.
func (ca *CallAgent) rto(p *peer) time.Duration {
	if !p.hasRTT {
		return ca.cfg.InitialRTO
	}
	return min(max(p.srtt+2*p.rttvar, ca.cfg.MinRTO), ca.cfg.MaxRTO)
}

// sample folds a round-trip measurement into the estimate with the gains
// of RFC 3435 §3.5.3 (1/8 for the average, 1/4 for the deviation). Must
// hold ca.mu.
func sample(p *peer, rtt time.Duration) {
	if !p.hasRTT {
		p.srtt, p.rttvar, p.hasRTT = rtt, rtt/2, true
		return
	}
	d := p.srtt - rtt
	if d < 0 {
		d = -d
	}
	p.rttvar += (d - p.rttvar) / 4
	p.srtt += (rtt - p.srtt) / 8
}

// NextTransactionID returns a fresh transaction id (1..999999999, wrapping).
func (ca *CallAgent) NextTransactionID() uint32 {
	for {
		old := ca.nextTx.Load()
		next := old + 1
		if next > MaxTransactionID {
			next = 1
		}
		if ca.nextTx.CompareAndSwap(old, next) {
			return old
		}
	}
}

// resolve turns "host[:port]" into an address. IP literals need no
// lookup; names are cached for a minute and looked up again on demand.
func (ca *CallAgent) resolve(ctx context.Context, to string, fresh bool) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(to); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port := to, ca.cfg.DefaultPort
	if h, p, err := net.SplitHostPort(to); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return netip.AddrPort{}, fmt.Errorf("mgcp: bad port in %q", to)
		}
		host, port = h, n
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
	}
	now := time.Now()
	if !fresh {
		ca.mu.Lock()
		e, ok := ca.names[to]
		ca.mu.Unlock()
		if ok && now.Before(e.expires) {
			return e.addr, nil
		}
	}
	addrs, err := ca.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("mgcp: resolve %q: %w", host, err)
	}
	ap := netip.AddrPortFrom(addrs[0].Unmap(), uint16(port))
	ca.mu.Lock()
	if len(ca.names) < ca.cfg.MaxPeers {
		ca.names[to] = nameEntry{addr: ap, expires: now.Add(time.Minute)}
	}
	ca.mu.Unlock()
	return ap, nil
}

// Do sends cmd to the peer "host[:port]" and waits for its final response,
// retransmitting with exponential backoff (RFC 3435 §3.5.3). A zero
// TransactionID is assigned a fresh one. Responses received earlier from
// the same peer are confirmed with K: (§3.5.6) unless cmd sets ResponseAck
// itself; cmd is not modified. A final response that asks for it is
// acknowledged with "000". It returns ErrTimeout (wrapped) when the peer
// never answers, and the response, whatever its code, otherwise.
func (ca *CallAgent) Do(ctx context.Context, to string, cmd *Command) (*Response, error) {
	r, addr, piggybacked, err := ca.do(ctx, to, cmd)
	if err == nil && piggybacked && (r.Code == CodeInvalidParameter || r.Code == CodeProtocolError) {
		// The peer refused the command, most likely for the K: we added
		// (K: is optional to support in practice). Stop sending it K:
		// and send the command again; it was not executed.
		ca.mu.Lock()
		if p := ca.peers[addr]; p != nil && !p.noAcks {
			p.noAcks = true
			p.acks = nil
			ca.log.WithFields(logrus.Fields{"gateway": addr.String(), "code": r.Code.String()}).Info("peer rejects K: response acknowledgements; no longer sending them")
		}
		ca.mu.Unlock()
		retry := *cmd
		if retry.TransactionID != 0 {
			retry.TransactionID = ca.NextTransactionID()
		}
		r, _, _, err = ca.do(ctx, to, &retry)
	}
	return r, err
}

// do runs one transaction and reports the address used and whether it
// added a K: line.
func (ca *CallAgent) do(ctx context.Context, to string, cmd *Command) (*Response, netip.AddrPort, bool, error) {
	if ca.ctx.Err() != nil {
		return nil, netip.AddrPort{}, false, ErrClosed
	}
	addr, err := ca.resolve(ctx, to, false)
	if err != nil {
		return nil, addr, false, err
	}
	// A slot of the peer's window first: beyond it the command waits its
	// turn (window.go), and none of that wait counts toward T-max.
	slot, err := ca.acquire(ctx, addr)
	if err != nil {
		return nil, addr, false, err
	}
	defer ca.release(&slot)
	c := *cmd
	if c.TransactionID == 0 {
		c.TransactionID = ca.NextTransactionID()
	}
	piggybacked := false
	var ackBuf [4]AckRange
	tx := ca.txs.Get().(*outTx)
	tx.peer = addr.Addr().Unmap()
	ca.mu.Lock()
	if len(ca.pending) >= ca.cfg.MaxPending {
		ca.mu.Unlock()
		ca.txs.Put(tx)
		return nil, addr, false, ErrTooManyPending
	}
	if _, dup := ca.pending[c.TransactionID]; dup {
		ca.mu.Unlock()
		ca.txs.Put(tx)
		return nil, addr, false, fmt.Errorf("mgcp: transaction %d already outstanding", c.TransactionID)
	}
	ca.pending[c.TransactionID] = tx
	p := ca.getPeer(addr)
	rto := ca.cfg.InitialRTO
	if p != nil {
		rto = ca.rto(p)
		if c.ResponseAck == nil && len(p.acks) > 0 && !p.noAcks {
			// The ranges only live until c is serialized below (c.Verb is
			// read from cmd after that, so that c stays on the stack).
			c.ResponseAck = ackRanges(ackBuf[:0], p.acks)
			p.acks = p.acks[:0]
			piggybacked = true
		}
	}
	ca.mu.Unlock()
	defer func() {
		ca.mu.Lock()
		delete(ca.pending, c.TransactionID)
		ca.mu.Unlock()
		// Out of pending, nothing delivers to tx any more (onResponse
		// delivers under ca.mu): empty it for the next transaction.
		tx.reset()
		ca.txs.Put(tx)
	}()

	bp := sendBufs.Get().(*[]byte)
	wire := c.AppendTo((*bp)[:0])
	defer func() {
		*bp = wire[:0]
		sendBufs.Put(bp)
	}()
	if len(wire) > ca.cfg.MaxDatagram {
		return nil, addr, false, fmt.Errorf("%w: %d bytes", ErrMessageTooBig, len(wire))
	}
	log := ca.log
	ca.stats.commandsSent.Add(1)
	start := time.Now()
	if err := ca.write(wire, addr); err != nil {
		return nil, addr, false, fmt.Errorf("mgcp: send %s %d: %w", cmd.Verb, c.TransactionID, err)
	}
	timer := ca.getTimer(rto)
	defer ca.putTimer(timer)
	retries := 0
	provisional := false
	for {
		select {
		case r := <-tx.final:
			ca.mu.Lock()
			if slot.p != nil && retries == 0 && !provisional {
				if r.Code == CodeOverload || r.Code == CodeNoResources {
					ca.onCongestion(&slot, false)
				} else {
					ca.onAnswered(&slot)
				}
			}
			if p := ca.getPeer(addr); p != nil {
				if retries == 0 && !provisional {
					sample(p, time.Since(start)) // Karn: only unambiguous samples
				}
				if len(p.acks) < 64 && !p.noAcks {
					p.acks = append(p.acks, r.TransactionID)
				}
			}
			ca.mu.Unlock()
			if ca.onRoundTrip != nil {
				ca.onRoundTrip(addr, cmd.Verb, r.Code, time.Since(start))
			}
			return r, addr, piggybacked, nil
		case <-tx.prov:
			if !provisional {
				provisional = true
				timer.Reset(ca.cfg.ProvisionalWait)
			}
		case <-timer.C:
			elapsed := time.Since(start)
			if provisional || retries >= ca.cfg.Max2 || elapsed+rto > ca.cfg.TMax {
				ca.stats.timeouts.Add(1)
				ca.mu.Lock()
				if p := ca.getPeer(addr); p != nil {
					p.timeouts++
					ca.setState(addr, p, PeerDisconnected)
				}
				if slot.p != nil {
					ca.onCongestion(&slot, true)
				}
				ca.mu.Unlock()
				return nil, addr, piggybacked, fmt.Errorf("mgcp: %s %d to %s after %d retransmissions in %v: %w",
					cmd.Verb, c.TransactionID, addr, retries, elapsed.Round(time.Millisecond), ErrTimeout)
			}
			retries++
			if retries == ca.cfg.Max1 && to != addr.String() {
				// RFC 3435 §4.3: after Max1 retransmissions look the name up
				// again, the gateway may have moved.
				if a, err := ca.resolve(ctx, to, true); err == nil && a != addr {
					log.WithFields(logrus.Fields{"gateway": to, "old": addr.String(), "new": a.String()}).Info("mgcp peer address changed")
					addr = a
					ca.mu.Lock()
					tx.peer = a.Addr().Unmap()
					ca.mu.Unlock()
				}
			}
			rto = min(rto*2, ca.cfg.MaxRTO)
			ca.stats.retransmissions.Add(1)
			ca.mu.Lock()
			if p := ca.getPeer(addr); p != nil {
				p.retransmissions++
			}
			if slot.p != nil {
				ca.onCongestion(&slot, false)
			}
			ca.mu.Unlock()
			if err := ca.write(wire, addr); err != nil {
				log.WithError(err).WithField("mgcp_tx", c.TransactionID).Debug("mgcp retransmit failed")
			}
			timer.Reset(rto)
		case <-ctx.Done():
			return nil, addr, piggybacked, ctx.Err()
		case <-ca.ctx.Done():
			return nil, addr, piggybacked, ErrClosed
		}
	}
}

// ackRanges compresses transaction ids into K: ranges appended to out; it
// sorts ids in place.
func ackRanges(out []AckRange, ids []uint32) []AckRange {
	for i := 1; i < len(ids); i++ { // short lists: insertion sort
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
	for _, id := range ids {
		if n := len(out); n > 0 && (id == out[n-1].To || id == out[n-1].To+1) {
			out[n-1].To = id
			continue
		}
		out = append(out, AckRange{id, id})
	}
	return out
}

// sampled runs log at most once a second.
func (ca *CallAgent) sampled(log func()) {
	now := time.Now().UnixNano()
	last := ca.lastLog.Load()
	if now-last < int64(time.Second) || !ca.lastLog.CompareAndSwap(last, now) {
		return
	}
	log()
}

// receive handles one datagram.
func (ca *CallAgent) receive(b []byte, from netip.AddrPort) {
	if ca.cfg.Trace {
		ca.log.WithFields(logrus.Fields{"from": from.String(), "message": string(b)}).Info("mgcp recv")
	}
	msgs, err := parseDatagramInto(ca.msgs[:0], b)
	ca.msgs = msgs[:0]
	for _, m := range msgs {
		switch m := m.(type) {
		case *Response:
			ca.onResponse(m, from)
		case *Command:
			ca.onCommand(m, from)
		}
	}
	if err != nil {
		ca.onParseError(err, from)
	}
}

// onParseError answers a malformed command with the return code the
// parser found (RFC 3435 §3.4) when it came from an allowed address. What
// a remote party can cause costs a counter; a stranger's junk is not
// logged at all and an allowed peer's at most once a second, so a flood
// cannot fill the disk.
func (ca *CallAgent) onParseError(err error, from netip.AddrPort) {
	if ca.allow != nil && !ca.allow(from) {
		ca.stats.refused.Add(1) // a stranger's: refused, whatever it holds
		return
	}
	ca.stats.parseErrors.Add(1)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.TransactionID == 0 {
		ca.sampled(func() {
			ca.log.WithField("from", from.String()).WithError(err).Warn("dropped unparseable datagram")
		})
		return
	}
	ca.sampled(func() {
		ca.log.WithField("from", from.String()).WithError(err).WithField("mgcp_tx", pe.TransactionID).Warn("malformed command")
	})
	code := pe.ReturnCode()
	r := &Response{Code: code, TransactionID: pe.TransactionID, Comment: code.Text()}
	ca.mu.Lock()
	p := ca.getPeer(from)
	if p != nil {
		// Cache the error like any response so retransmissions get the
		// same answer.
		if c, ok := p.cache[pe.TransactionID]; ok && c.wire != nil {
			ca.mu.Unlock()
			_ = ca.write(c.wire, from)
			return
		}
		ca.store(p, pe.TransactionID, &cached{at: time.Now(), wire: r.AppendTo(nil)})
	}
	ca.mu.Unlock()
	_ = ca.write(r.AppendTo(nil), from)
}

func (ca *CallAgent) onResponse(r *Response, from netip.AddrPort) {
	if ca.allow != nil && !ca.allow(from) {
		// Strangers' answers are dropped here; a known peer's answer
		// must also come from the peer the command went to (below).
		ca.stats.refused.Add(1)
		return
	}
	ca.stats.responsesReceived.Add(1)
	ca.mu.Lock()
	if p := ca.peers[from]; p != nil {
		p.lastHeard = time.Now()
		ca.setState(from, p, PeerReachable)
		if r.Code == CodeResponseAck {
			// "000": the peer got our final response (§3.5.6).
			if c, ok := p.cache[r.TransactionID]; ok && c.acked != nil {
				close(c.acked)
				c.acked = nil
			}
			ca.mu.Unlock()
			return
		}
	}
	tx := ca.pending[r.TransactionID]
	if tx != nil && tx.peer != from.Addr().Unmap() {
		// Another peer's answer to a transaction id we gave someone
		// else: not an answer to ours. The port may differ (a gateway
		// may answer from another socket), the address may not.
		ca.stats.refused.Add(1)
		ca.mu.Unlock()
		return
	}
	if r.Code == CodeResponseAck {
		ca.mu.Unlock()
		return
	}
	// Delivered under ca.mu: a transaction leaves pending under it too,
	// so its state (recycled by do) is never reached once it ended.
	late := tx == nil || tx.done.Load() // no such transaction; or a duplicate final, or a provisional overtaken by the final
	if !late {
		if r.Code.IsProvisional() {
			select {
			case tx.prov <- struct{}{}:
			default:
			}
		} else if tx.done.CompareAndSwap(false, true) {
			tx.final <- r // buffered; only the first final is sent
		}
	}
	ca.mu.Unlock()
	if late {
		ca.stats.lateResponses.Add(1)
	}
	if r.Code.IsFinal() && r.AckRequested() {
		// Acknowledge every copy: if our 000 is lost the final response
		// comes again (§3.5.6).
		ca.stats.acksSent.Add(1)
		ack := Response{Code: CodeResponseAck, TransactionID: r.TransactionID}
		_ = ca.write(ack.AppendTo(make([]byte, 0, 16)), from)
	}
}

func (ca *CallAgent) onCommand(c *Command, from netip.AddrPort) {
	if ca.allow != nil && !ca.allow(from) {
		ca.stats.refused.Add(1)
		ca.sampled(func() {
			ca.log.WithFields(logrus.Fields{"from": from.String(), "verb": c.Verb}).Debug("command from unknown address dropped")
		})
		return
	}
	ca.stats.commandsReceived.Add(1)
	now := time.Now()
	ca.mu.Lock()
	p := ca.getPeer(from)
	if p == nil {
		ca.mu.Unlock()
		ca.stats.overloaded.Add(1)
		return
	}
	p.lastHeard = now
	ca.setState(from, p, PeerReachable)
	// K: lets us forget responses the peer confirmed (§3.5.6).
	for _, r := range c.ResponseAck {
		if r.To-r.From > 4096 {
			continue // implausible range; do not loop over it
		}
		for id := r.From; id <= r.To; id++ {
			if e, ok := p.cache[id]; ok && e.wire != nil && e.acked == nil {
				delete(p.cache, id)
			}
		}
	}
	if e, ok := p.cache[c.TransactionID]; ok {
		ca.stats.duplicates.Add(1)
		wire := e.wire
		if wire == nil {
			e.provSent = true
		}
		ca.mu.Unlock()
		if wire == nil {
			// Still executing: tell the peer it is in progress (§3.5.6).
			ca.stats.provisionalSent.Add(1)
			_ = ca.write(provisional(c.TransactionID), from)
			return
		}
		_ = ca.write(wire, from)
		return
	}
	entry := &cached{at: now}
	ca.store(p, c.TransactionID, entry)
	if ca.inflight >= ca.cfg.MaxInFlight {
		ca.stats.overloaded.Add(1)
		r := &Response{Code: CodeOverload, TransactionID: c.TransactionID, Comment: CodeOverload.Text()}
		entry.wire = r.AppendTo(nil)
		ca.mu.Unlock()
		_ = ca.write(entry.wire, from)
		return
	}
	if ca.ctx.Err() != nil {
		ca.mu.Unlock()
		return
	}
	ca.inflight++
	ca.mu.Unlock()
	ca.dispatch(work{c: c, from: from, e: entry})
}

// goAdd registers a goroutine with wg unless the CallAgent is closed.
func (ca *CallAgent) goAdd() bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.ctx.Err() != nil {
		return false
	}
	ca.wg.Add(1)
	return true
}

func provisional(id uint32) []byte {
	r := Response{Code: CodeInProgress, TransactionID: id, Comment: "In progress"}
	return r.AppendTo(make([]byte, 0, 32))
}

// store adds a cache entry, evicting the oldest finished ones beyond the
// cap. Must hold ca.mu.
func (ca *CallAgent) store(p *peer, id uint32, e *cached) {
	if p.cache == nil {
		p.cache = make(map[uint32]*cached)
	}
	for len(p.cache) >= ca.cfg.MaxCachedPerPeer && p.head < len(p.order) {
		old := p.order[p.head]
		p.head++
		if o, ok := p.cache[old]; ok && o.wire != nil {
			delete(p.cache, old)
		}
	}
	p.cache[id] = e
	p.order = append(p.order, id)
	if p.head > 1024 && p.head > len(p.order)/2 {
		p.order = append(p.order[:0], p.order[p.head:]...)
		p.head = 0
	}
}

// check applies the protocol checks the handler need not repeat: the
// verb is one the call agent serves and no critical extension is
// unknown (RFC 3435 §3.2.2: X+ parameters must be understood).
//
// Other unknown parameters get 539 (RFC 3435 §3.2.2); vendor X- and
// package "pkg/name" parameters are ignored as the RFC allows. Empty
// values of typed parameters, which the parser keeps in Extra, pass.
func check(c *Command) *Response {
	for _, x := range c.Extra {
		n := x.Name
		switch {
		case len(n) > 2 && (n[0] == 'X' || n[0] == 'x') && n[1] == '+':
			return &Response{Code: CodeUnknownExtension, TransactionID: c.TransactionID, Comment: "Unrecognized extension " + n}
		case len(n) > 2 && (n[0] == 'X' || n[0] == 'x') && n[1] == '-', strings.Contains(n, "/"):
		case paramID(n) != pUnknown:
		default:
			return &Response{Code: CodeInvalidParameter, TransactionID: c.TransactionID, Comment: "Unsupported parameter " + n}
		}
	}
	return nil
}

func (ca *CallAgent) execute(c *Command, from netip.AddrPort, e *cached) {
	// Built only when something is logged: this is the hot path.
	log := func() *logrus.Entry {
		return ca.log.WithFields(logrus.Fields{"mgcp_tx": c.TransactionID, "verb": string(c.Verb), "endpoint": c.Endpoint.String(), "from": from.String()})
	}
	hctx := &e.hctx
	hctx.Context = ca.ctx
	r := check(c)
	if r == nil {
		r = ca.call(hctx, c, from, log)
	}
	r.TransactionID = c.TransactionID
	ca.mu.Lock()
	ca.inflight--
	needAck := e.provSent
	if needAck {
		// After a provisional response the final one asks for "000"
		// (§3.5.6) and is repeated until it comes.
		r.ResponseAck = []AckRange{}
		e.acked = make(chan struct{})
	}
	wire := r.AppendTo(make([]byte, 0, 256))
	if len(wire) > ca.cfg.MaxDatagram {
		tooBig := Response{Code: CodeResponseTooBig, TransactionID: c.TransactionID, Comment: CodeResponseTooBig.Text(), Parameters: Parameters{ResponseAck: r.ResponseAck}}
		wire = tooBig.AppendTo(nil)
	}
	e.wire = wire
	e.at = time.Now()
	acked := e.acked
	ca.mu.Unlock()
	if err := ca.write(wire, from); err != nil {
		log().WithError(err).Debug("send response failed")
	}
	hctx.mu.Lock()
	after := hctx.after
	hctx.after, hctx.done = nil, true
	hctx.mu.Unlock()
	for _, f := range after {
		f()
	}
	if needAck {
		ca.awaitAck(wire, from, acked)
	}
}

// call runs the handler, turning a panic into a 400 so one bad command
// cannot take the call agent down.
func (ca *CallAgent) call(ctx context.Context, c *Command, from netip.AddrPort, log func() *logrus.Entry) (r *Response) {
	defer func() {
		if v := recover(); v != nil {
			log().WithField("panic", v).Error("handler panicked")
			r = NewResponse(c, CodeTransientError)
		}
	}()
	if ca.handler == nil {
		return NewResponse(c, CodeUnknownCommand)
	}
	r = ca.handler.HandleMGCP(ctx, from, c)
	if r == nil {
		log().Error("handler returned no response")
		return NewResponse(c, CodeTransientError)
	}
	return r
}

// awaitAck retransmits a final response until the peer's "000" arrives or
// the retransmission limits are reached.
func (ca *CallAgent) awaitAck(wire []byte, to netip.AddrPort, acked <-chan struct{}) {
	rto := ca.cfg.InitialRTO
	ca.mu.Lock()
	if p := ca.peers[to]; p != nil {
		rto = ca.rto(p)
	}
	ca.mu.Unlock()
	timer := time.NewTimer(rto)
	defer timer.Stop()
	start := time.Now()
	for tries := 0; ; tries++ {
		select {
		case <-acked:
			return
		case <-ca.ctx.Done():
			return
		case <-timer.C:
			if tries >= ca.cfg.Max2 || time.Since(start)+rto > ca.cfg.TMax {
				return
			}
			ca.stats.responseRetransmissions.Add(1)
			_ = ca.write(wire, to)
			rto = min(rto*2, ca.cfg.MaxRTO)
			timer.Reset(rto)
		}
	}
}

// janitor expires cached responses after THist and forgets idle peers.
func (ca *CallAgent) janitor() {
	period := max(ca.cfg.THist/4, 10*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ca.ctx.Done():
			return
		case now := <-t.C:
			ca.expire(now)
		}
	}
}

func (ca *CallAgent) expire(now time.Time) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var running []uint32
	for a, p := range ca.peers {
		running = running[:0]
		for p.head < len(p.order) {
			id := p.order[p.head]
			e, ok := p.cache[id]
			if ok && now.Sub(e.at) < ca.cfg.THist {
				break
			}
			p.head++
			switch {
			case !ok: // already forgotten through K:
			case e.wire != nil:
				if e.acked != nil {
					close(e.acked)
					e.acked = nil
				}
				delete(p.cache, id)
			default:
				// Still executing after THist: keep it, look again later.
				running = append(running, id)
			}
		}
		if p.head == len(p.order) {
			p.order, p.head = p.order[:0], 0
		}
		p.order = append(p.order, running...)
		if len(p.cache) == 0 && len(p.acks) == 0 && p.outstanding == 0 && p.queued == 0 &&
			now.Sub(p.lastHeard) > 10*ca.cfg.THist && p.state != PeerDisconnected {
			if (p.retransmissions > 0 || p.timeouts > 0) && len(ca.totals) < ca.cfg.MaxPeers {
				ca.totals[a] = [2]uint64{p.retransmissions, p.timeouts}
			}
			delete(ca.peers, a)
		}
	}
	for k, e := range ca.names {
		if now.After(e.expires) {
			delete(ca.names, k)
		}
	}
}
