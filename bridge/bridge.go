// Package bridge joins the MGCP call agent, the SIP side and the mapping
// rules: each configured line is an MGCP endpoint owned by one goroutine
// and a SIP identity; calls are translated between the two (signalling
// and SDP), while media flows directly between gateway and far end.
package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// Config wires a Bridge.
type Config struct {
	CallAgent *mgcp.CallAgent
	SIP       *sip.Stack // nil: lines work only with local switching
	Rules     *mapping.Holder
	Log       *logrus.Entry
	// NotifiedEntity is N: given to gateways (default "mgsip@" + the call
	// agent's address).
	NotifiedEntity string
	// RingTimeout ends an unanswered incoming call with 480 (default 60 s).
	RingTimeout time.Duration
	// ToneTimeout: after a failed or ended call the off-hook phone hears
	// reorder this long, then the off-hook warning (default 30 s).
	ToneTimeout time.Duration
	// NoAnswerTimeout ends an outgoing call the far end lets ring (CANCEL,
	// reorder to the caller; default 3 min, negative: none).
	NoAnswerTimeout time.Duration
	// PeerDownFor is how long a SIP peer that did not answer an INVITE
	// (no response, 408, 503) counts as down, so that the next calls go
	// to local fallback or congestion at once (default 30 s).
	PeerDownFor time.Duration
	// Register makes lines whose peer asks for it register (default on in
	// cmd; tests switch it as needed).
	Register bool
	// TrustGateway, if set, says whether a command for gw's endpoints may
	// come from an address (cmd resolves gateway names); without it the
	// gateway's address must match when it is an IP literal.
	TrustGateway func(gw *mapping.GatewayRule, from netip.AddrPort) bool
	// TransferTimeout: a blind transfer whose final NOTIFY has not come
	// this long after the REFER rings the phone back (default 30 s).
	TransferTimeout time.Duration
	// OnCall, if set, is called when a call ends (for logs, metrics, demos).
	OnCall func(CallRecord)
	// OnStormOver, if set, is called (on its own goroutine) when the
	// start-up audits, or the work of an RSIP or of a gateway's return,
	// had more lines waiting than run at once and the last of them is
	// done (storm.go): the moment the memory such a burst used is free.
	OnStormOver func(lines int) // lines: the pieces of work handed out, about one per line
	// OnAnswer, if set, is called when a call leg is answered (line id,
	// direction), for the calls-set-up metric; it must not block.
	OnAnswer func(line, direction string)
	// OnRegistration, if set, is called (on its own goroutine) after each
	// change of a line's registration.
	OnRegistration func(line string, st sip.RegStatus)
	// Owns, if set, says whether this node drives gw (several nodes on
	// etcd, docs/cluster.md): the lines of a gateway it does not own are
	// not started (audited, armed, registered) and not probed until
	// GatewayOwned(name, true).
	Owns func(gw *mapping.GatewayRule) bool
	// Calls, if set, keeps the state of connected calls where another
	// node can load it after a takeover (persist.go, takeover.go).
	Calls CallStore
}

// CallRecord summarizes an ended call leg (one line's side of a call);
// CDR gives its call detail record.
type CallRecord struct {
	Line      string
	Direction string // "outgoing", "incoming", "local"
	Number    string // dialled or calling number
	SIPCallID string
	MGCPCall  string
	Answered  bool
	Result    string           // "answered", "busy", "no answer", "cancelled", status text...
	Duration  time.Duration    // talk time when answered, else the whole attempt
	Setup     time.Duration    // from the start to the answer (answered calls)
	Stats     []mgcp.ConnParam // P: of the DLCX response

	Start, Answer, End time.Time // Answer is zero for an unanswered call
	Gateway, Endpoint  string
	Calling, Called    string // after rewriting
	Dialled            string // as dialled on the phone (outgoing), or the request URI's user (incoming)
	ConnectionID       string
	GatewaySDP         []byte // the gateway's last LocalConnectionDescriptor
	AnswerSDP          []byte // the far end's answer to our offer (outgoing calls): the codec chosen
	SIPStatus          int    // final status of the INVITE (0: no SIP leg)
	ByeReason          string // the Reason header of our BYE, when there was one
	MGCPCode           int    // return code of a failed CRCX/MDCX, or the reason code of the gateway's DLCX
	GatewayFailed      bool   // a CRCX or MDCX of the call failed, refused or unanswered
	Waiting, Transfer  bool
}

