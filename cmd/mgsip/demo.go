package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/spf13/cobra"
)

func newDemoCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run a call between two lines of a simulated MGCP gateway and print the ladder",
		Long: `Start the MGCP call agent and a simulated two-line residential gateway on
loopback, then play a call: the gateway restarts, the call agent audits and
arms both lines, line 1 goes off hook and dials 1002, the call agent rings
line 2 and connects the two with CRCX/MDCX, and line 1 hangs up. Every MGCP
message is printed as a ladder. Exit status 0 only if each step got the
answer it needs.

This demo exercises the MGCP stack on its own; SIP legs join it once the
bridge lands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			if err := runDemo(ctx, a.stdout); err != nil {
				fmt.Fprintln(a.stdout, "VERDICT: FAIL:", err)
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Fprintln(a.stdout, "VERDICT: OK: call set up between aaln/1 and aaln/2 and torn down; every transaction answered")
			return nil
		},
	}
}

// tap records every datagram a PacketConn sends or receives.
type tap struct {
	net.PacketConn
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (t *tap) note(dir string, b []byte) {
	first, _, _ := strings.Cut(string(b), "\n")
	first = strings.TrimRight(first, "\r")
	t.mu.Lock()
	t.lines = append(t.lines, fmt.Sprintf("%8.3fms  %s  %s", float64(time.Since(t.start).Microseconds())/1000, dir, first))
	t.mu.Unlock()
}

func (t *tap) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := t.PacketConn.ReadFrom(b)
	if err == nil {
		t.note("CA <-- GW ", b[:n])
	}
	return n, a, err
}

func (t *tap) WriteTo(b []byte, to net.Addr) (int, error) {
	t.note("CA --> GW ", b)
	return t.PacketConn.WriteTo(b, to)
}

// demoAgent is a minimal call agent for two lines of one gateway: enough
// to show the MGCP stack carrying a whole call.
type demoAgent struct {
	ca     *mgcp.CallAgent
	gw     string
	domain string
	events chan *mgcp.Command
}

func (d *demoAgent) handle(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
	select {
	case d.events <- c:
	default:
	}
	return mgcp.NewResponse(c, mgcp.CodeOK)
}

func (d *demoAgent) ep(local string) mgcp.EndpointName {
	return mgcp.EndpointName{Local: local, Domain: d.domain}
}

func (d *demoAgent) wait(ctx context.Context, verb mgcp.Verb, what string) (*mgcp.Command, error) {
	select {
	case c := <-d.events:
		if c.Verb != verb {
			return nil, fmt.Errorf("waiting for %s (%s), got %s", verb, what, c.Verb)
		}
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for %s (%s): %w", verb, what, ctx.Err())
	}
}

func runDemo(ctx context.Context, out io.Writer) error {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	t := &tap{PacketConn: conn, start: time.Now()}
	d := &demoAgent{events: make(chan *mgcp.Command, 16), domain: "demo-gw.invalid"}
	d.ca = mgcp.New(t, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(d.handle)))
	served := make(chan error, 1)
	go func() { served <- d.ca.Serve(ctx) }()
	defer func() {
		_ = d.ca.Close()
		<-served
	}()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: d.domain, Lines: 2, CallAgent: conn.LocalAddr().String()})
	if err != nil {
		return err
	}
	defer gw.Close()
	d.gw = gw.Addr()
	ne := "ca@" + conn.LocalAddr().String()
	defer func() {
		fmt.Fprintf(out, "MGCP ladder (call agent %s, gateway %s):\n", conn.LocalAddr(), gw.Addr())
		t.mu.Lock()
		for _, l := range t.lines {
			fmt.Fprintln(out, l)
		}
		t.mu.Unlock()
	}()

	step := func(err error, what string) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	// 1. The gateway restarts; the call agent answers, lists and arms.
	go func() { _, _ = gw.Restart(ctx, "*", mgcp.RestartRestart, 0) }()
	if _, err := d.wait(ctx, mgcp.VerbRSIP, "gateway restart"); err != nil {
		return err
	}
	list, err := d.ca.AuditEndpoint(ctx, d.gw, d.ep("*"))
	if err := step(err, "AUEP *"); err != nil {
		return err
	}
	hookOff := []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hd"}, Actions: []mgcp.Action{{Code: "N"}}}}
	for i, name := range list.SpecificEndpoints() {
		ep, err := mgcp.ParseEndpointName(name)
		if err != nil {
			return err
		}
		if _, err := d.ca.NotificationRequest(ctx, d.gw, ep, mgcp.Parameters{NotifiedEntity: ne, RequestID: fmt.Sprintf("A%d", i+1), RequestedEvents: hookOff, Signals: []mgcp.Event{}}); err != nil {
			return step(err, "RQNT arm "+name)
		}
	}
	// 2. Line 1 goes off hook: dial tone and the digit map.
	go func() { _, _ = gw.OffHook(ctx, "aaln/1") }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "off-hook on aaln/1"); err != nil {
		return err
	}
	const plan = "(1xxx|*xx|0T|9x.T)"
	dm, err := mgcp.CompileDigitMap(plan)
	if err != nil {
		return err
	}
	if _, err := d.ca.NotificationRequest(ctx, d.gw, d.ep("aaln/1"), mgcp.Parameters{RequestID: "B1", DigitMap: plan,
		RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hu"}, Actions: []mgcp.Action{{Code: "N"}}},
			{Event: mgcp.Event{Package: "D", Name: "[0-9#*T]"}, Actions: []mgcp.Action{{Code: "D"}}}},
		Signals: []mgcp.Event{{Package: "L", Name: "dl"}}}); err != nil {
		return step(err, "RQNT dial tone")
	}
	// 3. Digits arrive; the plan says 1002 is complete and means line 2.
	go func() { _, _ = gw.Dial(ctx, "aaln/1", "1002") }()
	digits, err := d.wait(ctx, mgcp.VerbNTFY, "digits from aaln/1")
	if err != nil {
		return err
	}
	var dialed strings.Builder
	for _, e := range digits.ObservedEvents {
		dialed.WriteString(e.Name)
	}
	if r := dm.Match(dialed.String()); r != mgcp.Match {
		return fmt.Errorf("dialed %q is %v, not a match", dialed.String(), r)
	}
	// 4. Local switching: two connections, each given the other's SDP.
	a, err := d.ca.CreateConnection(ctx, d.gw, d.ep("aaln/1"), mgcp.Parameters{CallID: "DE1", Mode: mgcp.ModeRecvOnly,
		LocalOptions: &mgcp.LocalConnectionOptions{Codecs: []string{"PCMU"}, Packetization: mgcp.Range{Min: 20, Max: 20}}}, nil)
	if err != nil {
		return step(err, "CRCX aaln/1")
	}
	b, err := d.ca.CreateConnection(ctx, d.gw, d.ep("aaln/2"), mgcp.Parameters{CallID: "DE1", Mode: mgcp.ModeSendRecv,
		RequestID: "C2", RequestedEvents: hookOff, Signals: []mgcp.Event{{Package: "L", Name: "rg"}}}, a.SDP)
	if err != nil {
		return step(err, "CRCX aaln/2")
	}
	if _, err := d.ca.ModifyConnection(ctx, d.gw, d.ep("aaln/1"), mgcp.Parameters{CallID: "DE1", ConnectionID: a.ConnectionID, Mode: mgcp.ModeRecvOnly,
		Signals: []mgcp.Event{{Package: "G", Name: "rt"}}}, b.SDP); err != nil {
		return step(err, "MDCX aaln/1 ringback")
	}
	// 5. Line 2 answers.
	go func() { _, _ = gw.OffHook(ctx, "aaln/2") }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "answer on aaln/2"); err != nil {
		return err
	}
	if _, err := d.ca.ModifyConnection(ctx, d.gw, d.ep("aaln/1"), mgcp.Parameters{CallID: "DE1", ConnectionID: a.ConnectionID, Mode: mgcp.ModeSendRecv, Signals: []mgcp.Event{}}, nil); err != nil {
		return step(err, "MDCX aaln/1 sendrecv")
	}
	// 6. Line 1 hangs up: both connections go, both lines are re-armed.
	go func() { _, _ = gw.OnHook(ctx, "aaln/1") }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "hang-up on aaln/1"); err != nil {
		return err
	}
	for _, leg := range []struct{ ep, conn string }{{"aaln/1", a.ConnectionID}, {"aaln/2", b.ConnectionID}} {
		r, err := d.ca.DeleteConnection(ctx, d.gw, d.ep(leg.ep), mgcp.Parameters{CallID: "DE1", ConnectionID: leg.conn})
		if err != nil {
			return step(err, "DLCX "+leg.ep)
		}
		if ps, ok := r.Stat("PS"); ok {
			fmt.Fprintf(out, "%s: connection %s deleted, %s packets sent\n", leg.ep, leg.conn, ps)
		}
	}
	if st, _ := gw.State("aaln/1"); len(st.Connections) != 0 {
		return fmt.Errorf("aaln/1 still has %d connections", len(st.Connections))
	}
	return nil
}
