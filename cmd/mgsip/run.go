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

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
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

// daemon is the running service. Until the bridge lands it answers the
// gateways' own commands for configured endpoints and refuses the rest.
type daemon struct {
	log   *logrus.Logger
	rules *mapping.Holder
	ca    *mgcp.CallAgent

	mu      sync.RWMutex
	allowed map[netip.Addr]bool // gateway addresses; nil accepts any (a gateway learns its address)
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
	a.log.WithFields(logrus.Fields{"config": opts.configPath, "mgcp": ca.LocalAddr().String()}).
		Info("mgsip running: " + summaryLine(cfg.Rules.Summary()))
	served := make(chan error, 1)
	go func() { served <- ca.Serve(ctx) }()
	if opts.ready != nil {
		opts.ready <- ca.LocalAddr()
	}
	for {
		select {
		case err := <-served:
			_ = ca.Close()
			if err != nil {
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
	d.mu.Lock()
	d.allowed = allowed
	d.mu.Unlock()
}

func (d *daemon) allow(a netip.AddrPort) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.allowed == nil || d.allowed[a.Addr()]
}

// handleMGCP answers commands from gateways: configured endpoints get 200
// (the bridge will act on them), others 500.
func (d *daemon) handleMGCP(_ context.Context, from netip.AddrPort, c *mgcp.Command) *mgcp.Response {
	rules := d.rules.Load()
	log := d.log.WithFields(logrus.Fields{"gateway": from.String(), "endpoint": c.Endpoint.String(), "verb": string(c.Verb), "mgcp_tx": c.TransactionID})
	if rules.GatewayByDomain(c.Endpoint.Domain) == nil {
		log.Warn("command for an unknown gateway domain")
		return mgcp.NewResponse(c, mgcp.CodeEndpointUnknown)
	}
	switch c.Verb {
	case mgcp.VerbRSIP, mgcp.VerbNTFY, mgcp.VerbDLCX:
	default:
		return mgcp.NewResponse(c, mgcp.CodeUnknownCommand)
	}
	if c.Endpoint.Local != "*" && rules.LineByEndpoint(c.Endpoint.Local, c.Endpoint.Domain) == nil &&
		rules.TrunkByEndpoint(c.Endpoint.Local, c.Endpoint.Domain) == nil {
		log.Warn("command for an endpoint that is not configured")
		return mgcp.NewResponse(c, mgcp.CodeEndpointUnknown)
	}
	var events []string
	for _, e := range c.ObservedEvents {
		events = append(events, e.String())
	}
	log.WithField("events", strings.Join(events, ",")).Info("gateway event")
	return mgcp.NewResponse(c, mgcp.CodeOK)
}