// Bridge owns the lines.
type Bridge struct {
	cfg  Config
	log  *logrus.Entry
	regs *sip.Registrations

	mu          sync.Mutex
	lines       map[string]*line   // by lower-case endpoint name
	byUser      map[string]*line   // by SIP user
	byID        map[string]*line   // by line id
	replacing   map[string]*line   // by endpoint key: the successor a reload gave a line (reload.go)
	trunks      map[string][]*line // trunk group name -> channels in hunting order
	nextHunt    map[string]int     // round-robin position per trunk group
	gwAddr      map[string]string
	health      map[string]*gatewayHealth // by gateway name
	peers       map[string]*peerHealth    // SIP peers by name
	ready       chan struct{}             // closed once Run created the lines
	stopped     chan struct{}             // closed when Run returns
	sends       sync.WaitGroup            // in-dialog senders (BYE, INFO) still at work
	ctx         context.Context
	stopping    bool           // no line goroutine may start any more
	draining    bool           // no new calls (shutdown)
	wg          sync.WaitGroup // line goroutines
	runners     *runners       // the goroutines that run them (runner.go)
	refused     atomic.Uint64  // commands from an address not the gateway's
	unknownX    atomic.Uint64  // NTFYs under a request id never issued
	logForeign  sampler        // commands from another address
	logPort     sampler        // commands from another source port
	logUnknownX sampler        // NTFYs under a request id never issued
	active      atomic.Int64
	dialogs     sync.Map                // *sip.Dialog -> *line: the line serving each dialog (the REFER gate)
	persist     *persister              // Config.Calls behind its queue (nil without)
	pending     map[string][]StoredCall // by gateway: stored calls acquired before Run started the lines
	storm       storm                   // start-up, RSIP and gateway-back work for many lines, a bounded number at a time (storm.go)
}

// New builds a bridge for the rules in cfg.Rules; Run starts it.
func New(cfg Config) (*Bridge, error) {
	if cfg.CallAgent == nil || cfg.Rules == nil || cfg.Rules.Load() == nil {
		return nil, errors.New("bridge: a call agent and rules are required")
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 60 * time.Second
	}
	if cfg.ToneTimeout == 0 {
		cfg.ToneTimeout = 30 * time.Second
	}
	if cfg.NoAnswerTimeout == 0 {
		cfg.NoAnswerTimeout = 3 * time.Minute
	}
	if cfg.TransferTimeout <= 0 {
		cfg.TransferTimeout = 30 * time.Second
	}
	if cfg.PeerDownFor == 0 {
		cfg.PeerDownFor = 30 * time.Second
	}
	if cfg.NotifiedEntity == "" {
		cfg.NotifiedEntity = "mgsip@" + cfg.CallAgent.LocalAddr().String()
	}
	b := &Bridge{cfg: cfg, log: cfg.Log, lines: map[string]*line{}, byUser: map[string]*line{}, byID: map[string]*line{},
		replacing: map[string]*line{},
		trunks:    map[string][]*line{}, nextHunt: map[string]int{}, gwAddr: map[string]string{},
		health: map[string]*gatewayHealth{}, peers: map[string]*peerHealth{}, ready: make(chan struct{}), stopped: make(chan struct{}),
		runners: newRunners()}
	if cfg.Calls != nil {
		b.persist = newPersister(cfg.Calls, cfg.Log.WithField("component", "callstore"))
	}
	if cfg.SIP != nil {
		b.regs = cfg.SIP.NewRegistrations(sip.RegistrationConfig{OnChange: cfg.OnRegistration})
		cfg.SIP.SetMWIHandler(b.onMWI)
		cfg.SIP.SetReferGate(b.referGate)
	}
	return b, nil
}

// Ready is closed once Run has set up the lines; commands that arrive
// before are answered 400 (transient), which gateways retry.
func (b *Bridge) Ready() <-chan struct{} { return b.ready }

