package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/trace"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
	"github.com/sirupsen/logrus"
)

// ladder collects messages of both protocols with their time.
type ladder struct {
	mu    sync.Mutex
	start time.Time
	rows  []ladderRow
}

type ladderRow struct {
	at   time.Time
	text string
}

func (l *ladder) add(at time.Time, from, to string, b []byte) {
	first, _, _ := strings.Cut(string(b), "\n")
	first = strings.TrimRight(first, "\r")
	l.mu.Lock()
	l.rows = append(l.rows, ladderRow{at, fmt.Sprintf("%-8s --> %-8s %s", from, to, first)})
	l.mu.Unlock()
}

func (l *ladder) print(out io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.SliceStable(l.rows, func(i, j int) bool { return l.rows[i].at.Before(l.rows[j].at) })
	for _, r := range l.rows {
		fmt.Fprintf(out, "%9.3fms  %s\n", float64(r.at.Sub(l.start).Microseconds())/1000, r.text)
	}
}

// demoScript is the call the demo plays on the Simulator.
const demoScript = `restart; wait 1 armed; wait 2 armed
offhook 1; wait 1 L/dl; dial 1 %s
wait 2 L/rg; wait 1 G/rt
offhook 2; wait 1 connected; wait 2 connected
rtp 1 50; rtp 2 50
onhook 1; wait 2 L/ro
onhook 2; wait 1 armed; wait 2 armed`

