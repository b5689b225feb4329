package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/sim"
	"github.com/spf13/cobra"
)

func newDemoCmd(a *app) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run a real call between two simulated MGCP lines through a SIP PBX stand-in",
		Long: `Start mgsip (call agent, SIP stack, bridge) on the demo configuration, a
simulated residential gateway with the configuration's lines and real RTP,
and a PBX stand-in (digest registrar and back-to-back user agent), all on
loopback with free ports. The lines register; line 1 goes off hook and
dials line 2's number; the call goes out over SIP to the PBX, which calls
line 2's account back through mgsip; line 2 rings, answers, RTP flows both
ways and is counted; line 1 hangs up, line 2 hears reorder and hangs up.

Prints the ladder of every MGCP and SIP message and a one-line verdict.
Exit status 0 only if the call really happened.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadFile(path, os.LookupEnv)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := sim.RunDemo(ctx, a.stdout, cfg.File); err != nil {
				fmt.Fprintln(a.stdout, "VERDICT: FAIL:", err)
				return &exitError{code: exitFailure, err: err}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "configs/demo.yaml", "demo configuration")
	return c
}