// Registrations exposes the lines' registration state.
func (b *Bridge) Registrations() *sip.Registrations { return b.regs }

// ActiveCalls counts calls in progress.
func (b *Bridge) ActiveCalls() int64 { return b.active.Load() }

// Run starts every line's owner goroutine (audit, arm, register) and
// serves until ctx ends; then calls are hung up and lines unregistered.
func (b *Bridge) Run(ctx context.Context) error {
	b.mu.Lock()
	b.ctx = ctx
	rules := b.cfg.Rules.Load()
	for _, lr := range rules.Lines {
		l := newLine(b, lr)
		b.lines[strings.ToLower(l.ep.String())] = l
		b.byUser[lr.User] = l
		b.byID[lr.ID] = l
	}
	for _, tr := range rules.Trunks {
		for _, ep := range tr.Endpoints {
			l := newTrunkChannel(b, tr, ep)
			b.lines[strings.ToLower(l.ep.String())] = l
			b.byID[l.rule.ID] = l
			b.trunks[tr.Name] = append(b.trunks[tr.Name], l)
		}
	}
	lines := make([]*line, 0, len(b.lines))
	for _, l := range b.lines {
		lines = append(lines, l)
	}
	b.mu.Unlock()
	close(b.ready)
	regDone := make(chan error, 1)
	if b.regs != nil {
		go func() { regDone <- b.regs.Run(ctx) }()
	} else {
		regDone <- nil
	}
	for _, l := range lines {
		b.start(l)
	}
	b.endPendingUnserved()
	kaDone := make(chan struct{})
	go func() { defer close(kaDone); b.keepalive(ctx) }()
	var writers sync.WaitGroup
	wctx, stopWriters := context.WithCancel(context.Background())
	if b.persist != nil {
		for range 4 {
			writers.Add(1)
			go func() { defer writers.Done(); b.persist.run(wctx) }()
		}
	}
	<-ctx.Done()
	<-kaDone
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	b.wg.Wait()
	b.runners.close()
	if b.persist != nil {
		// The calls hung up at shutdown leave the store (2 s at most).
		b.persist.flush(2 * time.Second)
	}
	stopWriters()
	writers.Wait()
	// The BYEs of the calls hung up go out while the SIP stack still
	// serves (the daemon stops it after Run returns); 5 s at most.
	sent := make(chan struct{})
	go func() { b.sends.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
	}
	close(b.stopped)
	return <-regDone
}

// track counts a line goroutine about to start; false once stopping.
func (b *Bridge) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return false
	}
	b.wg.Add(1)
	return true
}

// start audits and arms a new line and registers its account.
func (b *Bridge) start(l *line) {
	if !b.owns(l.rule.Gateway) {
		return
	}
	if stored := b.pendingCalls(l); len(stored) > 0 {
		l.postWait(func() { l.takeOver(stored) })
	} else {
		b.stormPost(l, l.begin)
	}
	if b.regs != nil && b.cfg.Register && l.rule.Peer != nil && l.rule.Peer.Register {
		b.regs.Add(l.account())
	}
}

// Apply is Update for callers that only count: lines added and retired.
func (b *Bridge) Apply(rules *mapping.Rules) (added, retired int) {
	rep := b.Update(rules)
	return len(rep.Added), len(rep.Removed)
}

// lineByEndpoint finds the line of an endpoint name.
func (b *Bridge) lineByEndpoint(name string) *line {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines[strings.ToLower(name)]
}

func (b *Bridge) lineByUser(user string) *line {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byUser[user]
}

// gatewayAddr returns where commands for a gateway go: the configured
// address, else the one it was last heard from.
func (b *Bridge) gatewayAddr(gw *mapping.GatewayRule) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gatewayAddrLocked(gw)
}

func (b *Bridge) gatewayAddrLocked(gw *mapping.GatewayRule) string {
	learned := b.gwAddr[strings.ToLower(gw.Domain)]
	if gw.Address != "" && !gw.Learn {
		return net.JoinHostPort(gw.Address, strconv.Itoa(gw.Port))
	}
	if learned != "" {
		return learned
	}
	return net.JoinHostPort(gw.Address, strconv.Itoa(gw.Port))
}

