package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/daemon"
	"github.com/spf13/cobra"
)

const allowEmptyHelp = "accept a file that configures no gateway, line or trunk (as allow_empty: true in the file does)"

func newCheckConfigCmd(a *app) *cobra.Command {
	var allowEmpty bool
	c := &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a configuration file",
		Long: `Decode FILE strictly, check every section and compile the mapping rules.
Valid: print a one-line summary and exit 0. Invalid: print every problem as
"FILE:LINE: key.path: reason" and exit 1. A file that cannot be read
(missing, not readable by this user) is exit 1 too, with its path; exit 2
is for wrong arguments. Secrets are never printed.
A file that configures no gateway, line or trunk is refused unless it
says allow_empty: true or --allow-empty is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := config.LoadFile(args[0], os.LookupEnv, config.AllowEmpty(allowEmpty))
			var ce *config.Error
			if errors.As(err, &ce) {
				fmt.Fprintln(a.stdout, ce.Error())
				return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) in %s", len(ce.Problems), args[0])}
			}
			if err != nil {
				return unreadableConfig(args[0], err, "")
			}
			fmt.Fprintf(a.stdout, "%s: ok: %s\n", args[0], config.SummaryLine(cfg.Rules.Summary()))
			return nil
		},
	}
	c.Flags().BoolVar(&allowEmpty, "allow-empty", false, allowEmptyHelp)
	return c
}

// unreadableConfig is the answer to a configuration file that cannot be
// read (missing, a directory, not readable by this user): a problem with
// the file, exit 1 as for an invalid one (docs/operations.md), with the
// path and the reason the system gave.
func unreadableConfig(path string, err error, suffix string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &exitError{code: exitFailure, err: fmt.Errorf("cannot read the configuration file %s: %v%s", path, err, suffix)}
}

func newRunCmd(a *app) *cobra.Command {
	var path string
	var allowEmpty bool
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the daemon",
		Long: `Load and check the configuration before binding any socket, then serve:
the MGCP call agent, the SIP stack, the bridge and the admin API.
SIGHUP re-reads the file: a valid file replaces the rules (calls in
progress keep theirs), an invalid one is rejected with its problems logged
and the running rules stay (so is a file that configures nothing, unless
--allow-empty: a truncated file must not unregister every line). SIGTERM or SIGINT drains: no new calls, calls
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
			return runDaemon(ctx, a, cmd.Flags().Changed("log-level") || cmd.Flags().Changed("log-format"),
				daemon.Options{ConfigPath: path, Reload: reload, Stop: stop, AllowEmpty: allowEmpty})
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	c.Flags().BoolVar(&allowEmpty, "allow-empty", false, allowEmptyHelp+"; applies to reloads too")
	return c
}

// runDaemon loads the configuration before anything is bound (its
// problems printed, exit 1), sets up logging from its log section unless
// the flags said otherwise (flagsSetLog), and runs the daemon.
func runDaemon(ctx context.Context, a *app, flagsSetLog bool, opts daemon.Options) error {
	cfg, err := config.LoadFile(opts.ConfigPath, os.LookupEnv, config.AllowEmpty(opts.AllowEmpty))
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintln(a.stderr, ce.Error())
			return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) in %s; nothing started", len(ce.Problems), opts.ConfigPath)}
		}
		return unreadableConfig(opts.ConfigPath, err, "; nothing started")
	}
	if !flagsSetLog {
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
	opts.Config, opts.Log, opts.LogFromFlags = cfg, a.log, flagsSetLog
	return daemon.Run(ctx, opts)
}
