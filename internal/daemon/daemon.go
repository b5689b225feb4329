// Package daemon runs mgsip: the MGCP call agent, the SIP stack, the
// bridge between them, the tap and the admin API under one errgroup, with
// reload (SIGHUP), drain (SIGTERM) and systemd notifications.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/admin"
	"github.com/mgsip/mgsip/internal/cdr"
	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/metrics"
	"github.com/mgsip/mgsip/internal/trace"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// Options configure a run of the daemon.
type Options struct {
	// ConfigPath is the configuration file, re-read on reload.
	ConfigPath string
	// Config is ConfigPath as loaded and checked at start.
	Config *config.Loaded
	Log    *logrus.Logger
	Reload <-chan struct{}
	// Stop delivers SIGTERM/SIGINT: the first drains, the second stops.
	Stop <-chan os.Signal
	// Ready, if set, receives the call agent's address once serving;
	// AdminReady the admin API's.
	Ready      chan<- net.Addr
	AdminReady chan<- net.Addr
	// Reloaded, if set, receives the result of each reload.
	Reloaded chan<- error
	// LogFromFlags: the command line set the log level or format, so
	// the file's log section is not applied (on reload either).
	LogFromFlags bool
	// AllowEmpty lets a reload accept a file that configures nothing
	// (--allow-empty); without it such a file is rejected and the running
	// rules stay.
	AllowEmpty bool
}

// daemon is the running service: the MGCP call agent, the SIP stack, the
// bridge between them and the admin API, under one errgroup.
type daemon struct {
	freeMu     sync.Mutex
	freeTimer  *time.Timer // returns a storm's memory to the OS (onStormOver)
	log        *logrus.Logger
	configPath string
	rules      *mapping.Holder
	ca         *mgcp.CallAgent
	stack      *sip.Stack
	bridge     *bridge.Bridge
	tap        *trace.Tapper
	metrics    *metrics.Metrics
	cdrs       *cdr.Log
	allowEmpty bool
	drainFor   time.Duration

	reloadMu sync.Mutex
	// started is the configuration mgsip started with, current the one
	// of the last reload (owned by reload, under reloadMu).
	started, current config.File
	logFromFlags     bool
	mu               sync.RWMutex
	allowed          map[netip.Addr]bool // gateway addresses; nil accepts any (a gateway learns its address)
	// gatewayAddrs: each gateway's addresses (a nil set: learnt, any);
	// a command for a gateway's endpoints must come from one of them.
	gatewayAddrs map[string]map[netip.Addr]bool
	peers        []netip.Prefix            // SIP peers' addresses
	peerState    map[string]admin.PeerView // SIP peers by name, from the OPTIONS probes
	lastRSIP     map[string]time.Time
	regFailures  map[string]int // consecutive failures last reported per line
	readyWhen    config.Ready

	// node is this daemon's membership of a cluster (nil: alone).
	node        *cluster.Node
	redirected  atomic.Uint64 // commands answered 521 (another node owns the gateway)
	fencedDrops atomic.Uint64 // commands not sent: the gateway is not ours
	left        atomic.Bool   // leaveCluster ran
	fencedCalls atomic.Uint64 // call-state writes refused: the gateway is not ours
	own         ownership     // ownership changes on their way to the bridge (callstore.go)
}

// traceFilter builds the wire trace's filter for lines (ids) and
// gateways (names) of the running rules.
func (d *daemon) traceFilter(lines, gateways []string) (*trace.Filter, error) {
	rules := d.rules.Load()
	f := &trace.Filter{Endpoints: map[string]bool{}, Domains: map[string]bool{}, Users: map[string]bool{},
		Lines: lines, Gateways: gateways}
	for _, id := range lines {
		l := rules.LineByID(id)
		if l == nil {
			return nil, fmt.Errorf("no line %q", id)
		}
		f.Endpoints[strings.ToLower(l.EndpointName())] = true
		if l.User != "" {
			f.Users[l.User] = true
		}
	}
	for _, name := range gateways {
		g := rules.Gateway(name)
		if g == nil {
			return nil, fmt.Errorf("no gateway %q", name)
		}
		f.Domains[strings.ToLower(g.Domain)] = true
		for _, l := range rules.Lines {
			if l.Gateway == g && l.User != "" {
				f.Users[l.User] = true
			}
		}
	}
	return f, nil
}