func (b *Bridge) newCallID() string {
	return randomHex() // C: (RFC 3435 §3.2.2.2), not guessable
}

// HandleMGCP serves commands from gateways (mgcp.Handler): it routes each
// to the owning line and answers at once.
func (b *Bridge) HandleMGCP(ctx context.Context, from netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
	select {
	case <-b.ready:
	default:
		return &mgcp.Response{Code: mgcp.CodeTransientError, TransactionID: cmd.TransactionID, Comment: "starting"}
	}
	rules := b.cfg.Rules.Load()
	gw := rules.GatewayByDomain(cmd.Endpoint.Domain)
	if gw == nil {
		return &mgcp.Response{Code: mgcp.CodeEndpointUnknown, TransactionID: cmd.TransactionID, Comment: "unknown gateway"}
	}
	if gw.SourcePort != 0 && int(from.Port()) != gw.SourcePort && b.trustsAddr(gw, from) {
		// The gateway's address, but not its source_port.
		b.refused.Add(1)
		b.logPort.do(func() {
			b.log.WithFields(logrus.Fields{"gateway": gw.Name, "from": from.String(), "source_port": gw.SourcePort, "verb": string(cmd.Verb)}).
				Warn("command from the gateway's address but not its source_port refused")
		})
		return &mgcp.Response{Code: mgcp.CodeEndpointUnknown, TransactionID: cmd.TransactionID, Comment: "not from the gateway's source port"}
	}
	if !b.trusts(gw, from) {
		// Another gateway (or a spoofer with an allowed address) speaks
		// for endpoints that are not its own (RFC 3435 §5).
		b.refused.Add(1)
		b.logForeign.do(func() {
			b.log.WithFields(logrus.Fields{"gateway": gw.Name, "from": from.String(), "verb": string(cmd.Verb)}).
				Warn("command for a gateway's endpoint from another address refused")
		})
		return &mgcp.Response{Code: mgcp.CodeEndpointUnknown, TransactionID: cmd.TransactionID, Comment: "not this gateway's endpoint"}
	}
	if cmd.Verb == mgcp.VerbDLCX {
		if r := b.checkDelete(cmd); r != nil {
			return r
		}
	}
	b.mu.Lock()
	b.gwAddr[strings.ToLower(gw.Domain)] = from.String()
	h := b.healthOf(gw)
	wasDown := h.down
	h.down, h.timeouts, h.lastOK = false, 0, time.Now()
	b.mu.Unlock()
	if wasDown && !resyncsAll(cmd) {
		// A command from a gateway marked down proves it is back: its
		// lines are audited again, since connections of calls that ended
		// while it was down were not deleted (a line sends nothing to a
		// gateway that is down). The keepalive no longer sees the gateway
		// down once this command has marked it up.
		go b.markUp(gw)
	}
	ok := &mgcp.Response{Code: mgcp.CodeOK, TransactionID: cmd.TransactionID}
	switch cmd.Verb {
	case mgcp.VerbRSIP:
		// Answered first: the lines' audits and re-arming start once the
		// 200 is on the wire, and queue behind the gateway's transaction
		// window, so a storm of RSIPs is not retransmitted for want of
		// an answer.
		mgcp.AfterResponse(ctx, func() { b.restart(gw, cmd) })
		return ok
	case mgcp.VerbNTFY, mgcp.VerbDLCX:
		l := b.lineByEndpoint(cmd.Endpoint.String())
		if l == nil {
			return &mgcp.Response{Code: mgcp.CodeEndpointUnknown, TransactionID: cmd.TransactionID, Comment: "endpoint unknown"}
		}
		if cmd.Verb == mgcp.VerbNTFY && !l.issued.knows(cmd.RequestID) {
			return b.unknownRequest(l, from, cmd)
		}
		// Never refused for a full queue: the gateway has sent its NTFY
		// and waits in lock-step for our next request, which only the
		// line can send once it has seen this one.
		f := func() { l.onCommand(cmd) }
		if !l.post(f) {
			go l.postWait(f)
		}
		return ok
	}
	return &mgcp.Response{Code: mgcp.CodeUnknownCommand, TransactionID: cmd.TransactionID}
}

