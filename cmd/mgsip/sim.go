package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/spf13/cobra"
)

// The simulator: a residential gateway with N analog lines built on
// mgcptest, with real RTP, driven by a script of phone actions.

// simStep is one line of a simulator script.
type simStep struct {
	line   int    // 1-based line number; 0 when the step has none
	op     string // offhook, onhook, flash, dial, wait, rtp, sleep, restart
	arg    string
	source int // line in the script
}

const simHelp = `Script steps, one per line or separated by ';' ('#' starts a comment):
  offhook N          line N goes off hook (L/hd)
  onhook N           line N hangs up (L/hu)
  flash N            hook flash (L/hf)
  dial N DIGITS      press the digits, collected against the digit map the call agent pushed
                     (the gateway notifies as a strict RFC 3435 gateway does: only under a
                     request, once per request; a step that sends no NTFY is reported, not failed)
  wait N WHAT        wait until line N plays signal WHAT (L/dl, L/rg, G/rt, L/ro, L/bz...),
                     or WHAT is "armed" (idle, watching for off-hook) or "connected"
                     (a send-receive connection)
  rtp N COUNT        wait until line N's connection sent and received COUNT RTP packets
  sleep DURATION     pause, e.g. 500ms
  restart            the gateway restarts (RSIP restart for *)`

// parseSimScript reads a script; errors name the step.
func parseSimScript(text string) ([]simStep, error) {
	var steps []simStep
	for i, raw := range strings.Split(text, "\n") {
		for _, part := range strings.Split(raw, ";") {
			part, _, _ = strings.Cut(part, "#")
			f := strings.Fields(part)
			if len(f) == 0 {
				continue
			}
			st := simStep{op: strings.ToLower(f[0]), source: i + 1}
			want := map[string]int{"offhook": 1, "onhook": 1, "flash": 1, "dial": 2, "wait": 2, "rtp": 2, "sleep": 1, "restart": 0}
			n, ok := want[st.op]
			if !ok {
				return nil, fmt.Errorf("script line %d: unknown step %q", st.source, f[0])
			}
			if len(f)-1 != n {
				return nil, fmt.Errorf("script line %d: %s takes %d argument(s)", st.source, st.op, n)
			}
			switch st.op {
			case "sleep":
				if _, err := time.ParseDuration(f[1]); err != nil {
					return nil, fmt.Errorf("script line %d: bad duration %q", st.source, f[1])
				}
				st.arg = f[1]
			case "restart":
			default:
				l, err := strconv.Atoi(f[1])
				if err != nil || l < 1 {
					return nil, fmt.Errorf("script line %d: bad line number %q", st.source, f[1])
				}
				st.line = l
				if n == 2 {
					st.arg = f[2]
				}
				if st.op == "rtp" {
					if _, err := strconv.Atoi(st.arg); err != nil {
						return nil, fmt.Errorf("script line %d: bad packet count %q", st.source, st.arg)
					}
				}
			}
			steps = append(steps, st)
		}
	}
	return steps, nil
}

// simulator runs scripts against a fake gateway.
type simulator struct {
	gw    *mgcptest.Gateway
	out   io.Writer
	local []string // endpoint local names, line 1 first
	// mark is how many commands the gateway had received when it last
	// restarted: "armed" then needs an RQNT sent after the restart.
	mark int
}

func (s *simulator) endpoint(n int) (string, error) {
	if n < 1 || n > len(s.local) {
		return "", fmt.Errorf("no line %d (the gateway has %d)", n, len(s.local))
	}
	return s.local[n-1], nil
}

// connection returns the endpoint's first connection.
func (s *simulator) connection(local string) *mgcptest.Connection {
	st, _ := s.gw.State(local)
	if len(st.Connections) == 0 {
		return nil
	}
	return st.Connections[0]
}

func (s *simulator) waitUntil(ctx context.Context, what string, cond func() bool) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (s *simulator) run(ctx context.Context, steps []simStep) error {
	for _, st := range steps {
		if err := s.step(ctx, st); err != nil {
			return fmt.Errorf("script line %d (%s): %w", st.source, st.op, err)
		}
	}
	return nil
}