// sipGate is what the SIP gate turned away, by action.
func (d *daemon) sipGate() map[string]uint64 {
	g := d.stack.Stats()
	return map[string]uint64{"forbidden": g.Forbidden, "stranger_dropped": g.StrangerDropped, "limited": g.Limited,
		"bad_ack": g.BadAcks, "rejected": g.Rejected, "dropped": g.OtherDropped}
}

// onCall takes an ended call leg's record: metrics and the CDR store.
// stormSettle is how long after a storm of line work (start-up audits,
// a gateway's RSIPs) its memory is handed back: the REGISTER transactions
// it started keep their requests for 64 x T1 (RFC 3261 §17.1.2.2, Timer
// F/K; 32 s with the default T1), then they are garbage.
const stormSettle = 40 * time.Second

// onStormOver returns, once the storm has settled, the memory it used to
// the operating system. Go's runtime keeps freed heap up to its next GC
// goal and gives it back slowly, so after the start-up of 100,000 lines
// the process would stay at twice its live heap; one forced collection
// and scavenge (debug.FreeOSMemory, a few hundred milliseconds of CPU
// for 100,000 lines) brings RSS down to what the idle lines hold
// (docs/benchmarks.md). Storms close together share one.
func (d *daemon) onStormOver(lines int) {
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	if d.freeTimer != nil {
		d.freeTimer.Stop()
	}
	d.freeTimer = time.AfterFunc(stormSettle, func() {
		start := time.Now()
		debug.FreeOSMemory()
		d.log.WithFields(logrus.Fields{"component": "daemon", "lines": lines, "took_ms": time.Since(start).Milliseconds()}).
			Info("memory of the line storm returned to the system")
	})
}

// stopFreeTimer cancels a pending onStormOver when the daemon stops.
func (d *daemon) stopFreeTimer() {
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	if d.freeTimer != nil {
		d.freeTimer.Stop()
	}
}

func (d *daemon) onCall(r bridge.CallRecord) {
	d.metrics.Call(r)
	d.cdrs.Record(r)
}

