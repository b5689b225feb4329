// Package sim is the Simulator behind `mgsip sim` and `mgsip demo`: a
// residential gateway built on mgcptest with real RTP, driven by a script
// of phone actions, and the demo call through a SIP PBX stand-in.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// The Simulator: a residential gateway with N analog lines built on
// mgcptest, with real RTP, driven by a script of phone actions.

// Step is one line of a Simulator script.
type Step struct {
	line   int    // 1-based line number; 0 when the step has none
	op     string // offhook, onhook, flash, dial, wait, rtp, sleep, restart
	arg    string
	source int // line in the script
}

// Help describes the script steps.
const Help = `Script steps, one per line or separated by ';' ('#' starts a comment):
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
  restart            the gateway restarts (RSIP restart for *)
Trunk channels (numbered after the lines; RFC 3064 MS or DT package):
  seize N ADDR[,ANI] the far end seizes channel N and sends ADDR (and FGD's calling number ANI):
                     sup(addr(ADDR),ani(ANI)) when the call agent asked for it
  answer N           the far end answers the call the call agent placed on channel N (ans)
  release N          the far end releases channel N (rel)
  wait N armed       on a channel: idle, watching for a seizure; "wait N answered": the call on
                     it was answered; "wait N seized": the call agent seized it and its address
                     went out (oc), so that "answer N" can follow`

// ParseScript reads a script; errors name the step.
func ParseScript(text string) ([]Step, error) {
	var steps []Step
	for i, raw := range strings.Split(text, "\n") {
		for _, part := range strings.Split(raw, ";") {
			part, _, _ = strings.Cut(part, "#")
			f := strings.Fields(part)
			if len(f) == 0 {
				continue
			}
			st := Step{op: strings.ToLower(f[0]), source: i + 1}
			want := map[string]int{"offhook": 1, "onhook": 1, "flash": 1, "dial": 2, "wait": 2, "rtp": 2, "sleep": 1, "restart": 0,
				"seize": 2, "answer": 1, "release": 1}
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
				if st.op == "seize" {
					addr, ani, comma := strings.Cut(st.arg, ",")
					if !allDigits(addr) || (comma && !allDigits(ani)) {
						return nil, fmt.Errorf("script line %d: seize wants ADDR or ADDR,ANI in digits, not %q", st.source, st.arg)
					}
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

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789*#", c) {
			return false
		}
	}
	return true
}

// Simulator runs scripts against a fake gateway.
type Simulator struct {
	GW    *mgcptest.Gateway
	Out   io.Writer
	Local []string // endpoint local names, line 1 first
	// mark is how many commands the gateway had received when it last
	// restarted: "armed" then needs an RQNT sent after the restart.
	mark int
}

func (s *Simulator) endpoint(n int) (string, error) {
	if n < 1 || n > len(s.Local) {
		return "", fmt.Errorf("no line %d (the gateway has %d)", n, len(s.Local))
	}
	return s.Local[n-1], nil
}

// Connection returns the endpoint's first connection.
func (s *Simulator) Connection(local string) *mgcptest.Connection {
	st, _ := s.GW.State(local)
	if len(st.Connections) == 0 {
		return nil
	}
	return st.Connections[0]
}

func (s *Simulator) WaitUntil(ctx context.Context, what string, cond func() bool) error {
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

func (s *Simulator) Run(ctx context.Context, steps []Step) error {
	for _, st := range steps {
		if err := s.step(ctx, st); err != nil {
			return fmt.Errorf("script line %d (%s): %w", st.source, st.op, err)
		}
	}
	return nil
}

func (s *Simulator) step(ctx context.Context, st Step) error {
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
			if s.Out != nil {
				fmt.Fprintf(s.Out, "sim: line %d %s: %v\n", st.line, st.op, err)
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
		return check(s.GW.OffHook(ctx, local))
	case "onhook":
		return check(s.GW.OnHook(ctx, local))
	case "flash":
		return check(s.GW.Flash(ctx, local))
	case "dial":
		return check(s.GW.Dial(ctx, local, st.arg))
	case "seize":
		addr, ani, _ := strings.Cut(st.arg, ",")
		return check(s.GW.Seize(ctx, local, addr, ani))
	case "answer":
		return check(s.GW.TrunkAnswer(ctx, local))
	case "release":
		return check(s.GW.TrunkRelease(ctx, local))
	case "restart":
		s.mark = len(s.GW.Commands())
		return check(s.GW.Restart(ctx, "*", mgcp.RestartRestart, 0))
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
		return s.WaitUntil(ctx, fmt.Sprintf("%d RTP packets each way on line %d", n, st.line), func() bool {
			c := s.Connection(local)
			return c != nil && c.RTP != nil && c.RTP.Sent() >= n && c.RTP.Received() >= n
		})
	case "wait":
		what := st.arg
		return s.WaitUntil(ctx, what+" on line "+strconv.Itoa(st.line), func() bool {
			es, _ := s.GW.State(local)
			switch strings.ToLower(what) {
			case "answered":
				return es.Answered
			case "seized":
				return es.Seizure == mgcptest.SeizureOutgoing && !es.NotificationState
			case "armed":
				if len(es.Signals) != 0 || len(es.Connections) != 0 || es.Seizure != "" {
					return false
				}
				rearmed := false
				cmds := s.GW.Commands()
				for _, c := range cmds[min(s.mark, len(cmds)):] {
					if c.Verb == mgcp.VerbRQNT && c.Endpoint.Local == local {
						rearmed = true
					}
				}
				if !rearmed {
					return false
				}
				for _, r := range es.RequestedEvents {
					if !es.Trunk && r.Is("L", "hd") {
						return true
					}
					if es.Trunk && strings.EqualFold(r.Name, "sup") {
						return !es.NotificationState
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