func (s *simulator) step(ctx context.Context, st simStep) error {
	var local string
	if st.line > 0 {
		var err error
		if local, err = s.endpoint(st.line); err != nil {
			return err
		}
	}
	check := func(r *mgcp.Response, err error) error {
		if errors.Is(err, mgcptest.ErrNotNotified) {
			// The phone did it; the gateway sent no NTFY (quarantined,
			// not requested, or digits still collecting), as hardware
			// would. Not a script error.
			if s.out != nil {
				fmt.Fprintf(s.out, "sim: line %d %s: %v\n", st.line, st.op, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if !r.Code.IsSuccess() {
			return fmt.Errorf("the call agent answered %d %s", r.Code, r.Comment)
		}
		return nil
	}
	switch st.op {
	case "offhook":
		return check(s.gw.OffHook(ctx, local))
	case "onhook":
		return check(s.gw.OnHook(ctx, local))
	case "flash":
		return check(s.gw.Flash(ctx, local))
	case "dial":
		return check(s.gw.Dial(ctx, local, st.arg))
	case "restart":
		s.mark = len(s.gw.Commands())
		return check(s.gw.Restart(ctx, "*", mgcp.RestartRestart, 0))
	case "sleep":
		d, _ := time.ParseDuration(st.arg)
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case "rtp":
		n, _ := strconv.ParseUint(st.arg, 10, 64)
		return s.waitUntil(ctx, fmt.Sprintf("%d RTP packets each way on line %d", n, st.line), func() bool {
			c := s.connection(local)
			return c != nil && c.RTP != nil && c.RTP.Sent() >= n && c.RTP.Received() >= n
		})
	case "wait":
		what := st.arg
		return s.waitUntil(ctx, what+" on line "+strconv.Itoa(st.line), func() bool {
			es, _ := s.gw.State(local)
			switch strings.ToLower(what) {
			case "armed":
				if len(es.Signals) != 0 || len(es.Connections) != 0 {
					return false
				}
				rearmed := false
				cmds := s.gw.Commands()
				for _, c := range cmds[min(s.mark, len(cmds)):] {
					if c.Verb == mgcp.VerbRQNT && c.Endpoint.Local == local {
						rearmed = true
					}
				}
				if !rearmed {
					return false
				}
				for _, r := range es.RequestedEvents {
					if r.Is("L", "hd") {
						return true
					}
				}
				return false
			case "connected":
				for _, c := range es.Connections {
					if c.Mode == mgcp.ModeSendRecv {
						return true
					}
				}
				return false
			}
			pkg, name, _ := strings.Cut(what, "/")
			for _, sig := range es.Signals {
				if sig.Is(pkg, name) {
					return true
				}
			}
			return false
		})
	}
	return fmt.Errorf("unknown step %q", st.op)
}

func newSimCmd(a *app) *cobra.Command {
	var (
		listen, callAgent, domain, script, steps, mediaIP string
		lines                                             int
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

` + simHelp + `

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
			parsed, err := parseSimScript(text)
			if err != nil {
				return usageErr("%v", err)
			}
			if lines < 1 {
				return usageErr("--lines must be at least 1")
			}
			conn, err := net.ListenPacket("udp", listen)
			if err != nil {
				return usageErr("--listen: %v", err)
			}
			gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Conn: conn, Domain: domain, Lines: lines, CallAgent: callAgent,
				MediaIP: mediaIP, RTP: true})
			if err != nil {
				_ = conn.Close()
				return usageErr("%v", err)
			}
			defer gw.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sim := &simulator{gw: gw, out: a.stdout}
			for i := 1; i <= lines; i++ {
				sim.local = append(sim.local, "aaln/"+strconv.Itoa(i))
			}
			fmt.Fprintf(a.stdout, "sim: gateway %s on %s, %d line(s), call agent %s\n", domain, gw.Addr(), lines, callAgent)
			rctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if _, err := gw.Restart(rctx, "*", mgcp.RestartRestart, 0); err != nil {
				fmt.Fprintf(a.stdout, "sim: RSIP not answered: %v\n", err)
			}
			if err := sim.run(rctx, parsed); err != nil {
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
	f.StringVar(&script, "script", "", "file with script steps")
	f.StringVar(&steps, "do", "", "script steps given inline, separated by ';'")
	f.BoolVar(&serve, "serve", false, "keep serving after the script until interrupted")
	f.DurationVar(&timeout, "timeout", time.Minute, "limit for the whole script")
	return c
}
