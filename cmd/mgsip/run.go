package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func newCheckConfigCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a configuration file",
		Long: `Decode FILE strictly, check every section and compile the mapping rules.
Valid: print a one-line summary and exit 0. Invalid: print every problem as
"FILE:LINE: key.path: reason" and exit 1. Secrets are never printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := loadConfigFile(args[0], os.LookupEnv)
			var ce *configError
			if errors.As(err, &ce) {
				fmt.Fprintln(a.stdout, ce.Error())
				return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) in %s", len(ce.Problems), args[0])}
			}
			if err != nil {
				return usageErr("%v", err)
			}
			fmt.Fprintf(a.stdout, "%s: ok: %s\n", args[0], summaryLine(cfg.Rules.Summary()))
			return nil
		},
	}
}

func summaryLine(s mapping.Summary) string {
	return fmt.Sprintf("%d gateway(s), %d line(s), %d trunk group(s) with %d channel(s), %d peer(s), %d route(s), %d dial plan(s), %d rewrite set(s)",
		s.Gateways, s.Lines, s.Trunks, s.TrunkChannels, s.Peers, s.Routes, s.DialPlans, s.Rewrites)
}

func newRunCmd(a *app) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the daemon",
		Long: `Load and check the configuration before binding any socket, then serve:
the MGCP call agent, the SIP stack, the bridge and the admin API.
SIGHUP re-reads the file: a valid file replaces the rules (calls in
progress keep theirs), an invalid one is rejected with its problems logged
and the running rules stay. SIGTERM or SIGINT drains: no new calls, calls
in progress get daemon.drain_timeout, then are hung up; lines unregister
and mgsip exits 0. A second signal stops at once. Under systemd
(Type=notify) it reports READY, RELOADING, STOPPING and the watchdog.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return usageErr("--config is required")
			}
			ctx := cmd.Context()
			stop := make(chan os.Signal, 2)
			signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(stop)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				for {
					select {
					case <-hup:
						select {
						case reload <- struct{}{}:
						default:
						}
					case <-rctx.Done():
						return
					}
				}
			}()
			return runDaemon(ctx, a, daemonOptions{configPath: path, reload: reload, stop: stop,
				flagsSetLog: cmd.Flags().Changed("log-level") || cmd.Flags().Changed("log-format")})
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	return c
}

type daemonOptions struct {
	configPath string
	reload     <-chan struct{}
	// stop delivers SIGTERM/SIGINT: the first drains, the second stops.
	stop <-chan os.Signal
	// ready, if set, receives the call agent's address once serving;
	// adminReady the admin API's.
	ready      chan<- net.Addr
	adminReady chan<- net.Addr
	// reloaded, if set, receives the result of each reload.
	reloaded chan<- error
	// flagsSetLog: --log-level/--log-format were given and win over the file.
	flagsSetLog bool
}

// daemon is the running service: the MGCP call agent, the SIP stack, the
// bridge between them and the admin API, under one errgroup.
type daemon struct {
	log        *logrus.Logger
	configPath string
	rules      *mapping.Holder
	ca         *mgcp.CallAgent
	stack      *sip.Stack
	bridge     *bridge.Bridge
	tap        *tapper
	metrics    *metrics
	token      string
	drainFor   time.Duration

	reloadMu sync.Mutex
	mu       sync.RWMutex
	allowed  map[netip.Addr]bool // gateway addresses; nil accepts any (a gateway learns its address)
	// gatewayAddrs: each gateway's addresses (a nil set: learnt, any);
	// a command for a gateway's endpoints must come from one of them.
	gatewayAddrs map[string]map[netip.Addr]bool
	peers        []netip.Prefix      // SIP peers' addresses
	peerState    map[string]peerView // SIP peers by name, from the OPTIONS probes
	lastRSIP     map[string]time.Time
}

