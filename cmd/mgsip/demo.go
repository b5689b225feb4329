package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/spf13/cobra"
)

func newDemoCmd(a *app) *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run a call between two lines of a simulated MGCP gateway and print the ladder",
		Long: `Load the demo configuration, start the MGCP call agent and a simulated
gateway with the configuration's lines on loopback (free ports), then play a
call: the gateway restarts, the call agent audits and arms the lines, line 1
goes off hook and dials line 2's number through its dial plan, the outbound
route says "local", and the call agent rings line 2 and connects the two
with CRCX/MDCX; line 1 hangs up. Every MGCP message is printed as a ladder.
Exit status 0 only if each step got the answer it needs.

This demo exercises the MGCP stack and the mapping rules; SIP legs join it
once the bridge lands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfigFile(path, os.LookupEnv)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			if err := runDemo(ctx, a.stdout, cfg.Rules); err != nil {
				fmt.Fprintln(a.stdout, "VERDICT: FAIL:", err)
				return &exitError{code: exitFailure, err: err}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "configs/demo.yaml", "demo configuration")
	return c
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

func runDemo(ctx context.Context, out io.Writer, rules *mapping.Rules) error {
	if len(rules.Lines) < 2 {
		return fmt.Errorf("the demo needs two lines, the configuration has %d", len(rules.Lines))
	}
	caller, callee := rules.Lines[0], rules.Lines[1]
	gwRule := caller.Gateway
	if callee.Gateway != gwRule {
		return fmt.Errorf("the demo needs both lines on one gateway")
	}
	var locals []string
	for _, l := range rules.Lines {
		if l.Gateway == gwRule {
			locals = append(locals, l.Endpoint)
		}
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	t := &tap{PacketConn: conn, start: time.Now()}
	d := &demoAgent{events: make(chan *mgcp.Command, 16), domain: gwRule.Domain}
	d.ca = mgcp.New(t, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(d.handle)))
	served := make(chan error, 1)
	go func() { served <- d.ca.Serve(ctx) }()
	defer func() {
		_ = d.ca.Close()
		<-served
	}()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: gwRule.Domain, Endpoints: locals, Codecs: append(append([]string{}, gwRule.Codecs...), "telephone-event"), CallAgent: conn.LocalAddr().String()})
	if err != nil {
		return err
	}
	defer gw.Close()
	d.gw = gw.Addr()
	ne := "ca@" + conn.LocalAddr().String()
	verdict := ""
	defer func() {
		fmt.Fprintf(out, "MGCP ladder (call agent %s, gateway %s at %s):\n", conn.LocalAddr(), gwRule.Name, gw.Addr())
		t.mu.Lock()
		for _, l := range t.lines {
			fmt.Fprintln(out, l)
		}
		t.mu.Unlock()
		if verdict != "" {
			fmt.Fprintln(out, verdict)
		}
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
		if rules.LineByEndpoint(ep.Local, ep.Domain) == nil {
			return fmt.Errorf("gateway lists %s, which is not a configured line", name)
		}
		if _, err := d.ca.NotificationRequest(ctx, d.gw, ep, mgcp.Parameters{NotifiedEntity: ne, RequestID: fmt.Sprintf("A%d", i+1), RequestedEvents: hookOff, Signals: []mgcp.Event{}}); err != nil {
			return step(err, "RQNT arm "+name)
		}
	}
	// 2. The caller goes off hook: dial tone and its line's digit map.
	go func() { _, _ = gw.OffHook(ctx, caller.Endpoint) }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "off-hook on "+caller.Endpoint); err != nil {
		return err
	}
	plan := caller.DialPlan.DigitMap
	dm, err := mgcp.CompileDigitMap(plan)
	if err != nil {
		return err
	}
	if _, err := d.ca.NotificationRequest(ctx, d.gw, d.ep(caller.Endpoint), mgcp.Parameters{RequestID: "B1", DigitMap: plan,
		RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hu"}, Actions: []mgcp.Action{{Code: "N"}}},
			{Event: mgcp.Event{Package: "D", Name: "[0-9#*T]"}, Actions: []mgcp.Action{{Code: "D"}}}},
		Signals: []mgcp.Event{{Package: "L", Name: "dl"}}}); err != nil {
		return step(err, "RQNT dial tone")
	}
	// 3. The caller dials the callee's number; the digit map says complete,
	//    the outbound route says local, the rules name the line.
	go func() { _, _ = gw.Dial(ctx, caller.Endpoint, callee.User) }()
	digits, err := d.wait(ctx, mgcp.VerbNTFY, "digits from "+caller.Endpoint)
	if err != nil {
		return err
	}
	var dialed strings.Builder
	for _, e := range digits.ObservedEvents {
		dialed.WriteString(e.Name)
	}
	number := caller.ToSIP.Apply(dialed.String())
	if r := dm.Match(dialed.String()); r != mgcp.Match {
		return fmt.Errorf("dialed %q is %v in %s, not a match", dialed.String(), r, plan)
	}
	route := rules.RouteOutbound(number)
	if route == nil || !route.Local {
		return fmt.Errorf("no local route for %s", number)
	}
	target := rules.LineBySIPUser(caller.Peer.Name, number)
	if target == nil {
		return fmt.Errorf("no line is SIP user %s", number)
	}
	fmt.Fprintf(out, "%s dialed %s: route %q (local) -> line %s (%s)\n", caller.ID, number, route.Name, target.ID, target.EndpointName())
	// 4. Local switching: two connections, each given the other's SDP.
	lco := &mgcp.LocalConnectionOptions{Codecs: gwRule.Codecs, Packetization: mgcp.Range{Min: gwRule.Ptime, Max: gwRule.Ptime}}
	a, err := d.ca.CreateConnection(ctx, d.gw, d.ep(caller.Endpoint), mgcp.Parameters{CallID: "DE1", Mode: mgcp.ModeRecvOnly, LocalOptions: lco}, nil)
	if err != nil {
		return step(err, "CRCX "+caller.Endpoint)
	}
	ci := []string{time.Now().Format("01/02/15/04"), mgcp.Quote(caller.User), mgcp.Quote(caller.DisplayName)}
	b, err := d.ca.CreateConnection(ctx, d.gw, d.ep(target.Endpoint), mgcp.Parameters{CallID: "DE1", Mode: mgcp.ModeSendRecv, LocalOptions: lco,
		RequestID: "C2", RequestedEvents: hookOff, Signals: []mgcp.Event{{Package: "L", Name: "ci", Params: ci}, {Package: "L", Name: "rg"}}}, a.SDP)
	if err != nil {
		return step(err, "CRCX "+target.Endpoint)
	}
	if _, err := d.ca.ModifyConnection(ctx, d.gw, d.ep(caller.Endpoint), mgcp.Parameters{CallID: "DE1", ConnectionID: a.ConnectionID, Mode: mgcp.ModeRecvOnly,
		Signals: []mgcp.Event{{Package: "G", Name: "rt"}}}, b.SDP); err != nil {
		return step(err, "MDCX "+caller.Endpoint+" ringback")
	}
	// 5. The callee answers.
	go func() { _, _ = gw.OffHook(ctx, target.Endpoint) }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "answer on "+target.Endpoint); err != nil {
		return err
	}
	if _, err := d.ca.ModifyConnection(ctx, d.gw, d.ep(caller.Endpoint), mgcp.Parameters{CallID: "DE1", ConnectionID: a.ConnectionID, Mode: mgcp.ModeSendRecv, Signals: []mgcp.Event{}}, nil); err != nil {
		return step(err, "MDCX "+caller.Endpoint+" sendrecv")
	}
	// 6. The caller hangs up: both connections go.
	go func() { _, _ = gw.OnHook(ctx, caller.Endpoint) }()
	if _, err := d.wait(ctx, mgcp.VerbNTFY, "hang-up on "+caller.Endpoint); err != nil {
		return err
	}
	for _, leg := range []struct{ ep, conn string }{{caller.Endpoint, a.ConnectionID}, {target.Endpoint, b.ConnectionID}} {
		r, err := d.ca.DeleteConnection(ctx, d.gw, d.ep(leg.ep), mgcp.Parameters{CallID: "DE1", ConnectionID: leg.conn})
		if err != nil {
			return step(err, "DLCX "+leg.ep)
		}
		if ps, ok := r.Stat("PS"); ok {
			fmt.Fprintf(out, "%s: connection %s deleted, %s packets sent\n", leg.ep, leg.conn, ps)
		}
	}
	for _, ep := range []string{caller.Endpoint, target.Endpoint} {
		if st, _ := gw.State(ep); len(st.Connections) != 0 {
			return fmt.Errorf("%s still has %d connections", ep, len(st.Connections))
		}
	}
	verdict = fmt.Sprintf("VERDICT: OK: %s called %s (%s) through the local route; set up and torn down, every transaction answered", caller.User, callee.User, target.ID)
	return nil
}