// resyncsAll reports whether cmd is an RSIP after which every line of
// the gateway audits its endpoint anyway (RFC 3435 §4.4.6): a wildcard
// restart, forced, disconnected or cancel-graceful. A graceful RSIP
// audits nothing, and one endpoint's RSIP only that endpoint.
func resyncsAll(cmd *mgcp.Command) bool {
	return cmd.Verb == mgcp.VerbRSIP && cmd.Endpoint.IsWildcard() && cmd.RestartMethod != mgcp.RestartGraceful
}

// unknownRequest answers an NTFY whose X: the line never issued: 538
// (RFC 3661: event parameter error, "unknown" among its examples; the
// observed events answer no request of ours), and nothing it
// reports is acted on (RFC 3435 §5: a forged or stale notification must
// not drive the line). The gateway may still wait in lock-step for a
// request, so the line sends its current one again; at most one such
// re-synchronisation is queued at a time, so a flood of them costs the
// gateway one request per round trip.
func (b *Bridge) unknownRequest(l *line, from netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
	b.unknownX.Add(1)
	b.logUnknownX.do(func() {
		b.log.WithFields(logrus.Fields{"endpoint": cmd.Endpoint.String(), "from": from.String(), "request_id": cmd.RequestID}).
			Warn("NTFY under a request id this call agent never issued refused")
	})
	if l.issued.resync.CompareAndSwap(false, true) {
		l.post(func() {
			l.issued.resync.Store(false)
			l.notified = true
		})
	}
	// Not 539 or 510: a peer that sent K: takes those as a refusal of its
	// response acknowledgements and sends the command again without them.
	return &mgcp.Response{Code: mgcp.CodeEventParameterError, TransactionID: cmd.TransactionID, Comment: "unknown request identifier"}
}

// UnknownRequests counts NTFYs refused because their X: was never issued.
func (b *Bridge) UnknownRequests() uint64 { return b.unknownX.Load() }

// trusts reports whether a command for gw's endpoints may come from
// from: from the gateway's source port when one is configured, and from
// the configured check (cmd resolves names), else the gateway's
// address when it is an IP literal; a gateway whose address is learnt
// is trusted from anywhere the call agent's authorizer lets through.
func (b *Bridge) trusts(gw *mapping.GatewayRule, from netip.AddrPort) bool {
	if gw.SourcePort != 0 && int(from.Port()) != gw.SourcePort {
		return false
	}
	return b.trustsAddr(gw, from)
}

// trustsAddr is trusts without the source port.
func (b *Bridge) trustsAddr(gw *mapping.GatewayRule, from netip.AddrPort) bool {
	if b.cfg.TrustGateway != nil {
		return b.cfg.TrustGateway(gw, from)
	}
	if gw.Learn {
		return true
	}
	a, err := netip.ParseAddr(gw.Address)
	if err != nil {
		return true // a name: cmd's check resolves it
	}
	return a.Unmap() == from.Addr().Unmap()
}

// checkDelete answers a gateway's DLCX that does not name a connection
// of the line (RFC 3435 §2.3.8: the gateway names the connection it
// deleted, and its call): 515 for a missing or unknown I:, 516 for a C:
// that is not the connection's call. nil: the DLCX may go to the line.
func (b *Bridge) checkDelete(cmd *mgcp.Command) *mgcp.Response {
	l := b.lineByEndpoint(cmd.Endpoint.String())
	if l == nil {
		return nil // answered 500 below
	}
	if cmd.ConnectionID == "" {
		return &mgcp.Response{Code: mgcp.CodeIncorrectConnectionID, TransactionID: cmd.TransactionID, Comment: "I: required"}
	}
	conns := l.conns.Load()
	if conns != nil {
		for _, c := range *conns {
			if !strings.EqualFold(c.conn, cmd.ConnectionID) {
				continue
			}
			if cmd.CallID != "" && !strings.EqualFold(c.call, cmd.CallID) {
				return &mgcp.Response{Code: mgcp.CodeUnknownCallID, TransactionID: cmd.TransactionID}
			}
			return nil
		}
	}
	return &mgcp.Response{Code: mgcp.CodeIncorrectConnectionID, TransactionID: cmd.TransactionID, Comment: "no such connection on the endpoint"}
}