func runDaemon(ctx context.Context, a *app, opts daemonOptions) error {
	cfg, err := loadConfigFile(opts.configPath, os.LookupEnv)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintln(a.stderr, ce.Error())
			return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) in %s; nothing started", len(ce.Problems), opts.configPath)}
		}
		return &exitError{code: exitUsage, err: err}
	}
	if !opts.flagsSetLog {
		if cfg.File.Log.Level != "" {
			a.logLevel = cfg.File.Log.Level
		}
		if cfg.File.Log.Format != "" {
			a.logFormat = cfg.File.Log.Format
		}
		if err := a.setupLogging(); err != nil {
			return err
		}
	}
	d := &daemon{log: a.log, configPath: opts.configPath, rules: mapping.NewHolder(cfg.Rules), metrics: newMetrics(),
		token: cfg.File.Admin.Token.Reveal(), drainFor: cfg.File.Daemon.DrainTimeout, lastRSIP: map[string]time.Time{}}
	d.tap = &tapper{log: a.log.WithField("component", "trace"), metrics: d.metrics}
	d.tap.traceMGCP.Store(cfg.File.MGCP.Trace)
	d.tap.traceSIP.Store(cfg.File.SIP.Trace)
	if p := cfg.File.Trace.Pcap; p != "" {
		if d.tap.pcap, err = newPcapWriter(p, cfg.File.Trace.PcapMaxBytes, cfg.File.Trace.PcapKeep); err != nil {
			return &exitError{code: exitFailure, err: fmt.Errorf("trace.pcap: %w", err)}
		}
		defer d.tap.pcap.close()
	}
	if h := cfg.File.Trace.HEP; h != "" {
		if d.tap.hep, err = newHEPSender(h, cfg.File.Trace.HEPNodeID); err != nil {
			return &exitError{code: exitFailure, err: fmt.Errorf("trace.hep: %w", err)}
		}
		defer d.tap.hep.close()
	}
	d.setAllowed(ctx, cfg.Rules)

	mcfg := cfg.File.MGCP
	mcfg.Trace = false // the tap writes the wire trace
	conn, err := net.ListenPacket("udp", mcfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("mgcp: listen %s: %w", mcfg.ListenAddr, err)
	}
	d.ca = mgcp.New(d.tap.wrap("mgcp")(conn), mcfg,
		mgcp.WithLogger(a.log.WithField("component", "mgcp")),
		mgcp.WithHandler(mgcp.HandlerFunc(d.handleMGCP)),
		mgcp.WithAuthorizer(d.allow),
		mgcp.WithRoundTripFunc(d.metrics.roundTrip))
	scfg := cfg.File.SIP
	scfg.Trace = false
	d.stack, err = sip.NewStack(scfg, sip.WithStackLogger(a.log.WithField("component", "sip")), sip.WithAccess(d.allowSIP),
		sip.WithPacketConnWrapper(d.tap.wrap("sip")))
	if err != nil {
		_ = d.ca.Close()
		return err
	}
	calls := cfg.File.Calls
	d.bridge, err = bridge.New(bridge.Config{CallAgent: d.ca, SIP: d.stack, Rules: d.rules, Register: true,
		Log: a.log.WithField("component", "bridge"), OnCall: d.metrics.call, RingTimeout: calls.RingTimeout,
		NoAnswerTimeout: calls.NoAnswerTimeout, ToneTimeout: calls.ToneTimeout, PeerDownFor: calls.PeerDownFor,
		TrustGateway: d.trustGateway})
	if err != nil {
		_ = d.ca.Close()
		_ = d.stack.Close()
		return err
	}
	d.metrics.reg.MustRegister(newStateCollector(d.ca, d.bridge, d.stack))
	d.stack.SetHandler(d.bridge)
	adminLn, err := net.Listen("tcp", cfg.File.Admin.Listen)
	if err != nil {
		_ = d.ca.Close()
		_ = d.stack.Close()
		return fmt.Errorf("admin: listen %s: %w", cfg.File.Admin.Listen, err)
	}
	admin := &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 10 * time.Second}

	a.log.WithFields(logrus.Fields{"config": opts.configPath, "mgcp": d.ca.LocalAddr().String(), "sip": d.stack.LocalAddr().String(),
		"admin": adminLn.Addr().String()}).Info("mgsip running: " + summaryLine(cfg.Rules.Summary()))
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
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
		if err := admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return admin.Shutdown(sctx)
	})
	g.Go(func() error { d.probePeers(gctx); return nil })
	g.Go(func() error { watchdog(gctx, a.log); return nil })
	select {
	case <-d.bridge.Ready():
	case <-gctx.Done():
	}
	if opts.ready != nil {
		opts.ready <- d.ca.LocalAddr()
	}
	if opts.adminReady != nil {
		opts.adminReady <- adminLn.Addr()
	}
	sdNotify(a.log, "READY=1")
	draining := false
	for {
		select {
		case <-gctx.Done():
			sdNotify(a.log, "STOPPING=1")
			err := g.Wait()
			_ = d.ca.Close()
			_ = d.stack.Close()
			if err != nil && runCtx.Err() == nil {
				return err
			}
			a.log.Info("mgsip stopped")
			return nil
		case sig := <-opts.stop:
			if draining {
				a.log.WithField("signal", sig.String()).Warn("second signal: stopping now")
				stopRun()
				continue
			}
			draining = true
			sdNotify(a.log, "STOPPING=1")
			go d.drain(runCtx, stopRun)
		case <-opts.reload:
			err := d.reload(ctx)
			if opts.reloaded != nil {
				opts.reloaded <- err
			}
		}
	}
}

// drain refuses new calls, waits for the calls in progress up to the
// drain timeout, then stops everything (remaining calls are hung up and
// lines unregistered as the bridge shuts down).
func (d *daemon) drain(ctx context.Context, stop context.CancelFunc) {
	d.bridge.Drain()
	n := d.bridge.ActiveCalls()
	d.log.WithFields(logrus.Fields{"calls": n, "timeout": d.drainFor}).Info("draining: no new calls")
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

// reload re-reads the file and swaps the rules in if they are valid.
func (d *daemon) reload(ctx context.Context) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	path := d.configPath
	sdNotify(d.log, "RELOADING=1\nMONOTONIC_USEC="+monotonicUsec())
	defer sdNotify(d.log, "READY=1")
	cfg, err := loadConfigFile(path, os.LookupEnv)
	if err != nil {
		d.metrics.reloads.WithLabelValues("rejected").Inc()
		d.log.WithField("config", path).Error("reload rejected, keeping the running rules:\n" + err.Error())
		return err
	}
	d.metrics.reloads.WithLabelValues("ok").Inc()
	old := d.rules.Swap(cfg.Rules)
	d.setAllowed(ctx, cfg.Rules)
	added, removed := diffLines(old, cfg.Rules)
	if d.bridge != nil {
		d.bridge.Apply(cfg.Rules)
	}
	d.log.WithFields(logrus.Fields{"config": path, "lines_added": added, "lines_removed": removed}).
		Info("configuration reloaded: " + summaryLine(cfg.Rules.Summary()))
	return nil
}

func diffLines(old, cur *mapping.Rules) (added, removed int) {
	for _, l := range cur.Lines {
		if old.LineByID(l.ID) == nil {
			added++
		}
	}
	for _, l := range old.Lines {
		if cur.LineByID(l.ID) == nil {
			removed++
		}
	}
	return added, removed
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
