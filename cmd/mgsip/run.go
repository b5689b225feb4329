package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

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
		Long: `Load and check the configuration before binding any socket, then serve.
SIGHUP re-reads the file: a valid file replaces the rules (calls in
progress keep theirs), an invalid one is rejected with its problems logged
and the running rules stay. SIGINT or SIGTERM stop the daemon.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return usageErr("--config is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for {
					select {
					case <-hup:
						select {
						case reload <- struct{}{}:
						default:
						}
					case <-ctx.Done():
						return
					}
				}
			}()
			return runDaemon(ctx, a, daemonOptions{configPath: path, reload: reload, flagsSetLog: cmd.Flags().Changed("log-level") || cmd.Flags().Changed("log-format")})
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	return c
}

type daemonOptions struct {
	configPath  string
	reload      <-chan struct{}
	flagsSetLog bool
	// ready, if set, receives the bound MGCP address once serving.
	ready chan<- net.Addr
	// reloaded, if set, receives the result of each reload.
	reloaded chan<- error
}

// daemon is the running service: the MGCP call agent, the SIP stack and
// the bridge between them, under one errgroup.
type daemon struct {
	log    *logrus.Logger
	rules  *mapping.Holder
	ca     *mgcp.CallAgent
	bridge *bridge.Bridge

	mu      sync.RWMutex
	allowed map[netip.Addr]bool // gateway addresses; nil accepts any (a gateway learns its address)
	peers   []netip.Prefix      // SIP peers' addresses
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
	d := &daemon{log: a.log, rules: mapping.NewHolder(cfg.Rules)}
	d.setAllowed(ctx, cfg.Rules)
	ca, err := mgcp.Listen(cfg.File.MGCP,
		mgcp.WithLogger(a.log.WithField("component", "mgcp")),
		mgcp.WithHandler(mgcp.HandlerFunc(d.handleMGCP)),
		mgcp.WithAuthorizer(d.allow))
	if err != nil {
		return err
	}
	d.ca = ca
	stack, err := sip.NewStack(cfg.File.SIP, sip.WithStackLogger(a.log.WithField("component", "sip")), sip.WithAccess(d.allowSIP))
	if err != nil {
		_ = ca.Close()
		return err
	}
	b, err := bridge.New(bridge.Config{CallAgent: ca, SIP: stack, Rules: d.rules, Register: true,
		Log: a.log.WithField("component", "bridge")})
	if err != nil {
		_ = ca.Close()
		_ = stack.Close()
		return err
	}
	d.mu.Lock()
	d.bridge = b
	d.mu.Unlock()
	stack.SetHandler(b)
	a.log.WithFields(logrus.Fields{"config": opts.configPath, "mgcp": ca.LocalAddr().String(), "sip": stack.LocalAddr().String()}).
		Info("mgsip running: " + summaryLine(cfg.Rules.Summary()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ca.Serve(gctx) })
	g.Go(func() error { return stack.Serve(gctx) })
	g.Go(func() error { return b.Run(gctx) })
	if opts.ready != nil {
		opts.ready <- ca.LocalAddr()
	}
	for {
		select {
		case <-gctx.Done():
			err := g.Wait()
			_ = ca.Close()
			_ = stack.Close()
			if err != nil && ctx.Err() == nil {
				return err
			}
			a.log.Info("mgsip stopped")
			return nil
		case <-opts.reload:
			err := d.reload(ctx, opts.configPath)
			if opts.reloaded != nil {
				opts.reloaded <- err
			}
		}
	}
}

// reload re-reads the file and swaps the rules in if they are valid.
func (d *daemon) reload(ctx context.Context, path string) error {
	cfg, err := loadConfigFile(path, os.LookupEnv)
	if err != nil {
		d.log.WithField("config", path).Error("reload rejected, keeping the running rules:\n" + err.Error())
		return err
	}
	old := d.rules.Swap(cfg.Rules)
	d.setAllowed(ctx, cfg.Rules)
	added, removed := diffLines(old, cfg.Rules)
	d.mu.RLock()
	b := d.bridge
	d.mu.RUnlock()
	if b != nil {
		b.Apply(cfg.Rules)
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
	for _, g := range r.Gateways {
		if g.Learn {
			allowed = nil
			break
		}
		if a, err := netip.ParseAddr(g.Address); err == nil {
			allowed[a.Unmap()] = true
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", g.Address)
		if err != nil {
			d.log.WithError(err).WithField("gateway", g.Name).Warn("cannot resolve gateway address; its commands are refused until a reload")
			continue
		}
		for _, a := range addrs {
			allowed[a.Unmap()] = true
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

func (d *daemon) allow(a netip.AddrPort) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.allowed == nil || d.allowed[a.Addr()]
}

// handleMGCP passes commands from gateways to the bridge, logging them.
func (d *daemon) handleMGCP(ctx context.Context, from netip.AddrPort, c *mgcp.Command) *mgcp.Response {
	d.mu.RLock()
	b := d.bridge
	d.mu.RUnlock()
	log := d.log.WithFields(logrus.Fields{"gateway": from.String(), "endpoint": c.Endpoint.String(), "verb": string(c.Verb), "mgcp_tx": c.TransactionID})
	if b == nil {
		return mgcp.NewResponse(c, mgcp.CodeTransientError)
	}
	var events []string
	for _, e := range c.ObservedEvents {
		events = append(events, e.String())
	}
	r := b.HandleMGCP(ctx, from, c)
	log.WithFields(logrus.Fields{"events": strings.Join(events, ","), "code": int(r.Code)}).Debug("gateway command")
	return r
}