// sampler runs a log line at most once a second: what a remote party can
// cause costs a counter, not a log line each. Each kind of event has its
// own, so that one kind does not silence another.
type sampler struct{ last atomic.Int64 }

func (s *sampler) do(log func()) {
	now := time.Now().UnixNano()
	last := s.last.Load()
	if now-last < int64(time.Second) || !s.last.CompareAndSwap(last, now) {
		return
	}
	log()
}

// Refused counts commands refused because they came from another
// gateway's address.
func (b *Bridge) Refused() uint64 { return b.refused.Load() }

// restart handles RSIP for one endpoint or a wildcard: that gateway's
// calls end and its lines are audited and re-armed (RFC 3435 §2.3.12).
func (b *Bridge) restart(gw *mapping.GatewayRule, cmd *mgcp.Command) {
	var lines []*line
	if cmd.Endpoint.IsWildcard() {
		lines = b.linesOf(gw)
	} else if l := b.lineByEndpoint(cmd.Endpoint.String()); l != nil && l.rule.Gateway.Name == gw.Name {
		// One endpoint's RSIP (RFC 3435 §2.3.12 lets each endpoint
		// restart alone) is looked up: walking every line for each of
		// them made a storm of per-endpoint RSIPs quadratic (10,000
		// lines: 20 s of CPU in this loop).
		lines = []*line{l}
	}
	for _, l := range lines {
		if cmd.Endpoint.Matches(l.ep) {
			// What the line still waits for (a start-up audit the silent
			// gateway never answered) is moot now: the restart audits
			// again (a graceful one does not, so it lets it finish).
			if cmd.RestartMethod != mgcp.RestartGraceful {
				l.supersede()
			}
			// Never lost, never blocking the answer; queued behind a
			// bounded number of lines at work (storm.go).
			b.stormPost(l, func() { l.onRestart(cmd.RestartMethod) })
		}
	}
}

// onMWI lights or clears the message-waiting lamp of the line whose
// account the NOTIFY is for (RFC 3842 -> L/vmwi, RFC 3660 §2.4).
func (b *Bridge) onMWI(m sip.MWI) {
	l := b.lineByUser(m.User)
	if l == nil || !l.rule.Features.MWI {
		return
	}
	l.postWait(func() { l.setMWI(m.Waiting) })
}

// peerOf names the configured peer a request came from ("" if none).
func (b *Bridge) peerOf(rules *mapping.Rules, source string) string {
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return ""
	}
	ip := ap.Addr().Unmap()
	for _, p := range rules.Peers {
		for _, pfx := range p.Addresses {
			if pfx.Contains(ip) {
				return p.Name
			}
		}
		if a, err := netip.ParseAddr(p.Host); err == nil && a.Unmap() == ip {
			return p.Name
		}
	}
	return ""
}

// ServeDialog serves an inbound SIP call (sip.Handler): the inbound
// routes say which line or trunk group takes it; that line, or the
// first free channel of the group in its hunting order, serves it for
// its lifetime.
func (b *Bridge) ServeDialog(d *sip.Dialog) {
	rules := b.cfg.Rules.Load()
	peer := b.peerOf(rules, d.Source())
	if err := d.SetPRACK(prackMode(rules.Peer(peer))); err != nil {
		return // refused with 421: the peer's prack is required
	}
	if rep := d.Header("Replaces"); rep != "" {
		b.serveReplaces(d, rep) // RFC 3891: replaces a line's call, or is refused
		return
	}
	target, ok := rules.RouteInbound(peer, d.RequestUser())
	if !ok && peer != "" {
		target, ok = rules.RouteInbound("", d.RequestUser())
	}
	if !ok {
		// A line's own account, whatever peer the call came through.
		if l := b.lineByUser(d.RequestUser()); l != nil {
			target, ok = mapping.InboundTarget{Line: l.rule}, true
		}
	}
	switch {
	case !ok:
		_ = d.Reject(404, "Not Found")
	case target.Line != nil:
		b.mu.Lock()
		l := b.byID[target.Line.ID]
		b.mu.Unlock()
		if l == nil {
			_ = d.Reject(404, "Not Found")
			return
		}
		done := make(chan struct{})
		if !l.post(func() { l.onInvite(d, done) }) {
			_ = d.Reject(486, "Busy Here")
			return
		}
		b.await(done)
	case target.Trunk != nil:
		b.serveTrunk(d, target.Trunk)
	case target.HuntGroup != nil:
		b.serveHunt(d, target.HuntGroup)
	}
}