// Run serves until ctx ends or a stop signal has drained the calls.
func Run(ctx context.Context, opts Options) (retErr error) {
	cfg, log := opts.Config, opts.Log
	var err error
	d := &daemon{log: log, configPath: opts.ConfigPath, rules: mapping.NewHolder(cfg.Rules), metrics: metrics.New(),
		allowEmpty: opts.AllowEmpty, drainFor: cfg.File.Daemon.DrainTimeout, lastRSIP: map[string]time.Time{},
		readyWhen: cfg.File.Daemon.Ready, started: cfg.File, current: cfg.File, logFromFlags: opts.LogFromFlags}
	defer applyGC(cfg.File.Daemon, log)()
	d.tap = &trace.Tapper{Log: log.WithField("component", "trace"), OnMessage: d.metrics.Message}
	d.tap.TraceMGCP.Store(cfg.File.MGCP.Trace)
	d.tap.TraceSIP.Store(cfg.File.SIP.Trace)
	if p := cfg.File.Trace.Pcap; p != "" {
		if d.tap.Pcap, err = trace.NewPcapWriter(p, cfg.File.Trace.PcapMaxBytes, cfg.File.Trace.PcapKeep); err != nil {
			return fmt.Errorf("trace.pcap: %w", err)
		}
		defer d.tap.Pcap.Close()
	}
	if h := cfg.File.Trace.HEP; h != "" {
		t := cfg.File.Trace
		if d.tap.HEP, err = trace.NewHEPSender(trace.HEPOptions{Collector: h, NodeID: t.HEPNodeID, NodeName: t.HEPNodeName,
			Password: t.HEPPassword.Reveal()}); err != nil {
			return fmt.Errorf("trace.hep: %w", err)
		}
		defer d.tap.HEP.Close()
	}
	cc := cfg.File.CDR
	if d.cdrs, err = cdr.Open(cdr.Config{File: cc.File, MaxSizeMB: cc.MaxSizeMB, MaxFiles: cc.MaxFiles, Keep: cc.Keep}); err != nil {
		return err
	}
	defer d.cdrs.Close()
	defer d.stopFreeTimer()
	var cdrLogged atomic.Int64
	d.cdrs.OnWriteError = func(err error) {
		if now := time.Now().Unix(); cdrLogged.Swap(now) != now { // one line a second
			log.WithError(err).WithField("file", cc.File).Error("CDR not written to the file (kept in memory)")
		}
	}
	d.setAllowed(ctx, cfg.Rules)
	if cfg.File.Cluster.Enabled() {
		// Created before anything can send, so that the fence below
		// holds from the first datagram; it joins when the group runs.
		if d.node, err = d.newClusterNode(cfg); err != nil {
			return err
		}
		defer d.node.Close()
	}

	mcfg := cfg.File.MGCP
	mcfg.Trace = false // the tap writes the wire trace
	conn, err := net.ListenPacket("udp", mcfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("mgcp: listen %s: %w", mcfg.ListenAddr, err)
	}
	if want := mcfg.WithDefaults().SocketBuffer; want > 0 {
		rcv, snd, err := mgcp.SetSocketBuffers(conn, want)
		if err != nil {
			_ = conn.Close()
			return fmt.Errorf("mgcp: listen %s: %w", mcfg.ListenAddr, err)
		}
		if (rcv >= 0 && rcv < want) || (snd >= 0 && snd < want) {
			log.WithFields(logrus.Fields{"listen": mcfg.ListenAddr, "asked": want, "receive": rcv, "send": snd}).
				Warn("mgcp.socket_buffer: the kernel granted smaller UDP buffers than asked (raise net.core.rmem_max and wmem_max, docs/operations.md)")
		}
	}
	pc := d.tap.Wrap("mgcp")(conn)
	if d.node != nil {
		pc = fencedConn{PacketConn: pc, rules: d.rules, owns: d.owns, dropped: &d.fencedDrops}
	}
	d.ca = mgcp.New(pc, mcfg,
		mgcp.WithLogger(log.WithField("component", "mgcp")),
		mgcp.WithHandler(mgcp.HandlerFunc(d.handleMGCP)),
		mgcp.WithAuthorizer(d.allow),
		mgcp.WithRoundTripFunc(d.metrics.RoundTrip))
	scfg := cfg.File.SIP
	scfg.Trace = false
	d.stack, err = sip.NewStack(scfg, sip.WithStackLogger(log.WithField("component", "sip")), sip.WithAccess(d.allowSIP),
		sip.WithPacketConnWrapper(d.tap.Wrap("sip")), sip.WithStreamTap(d.tap.Stream("sip")))
	if err != nil {
		_ = d.ca.Close()
		return err
	}
	calls := cfg.File.Calls
	bcfg := bridge.Config{CallAgent: d.ca, SIP: d.stack, Rules: d.rules, Register: true,
		Log: log.WithField("component", "bridge"), OnCall: d.onCall, OnStormOver: d.onStormOver, OnAnswer: func(_, dir string) { d.metrics.Answered(dir) },
		OnRegistration: d.onRegistration, RingTimeout: calls.RingTimeout,
		NoAnswerTimeout: calls.NoAnswerTimeout, ToneTimeout: calls.ToneTimeout, PeerDownFor: calls.PeerDownFor,
		TrustGateway: d.trustGateway}
	if d.node != nil {
		bcfg.Owns = d.owns
		bcfg.NotifiedEntity = cfg.File.Cluster.NotifiedEntity()
		bcfg.Calls = callStore{node: d.node, fenced: &d.fencedCalls}
	}
	d.bridge, err = bridge.New(bcfg)
	if err != nil {
		_ = d.ca.Close()
		_ = d.stack.Close()
		return err
	}
	d.tap.Correlate = &trace.MGCPCorrelator{Lookup: d.bridge.SIPCallIDOf}
	sc := metrics.NewStateCollector(d.ca, d.bridge, d.stack)
	sc.Peers = d.peersUp
	d.metrics.Registry.MustRegister(sc)
	if d.node != nil {
		d.metrics.Registry.MustRegister(metrics.NewClusterCollector(d.clusterState))
	}
	d.metrics.GatewayName = d.gatewayName
	d.stack.SetHandler(d.bridge)
	adminLn, err := admin.Listen(cfg.File.Admin)
	if err != nil {
		_ = d.ca.Close()
		_ = d.stack.Close()
		return fmt.Errorf("admin: listen %s: %w", cfg.File.Admin.Listen, err)
	}
	api := admin.New(admin.Backend{Bridge: d.bridge, CallAgent: d.ca, Metrics: d.metrics.Registry, Trace: d.tap,
		Reload: func(ctx context.Context) (any, error) { return d.reload(ctx) }, Peers: d.peerViews, Ready: d.ready,
		LastRSIP: d.lastRestart, CDRs: func(since time.Time, after uint64, limit int) ([]bridge.CDR, <-chan struct{}) {
			return d.cdrs.Since(cdr.Query{Since: since, After: after, Limit: limit})
		}, SIPGate: d.sipGate, TraceFilter: d.traceFilter}, adminOptions(cfg.File.Admin, log))
	// Idle keep-alive connections are closed after a minute; the CDR long
	// poll (at most 60 s) fits in the write timeout.
	adminSrv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		WriteTimeout: admin.MaxCDRWait + 30*time.Second, MaxHeaderBytes: 64 << 10}

	log.WithFields(logrus.Fields{"config": opts.ConfigPath, "mgcp": d.ca.LocalAddr().String(), "sip": d.stack.LocalAddr().String(),
		"admin": adminLn.Addr().String()}).Info("mgsip running: " + config.SummaryLine(cfg.Rules.Summary()))
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var nodeErr error // set before nodeDone closes
	if d.node != nil {
		// The membership outlives the group: the lease is renewed while
		// the bridge hangs up its calls (DLCX) at shutdown, then the node
		// leaves (leaveCluster) and stops. A node that cannot join at all
		// (its name is another live process's) stops the daemon.
		nodeCtx, stopNode := context.WithCancel(context.Background())
		nodeDone := make(chan struct{})
		go func() {
			defer close(nodeDone)
			if err := d.node.Run(nodeCtx); err != nil {
				nodeErr = err
				stopRun()
			}
		}()
		defer func() {
			stopNode()
			<-nodeDone
			d.own.wg.Wait()
			if retErr == nil && nodeErr != nil {
				retErr = nodeErr
			}
		}()
	}
	g, gctx := errgroup.WithContext(runCtx)
	// The stacks outlive the bridge: its shutdown still hangs up calls
	// (BYE, DLCX) and unregisters lines through them.
	svcCtx, stopSvc := context.WithCancel(context.Background())
	defer stopSvc()
	g.Go(func() error { return d.ca.Serve(svcCtx) })
	g.Go(func() error { return d.stack.Serve(svcCtx) })
	g.Go(func() error {
		defer stopSvc()
		return d.bridge.Run(gctx)
	})

	g.Go(func() error {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return adminSrv.Shutdown(sctx)
	})
	g.Go(func() error { d.probePeers(gctx); return nil })
	g.Go(func() error { watchdog(gctx, log); return nil })
	select {
	case <-d.bridge.Ready():
	case <-gctx.Done():
	}
	if opts.Ready != nil {
		opts.Ready <- d.ca.LocalAddr()
	}
	if opts.AdminReady != nil {
		opts.AdminReady <- adminLn.Addr()
	}
	sdNotify(log, "READY=1")
	draining := false
	for {
		select {
		case <-gctx.Done():
			sdNotify(log, "STOPPING=1")
			err := g.Wait()
			d.leaveCluster()
			_ = d.ca.Close()
			_ = d.stack.Close()
			if err != nil && runCtx.Err() == nil {
				return err
			}
			log.Info("mgsip stopped")
			return nil
		case sig := <-opts.Stop:
			if draining {
				log.WithField("signal", sig.String()).Warn("second signal: stopping now")
				stopRun()
				continue
			}
			draining = true
			sdNotify(log, "STOPPING=1")
			go d.drain(runCtx, stopRun)
		case <-opts.Reload:
			_, err := d.reload(ctx)
			if opts.Reloaded != nil {
				opts.Reloaded <- err
			}
		}
	}
}

