package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mgsip/mgsip/internal/sim"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/spf13/cobra"
)

func newSimCmd(a *app) *cobra.Command {
	var (
		listen, callAgent, domain, script, steps, mediaIP string
		trunkPackage                                      string
		lines, channels                                   int
		serve                                             bool
		timeout                                           time.Duration
	)
	c := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a residential MGCP gateway with analog lines and real RTP",
		Long: `Run a residential gateway with N lines (aaln/1..N@DOMAIN) that answers the
call agent like hardware: it keeps connection and signal state, collects
digits against the digit map it was given, reports hook and digit events,
and sends and receives real RTP between the addresses it negotiated. It
restarts (RSIP) on start, then plays the script, if any.

` + sim.Help + `

Exit status: 0 when the script completed, 1 when a step failed or timed
out, 2 for bad flags or a bad script.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			text := steps
			if script != "" {
				b, err := os.ReadFile(script)
				if err != nil {
					return usageErr("%v", err)
				}
				text = string(b) + "\n" + steps
			}
			parsed, err := sim.ParseScript(text)
			if err != nil {
				return usageErr("%v", err)
			}
			if lines < 0 || channels < 0 || lines+channels < 1 {
				return usageErr("--lines and --trunk-channels must give at least one endpoint")
			}
			locals := []string{}
			for i := 1; i <= lines; i++ {
				locals = append(locals, "aaln/"+strconv.Itoa(i))
			}
			for i := 1; i <= channels; i++ {
				locals = append(locals, "ds/ds1-1/"+strconv.Itoa(i))
			}
			conn, err := net.ListenPacket("udp", listen)
			if err != nil {
				return usageErr("--listen: %v", err)
			}
			gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: conn, Domain: domain, Endpoints: locals, CallAgent: callAgent,
				MediaIP: mediaIP, RTP: true, TrunkPackage: trunkPackage})
			if err != nil {
				_ = conn.Close()
				return usageErr("%v", err)
			}
			defer gw.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			s := &sim.Simulator{GW: gw, Out: a.stdout, Local: locals}
			fmt.Fprintf(a.stdout, "sim: gateway %s on %s, %d line(s), %d trunk channel(s), call agent %s\n", domain, gw.Addr(), lines, channels, callAgent)
			rctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if _, err := gw.Restart(rctx, "*", mgcp.RestartRestart, 0); err != nil {
				fmt.Fprintf(a.stdout, "sim: RSIP not answered: %v\n", err)
			}
			if err := s.Run(rctx, parsed); err != nil {
				fmt.Fprintln(a.stdout, "sim: FAIL:", err)
				return &exitError{code: exitFailure, err: err}
			}
			if len(parsed) > 0 {
				fmt.Fprintf(a.stdout, "sim: script done (%d steps)\n", len(parsed))
			}
			if serve {
				<-ctx.Done()
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:2427", "UDP address of the gateway's MGCP socket")
	f.StringVar(&callAgent, "call-agent", "127.0.0.1:2727", "where RSIP and NTFY go until the call agent sets N:")
	f.StringVar(&domain, "domain", "sim.invalid", "domain of the endpoint names")
	f.StringVar(&mediaIP, "media-ip", "127.0.0.1", "address for RTP")
	f.IntVar(&lines, "lines", 2, "number of analog lines")
	f.IntVar(&channels, "trunk-channels", 0, "number of CAS trunk channels ds/ds1-1/1..N, numbered after the lines in scripts")
	f.StringVar(&trunkPackage, "trunk-package", "MS", "RFC 3064 package of the trunk channels: MS or DT")
	f.StringVar(&script, "script", "", "file with script steps")
	f.StringVar(&steps, "do", "", "script steps given inline, separated by ';'")
	f.BoolVar(&serve, "serve", false, "keep serving after the script until interrupted")
	f.DurationVar(&timeout, "timeout", time.Minute, "limit for the whole script")
	return c
}