// huntLines returns the running lines of a hunt group, in its order.
func (b *Bridge) huntLines(hg *mapping.HuntGroupRule) []*line {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []*line
	for _, lr := range hg.Lines {
		if l := b.byID[lr.ID]; l != nil {
			lines = append(lines, l)
		}
	}
	return lines
}

// serveHunt offers the call to the group's lines in order (linear) or
// starting after the last line chosen (round-robin) until an idle one
// rings, or to all at once (ring-all, fork.go). All busy -> 486.
func (b *Bridge) serveHunt(d *sip.Dialog, hg *mapping.HuntGroupRule) {
	if hg.Strategy == "ring-all" {
		b.serveRingAll(d, hg)
		return
	}
	lines := b.huntLines(hg)
	b.mu.Lock()
	start := 0
	if hg.Strategy == "round-robin" && len(lines) > 0 {
		start = b.nextHunt["hunt/"+hg.Name] % len(lines)
		b.nextHunt["hunt/"+hg.Name] = start + 1
	}
	b.mu.Unlock()
	for i := range lines {
		l := lines[(start+i)%len(lines)]
		taken := make(chan bool, 1)
		done := make(chan struct{})
		if !l.post(func() { l.onHuntInvite(d, done, taken) }) {
			continue
		}
		if b.awaitTaken(taken) {
			b.await(done)
			return
		}
	}
	_ = d.Reject(486, "Busy Here")
}

// serveTrunk offers the call to the group's channels in hunting order
// until one takes it.
func (b *Bridge) serveTrunk(d *sip.Dialog, tr *mapping.TrunkRule) {
	b.mu.Lock()
	chans := append([]*line(nil), b.trunks[tr.Name]...)
	start := 0
	if tr.Hunting == "round-robin" && len(chans) > 0 {
		start = b.nextHunt[tr.Name] % len(chans)
		b.nextHunt[tr.Name] = start + 1
	}
	b.mu.Unlock()
	for i := range chans {
		l := chans[(start+i)%len(chans)]
		taken := make(chan bool, 1)
		done := make(chan struct{})
		if !l.post(func() { l.onHuntInvite(d, done, taken) }) {
			continue
		}
		if b.awaitTaken(taken) {
			b.await(done)
			return
		}
	}
	_ = d.Reject(503, "All Trunk Channels Busy")
}

// await waits for a call's end, or for the bridge to stop (a line that
// stopped never ends the calls still queued for it).
func (b *Bridge) await(done <-chan struct{}) {
	select {
	case <-done:
	case <-b.stopped:
	}
}

// awaitTaken waits for a line's answer to a hunt offer (false when the
// bridge stops first).
func (b *Bridge) awaitTaken(taken <-chan bool) bool {
	select {
	case ok := <-taken:
		return ok
	case <-b.stopped:
		return false
	}
}

// FormatStats writes DLCX connection statistics as on the wire (P: line,
// RFC 3435 §3.2.2.7): "PS=50, OS=8000, PR=50, OR=8000".
func FormatStats(ps []mgcp.ConnParam) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Name + "=" + p.Value
	}
	return strings.Join(parts, ", ")
}

func (b *Bridge) record(r CallRecord) {
	b.log.WithFields(logrus.Fields{"line": r.Line, "direction": r.Direction, "number": r.Number,
		"sip_call_id": r.SIPCallID, "call": r.MGCPCall, "result": r.Result, "duration_ms": r.Duration.Milliseconds(),
		"stats": FormatStats(r.Stats)}).Info("call ended")
	if b.cfg.OnCall != nil {
		b.cfg.OnCall(r)
	}
}