// RunDemo plays the demo call on the demo configuration file.
func RunDemo(ctx context.Context, out io.Writer, file config.File) error {
	mc := file.Config
	if len(mc.Gateways) == 0 || len(mc.Peers) == 0 {
		return errors.New("the demo needs a gateway and a peer in its configuration")
	}
	lad := &ladder{start: time.Now()}
	// First compile as written, to know the lines and their accounts.
	rules, err := mapping.New(mc, mapping.Options{LookupEnv: os.LookupEnv})
	if err != nil {
		return err
	}
	if len(rules.Lines) < 2 {
		return fmt.Errorf("the demo needs two lines, the configuration has %d", len(rules.Lines))
	}
	caller, callee := rules.Lines[0], rules.Lines[1]
	if caller.Gateway != callee.Gateway {
		return errors.New("the demo needs both lines on one gateway")
	}
	users := map[string]string{}
	var locals []string
	for _, l := range rules.Lines {
		users[l.User] = l.Password.Reveal()
		if l.Gateway == caller.Gateway {
			locals = append(locals, l.Endpoint)
		}
	}

	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: users, Algorithms: []string{"SHA-256", "MD5"},
		UAS: func(siptest.Incoming) siptest.Script { return siptest.Script{Forward: true} }})
	if err != nil {
		return err
	}
	defer pbx.Close()

	var bmu sync.Mutex
	var b *bridge.Bridge
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The call agent's datagrams go into the ladder.
	tapped := &trace.Conn{PacketConn: conn, Observe: func(out bool, _, _ net.Addr, b []byte) {
		if out {
			lad.add(time.Now(), "mgsip", "gateway", b)
		} else {
			lad.add(time.Now(), "gateway", "mgsip", b)
		}
	}}
	ca := mgcp.New(tapped, file.MGCP, mgcp.WithHandler(mgcp.HandlerFunc(
		func(ctx context.Context, from netip.AddrPort, cmd *mgcp.Command) *mgcp.Response {
			bmu.Lock()
			bb := b
			bmu.Unlock()
			if bb == nil {
				return mgcp.NewResponse(cmd, mgcp.CodeTransientError)
			}
			return bb.HandleMGCP(ctx, from, cmd)
		})))
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Domain: caller.Gateway.Domain, Endpoints: locals,
		CallAgent: ca.LocalAddr().String(), RTP: true, Codecs: []string{"PCMU", "PCMA", "telephone-event"}, DisconnectedInitial: -1})
	if err != nil {
		_ = ca.Close()
		return err
	}
	defer gw.Close()

	// Point the configuration at the Simulator and the PBX.
	gwHost, gwPort, _ := net.SplitHostPort(gw.Addr())
	pbxHost, pbxPort, _ := net.SplitHostPort(pbx.Addr())
	mc.Gateways = append([]mapping.Gateway(nil), mc.Gateways...)
	for i := range mc.Gateways {
		if mc.Gateways[i].Domain == caller.Gateway.Domain {
			mc.Gateways[i].Address = gwHost
			mc.Gateways[i].Port, _ = strconv.Atoi(gwPort)
		}
	}
	mc.Peers = append([]mapping.Peer(nil), mc.Peers...)
	for i := range mc.Peers {
		mc.Peers[i].Host = pbxHost
		mc.Peers[i].Port, _ = strconv.Atoi(pbxPort)
		mc.Peers[i].Registrar = ""
	}
	if rules, err = mapping.New(mc, mapping.Options{LookupEnv: os.LookupEnv}); err != nil {
		return err
	}
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}, UserAgent: file.SIP.UserAgent})
	if err != nil {
		return err
	}
	records := make(chan bridge.CallRecord, 8)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	bb, err := bridge.New(bridge.Config{CallAgent: ca, SIP: stack, Rules: mapping.NewHolder(rules), Register: true,
		Log: logrus.NewEntry(quiet), OnCall: func(r bridge.CallRecord) { records <- r }})
	if err != nil {
		return err
	}
	bmu.Lock()
	b = bb
	bmu.Unlock()
	stack.SetHandler(bb)

	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = ca.Serve(rctx) }()
	go func() { defer wg.Done(); _ = stack.Serve(rctx) }()
	go func() { defer wg.Done(); _ = bb.Run(rctx) }()
	defer func() {
		stop()
		wg.Wait()
		_ = stack.Close()
	}()

	fmt.Fprintf(out, "mgsip demo: call agent %s, SIP %s, gateway %s (%s) at %s, PBX stand-in at %s\n",
		ca.LocalAddr(), stack.LocalAddr(), caller.Gateway.Name, caller.Gateway.Domain, gw.Addr(), pbx.Addr())
	for _, u := range []string{caller.User, callee.User} {
		sim := &Simulator{GW: gw}
		if err := sim.WaitUntil(ctx, "registration of "+u, func() bool { _, ok := pbx.Binding(u); return ok }); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "lines registered at the PBX: %s (%s), %s (%s)\n", caller.User, caller.EndpointName(), callee.User, callee.EndpointName())

	steps, err := ParseScript(fmt.Sprintf(demoScript, callee.User))
	if err != nil {
		return err
	}
	sim := &Simulator{GW: gw, Out: out, Local: locals}
	var rtp1, rtp2 [2]uint64
	err = sim.Run(ctx, steps[:len(steps)-5]) // up to the RTP checks
	if err == nil {
		for i, l := range []string{locals[0], locals[1]} {
			if c := sim.Connection(l); c != nil && c.RTP != nil {
				r := &rtp1
				if i == 1 {
					r = &rtp2
				}
				r[0], r[1] = c.RTP.Sent(), c.RTP.Received()
			}
		}
		err = sim.Run(ctx, steps[len(steps)-5:])
	}
	// The SIP side of the ladder comes from the PBX's recorder.
	for _, m := range pbx.Messages() {
		if strings.HasPrefix(m.StartLine(), "REGISTER") || strings.Contains(m.StartLine(), "Unauthorized") ||
			(strings.HasPrefix(m.StartLine(), "SIP/2.0 200") && strings.Contains(string(m.Data), "REGISTER\r\n")) {
			continue // registrations are summarized above
		}
		if m.Outgoing {
			lad.add(m.At, "PBX", "mgsip", m.Data)
		} else {
			lad.add(m.At, "mgsip", "PBX", m.Data)
		}
	}
	fmt.Fprintln(out, "ladder (MGCP between mgsip and the gateway, SIP between mgsip and the PBX; registrations left out):")
	lad.print(out)
	if err != nil {
		return err
	}
	var answered int
	timeout := time.After(5 * time.Second)
	for answered < 2 {
		select {
		case r := <-records:
			fmt.Fprintf(out, "call record: line %s %s %s: %s, %v, DLCX statistics %s\n", r.Line, r.Direction, r.Number, r.Result,
				r.Duration.Round(time.Millisecond), bridge.FormatStats(r.Stats))
			if !r.Answered {
				return fmt.Errorf("line %s: call not answered: %s", r.Line, r.Result)
			}
			answered++
		case <-timeout:
			return fmt.Errorf("only %d of the 2 call legs reported", answered)
		}
	}
	fmt.Fprintf(out, "VERDICT: OK: %s called %s through the PBX and back (MGCP -> SIP -> SIP -> MGCP); answered; RTP line 1 sent %d received %d, line 2 sent %d received %d; both lines idle and armed\n",
		caller.User, callee.User, rtp1[0], rtp1[1], rtp2[0], rtp2[1])
	return nil
}