// drain refuses new calls, waits for the calls in progress up to the
// drain timeout, then stops everything (remaining calls are hung up and
// lines unregistered as the bridge shuts down). A cluster node hands its
// calls over instead (handOver).
func (d *daemon) drain(ctx context.Context, stop context.CancelFunc) {
	d.bridge.Drain()
	if d.node != nil {
		// In a cluster the calls are handed over, not waited for.
		d.handOver(ctx)
		stop()
		return
	}
	n := d.bridge.ActiveCalls()
	d.log.WithFields(logrus.Fields{"calls": n, "timeout_s": d.drainFor.Seconds()}).Info("draining: no new calls")
	deadline := time.After(d.drainFor)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for d.bridge.ActiveCalls() > 0 {
		select {
		case <-deadline:
			d.log.WithField("calls", d.bridge.ActiveCalls()).Warn("drain timeout: hanging up the remaining calls")
			stop()
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	stop()
}

// handOver is the graceful stop of a cluster node (docs/cluster.md,
// "Graceful stop: hand-over"): no new calls (Drain, already), the
// connected calls' state flushed to etcd and forgotten here without a BYE
// or a DLCX, the calls that cannot be kept ended, then the lease revoked,
// so that the ownership keys go at once and the next owners adopt the
// calls from the store as after a crash, without waiting for the TTL.
func (d *daemon) handOver(ctx context.Context) {
	calls := d.bridge.ActiveCalls()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	kept := d.bridge.HandOver(hctx, 5*time.Second)
	cancel()
	d.log.WithFields(logrus.Fields{"calls": calls, "handed_over": kept}).Info("cluster: stopping: calls handed over to the next owners of the gateways")
	d.leaveCluster()
}

// setAllowed computes the addresses gateways may send from.
func (d *daemon) setAllowed(ctx context.Context, r *mapping.Rules) {
	allowed := map[netip.Addr]bool{}
	byGateway := map[string]map[netip.Addr]bool{} // nil set: learnt, any address
	for _, g := range r.Gateways {
		if g.Learn {
			allowed = nil
			byGateway[g.Name] = nil
			continue
		}
		set := map[netip.Addr]bool{}
		byGateway[g.Name] = set
		if a, err := netip.ParseAddr(g.Address); err == nil {
			set[a.Unmap()] = true
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", g.Address)
		if err != nil {
			d.log.WithError(err).WithField("gateway", g.Name).Warn("cannot resolve gateway address; its commands are refused until a reload")
			continue
		}
		for _, a := range addrs {
			set[a.Unmap()] = true
		}
	}
	if allowed != nil {
		for _, set := range byGateway {
			for a := range set {
				allowed[a] = true
			}
		}
	}
	var peers []netip.Prefix
	for _, p := range r.Peers {
		if len(p.Addresses) > 0 {
			peers = append(peers, p.Addresses...)
			continue
		}
		if a, err := netip.ParseAddr(p.Host); err == nil {
			peers = append(peers, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.Host)
		if err != nil {
			d.log.WithError(err).WithField("peer", p.Name).Warn("cannot resolve SIP peer address; its requests are refused until a reload")
			continue
		}
		for _, a := range addrs {
			peers = append(peers, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	d.mu.Lock()
	d.allowed = allowed
	d.gatewayAddrs = byGateway
	d.peers = peers
	d.mu.Unlock()
}

// allowSIP lets requests in from configured SIP peers only.
func (d *daemon) allowSIP(a netip.AddrPort) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, p := range d.peers {
		if p.Contains(a.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// gatewayName names the gateway whose address a is ("" if none).
func (d *daemon) gatewayName(a netip.AddrPort) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for name, set := range d.gatewayAddrs {
		if set != nil && set[a.Addr().Unmap()] {
			return name
		}
	}
	return ""
}

// peersUp is each SIP peer's reachability as the OPTIONS probes saw it.
func (d *daemon) peersUp() map[string]bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string]bool, len(d.peerState))
	for name, p := range d.peerState {
		out[name] = p.Up
	}
	return out
}

// onRegistration counts a line's failed REGISTER attempts by reason.
func (d *daemon) onRegistration(line string, st sip.RegStatus) {
	d.mu.Lock()
	if d.regFailures == nil {
		d.regFailures = map[string]int{}
	}
	// The callbacks run on goroutines of their own and may arrive out of
	// order: only a rise counts; 0 (a success) starts again.
	n := st.Failures - d.regFailures[line]
	if n > 0 || st.Failures == 0 {
		d.regFailures[line] = st.Failures
	}
	d.mu.Unlock()
	if n > 0 {
		d.metrics.RegistrationFailed(st.Code, n)
	}
}

// trustGateway says whether a command for gw's endpoints may come from a.
func (d *daemon) trustGateway(gw *mapping.GatewayRule, a netip.AddrPort) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	set, ok := d.gatewayAddrs[gw.Name]
	if !ok {
		return false // not resolved (yet): refused like its datagrams
	}
	return set == nil || set[a.Addr().Unmap()]
}

func (d *daemon) allow(a netip.AddrPort) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.allowed == nil || d.allowed[a.Addr()]
}

// handleMGCP passes commands from gateways to the bridge, noting RSIPs.
func (d *daemon) handleMGCP(ctx context.Context, from netip.AddrPort, c *mgcp.Command) *mgcp.Response {
	if d.bridge == nil {
		return mgcp.NewResponse(c, mgcp.CodeTransientError)
	}
	if r := d.redirect(c, func(gw *mapping.GatewayRule) bool { return d.trustGateway(gw, from) }); r != nil {
		return r
	}
	if c.Verb == mgcp.VerbRSIP {
		if gw := d.rules.Load().GatewayByDomain(c.Endpoint.Domain); gw != nil {
			d.mu.Lock()
			d.lastRSIP[gw.Name] = time.Now()
			d.mu.Unlock()
			d.log.WithFields(logrus.Fields{"gateway": gw.Name, "endpoint": c.Endpoint.String(), "method": string(c.RestartMethod)}).Info("gateway restart")
		}
	}
	return d.bridge.HandleMGCP(ctx, from, c)
}

// peerViews lists the configured SIP peers with their probe state.
func (d *daemon) peerViews() []admin.PeerView {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := []admin.PeerView{}
	for _, p := range d.rules.Load().Peers {
		if v, ok := d.peerState[p.Name]; ok {
			out = append(out, v)
		} else {
			out = append(out, admin.PeerView{Name: p.Name, Address: net.JoinHostPort(p.Host, itoa(p.Port))})
		}
	}
	return out
}

// lastRestart is when a gateway last sent an RSIP.
func (d *daemon) lastRestart(gateway string) time.Time {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.lastRSIP[gateway]
}

// ready: not while draining; by default not when no probed SIP peer
// answers OPTIONS; optionally not when no gateway (or not every gateway)
// answers (daemon.ready, docs/operations.md).
func (d *daemon) ready() (bool, string) {
	if d.bridge.Draining() {
		return false, "draining"
	}
	switch d.readyWhen.Gateways {
	case "any", "all":
		up, down := 0, 0
		for _, g := range d.bridge.Gateways() {
			if g.Down {
				down++
			} else {
				up++
			}
		}
		if d.readyWhen.Gateways == "any" && up == 0 && down > 0 {
			return false, "no gateway answers"
		}
		if d.readyWhen.Gateways == "all" && down > 0 {
			return false, strconv.Itoa(down) + " gateway(s) down"
		}
	}
	if d.readyWhen.SIPPeers == "ignore" {
		return true, ""
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if len(d.peerState) == 0 {
		if len(d.rules.Load().Peers) > 0 {
			// Not known yet: ready only once a peer has answered.
			return false, "waiting for the first OPTIONS answers"
		}
		return true, ""
	}
	for _, p := range d.peerState {
		if p.Up {
			return true, ""
		}
	}
	return false, "no SIP peer answers OPTIONS"
}

// probePeers sends OPTIONS to every configured peer: each peer's
// options_interval when set, else every 30 s. Any answer, whatever its
// status, proves the peer reachable (RFC 3261 §11.2 lets it refuse
// OPTIONS). One lost datagram must not refuse calls to a peer that
// answers them: a peer is down only after peerDownAfter probes in a row
// went unanswered, and a probe that went unanswered is repeated after
// peerRetry rather than a whole interval later. A change either way is
// logged, as is a peer found down at start.
func (d *daemon) probePeers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, p := range d.rules.Load().Peers {
			every := p.OptionsInterval
			if every <= 0 {
				every = 30 * time.Second
			}
			d.mu.RLock()
			prev, seen := d.peerState[p.Name]
			d.mu.RUnlock()
			if seen && time.Since(prev.LastProbe) < probeWait(prev, every) {
				continue
			}
			addr := net.JoinHostPort(p.Host, itoa(p.Port))
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rtt, status, err := d.stack.Ping(pctx, addr, p.Transport)
			cancel()
			if ctx.Err() != nil {
				return
			}
			v := nextPeerView(prev, seen, err == nil)
			v.Name, v.Address, v.Status, v.LastProbe = p.Name, addr, status, time.Now().Truncate(time.Millisecond)
			if err == nil {
				v.RTTMS = float64(rtt.Microseconds()) / 1000
			}
			if (seen && prev.Up != v.Up) || (!v.Up && v.Unanswered == peerDownAfter) {
				d.log.WithFields(logrus.Fields{"peer": p.Name, "address": addr, "up": v.Up, "unanswered_probes": v.Unanswered}).
					Warn("SIP peer reachability changed")
			}
			// The bridge assumes a peer reachable until told otherwise: a
			// peer not heard from yet is not refused calls before the
			// threshold.
			d.bridge.SetPeerReachable(p.Name, peerReachable(v))
			d.mu.Lock()
			if d.peerState == nil {
				d.peerState = map[string]admin.PeerView{}
			}
			d.peerState[p.Name] = v
			d.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// peerDownAfter is how many OPTIONS in a row a peer must leave
// unanswered to be down; peerRetry is how soon an unanswered probe is
// repeated (at most).
const (
	peerDownAfter = 2
	peerRetry     = 5 * time.Second
)

// peerReachable is whether calls may go to a peer in state v: it is up,
// or has not yet left peerDownAfter probes in a row unanswered.
func peerReachable(v admin.PeerView) bool { return v.Up || v.Unanswered < peerDownAfter }

// probeWait is how long after its last probe a peer is probed again.
func probeWait(prev admin.PeerView, every time.Duration) time.Duration {
	if prev.Unanswered > 0 && every > peerRetry {
		return peerRetry
	}
	return every
}

// nextPeerView is a peer's state after a probe: answered, up at once;
// unanswered, one more in a row, and down once there are peerDownAfter
// of them. A peer never heard from is not shown up (readiness waits for
// an answer) but stays reachable for calls until the threshold.
func nextPeerView(prev admin.PeerView, seen, answered bool) admin.PeerView {
	if answered {
		return admin.PeerView{Up: true}
	}
	n := 1
	if seen {
		n = prev.Unanswered + 1
	}
	return admin.PeerView{Up: seen && prev.Up && n < peerDownAfter, Unanswered: n}
}

func itoa(n int) string { return strconv.Itoa(n) }

// adminOptions are the API server's options from the admin section. The
// section is read at start only: a reload does not change the tokens or
// the listener (docs/configuration.md says so).
func adminOptions(a config.Admin, log *logrus.Logger) admin.Options {
	return admin.Options{Token: a.Token.Reveal(), ReadOnlyToken: a.ReadOnlyToken.Reveal(), AllowedHosts: a.AllowedHosts,
		FailRate: a.AuthFailRate, FailBurst: a.AuthFailBurst, Pprof: a.Pprof, Log: log.WithField("component", "admin")}
}

// leaveCluster hands this node's gateways to the others at once (the
// lease is revoked) instead of letting them wait for the TTL.
func (d *daemon) leaveCluster() {
	if d.node == nil || !d.left.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := d.node.Leave(ctx); err != nil {
		d.log.WithError(err).Warn("cluster: leaving failed; the other nodes take the gateways when the lease expires")
	}
	f := logrus.Fields{"redirected": d.redirected.Load(), "fenced": d.fencedDrops.Load(), "call_writes_fenced": d.fencedCalls.Load()}
	if d.bridge != nil {
		st := d.bridge.StoreStats()
		f["call_writes"], f["call_writes_failed"], f["calls_not_stored"] = st.Written, st.Failed, st.Dropped
	}
	d.log.WithFields(f).Info("cluster: left")
}
