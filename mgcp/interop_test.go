package mgcp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/internal/trace"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// wireTap records the datagrams a PacketConn sends and receives.
type wireTap struct {
	net.PacketConn
	mu   sync.Mutex
	pkts []mgcptest.Packet
}

func (w *wireTap) add(b []byte, from, to netip.AddrPort) {
	w.mu.Lock()
	w.pkts = append(w.pkts, mgcptest.Packet{At: time.Now(), From: from, To: to, Payload: append([]byte(nil), b...)})
	w.mu.Unlock()
}

func (w *wireTap) self() netip.AddrPort { return netip.MustParseAddrPort(w.LocalAddr().String()) }

func (w *wireTap) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := w.PacketConn.ReadFrom(b)
	if err == nil {
		w.add(b[:n], netip.MustParseAddrPort(a.String()), w.self())
	}
	return n, a, err
}

func (w *wireTap) WriteTo(b []byte, a net.Addr) (int, error) {
	w.add(b, w.self(), netip.MustParseAddrPort(a.String()))
	return w.PacketConn.WriteTo(b, a)
}

// exchange runs every verb between a tapped CallAgent and the fake gateway
// over loopback, including a slow answer (100 then a final response with
// K:, then 000) and K: piggybacked on later commands.
func exchange(t *testing.T) []mgcptest.Packet {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &wireTap{PacketConn: conn}
	ca := mgcp.New(tap, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
		if c.Verb == mgcp.VerbNTFY && len(c.ObservedEvents) > 1 {
			time.Sleep(300 * time.Millisecond) // slow: provisional 100 first
		}
		return mgcp.NewResponse(c, mgcp.CodeOK)
	})))
	done := make(chan struct{})
	go func() { defer close(done); _ = ca.Serve(context.Background()) }()
	defer func() { _ = ca.Close(); <-done }()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 2, CallAgent: conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	to, ep := gw.Addr(), gw.Endpoint("aaln/1")
	must := func(_ *mgcp.Response, err error) {
		t.Helper()
		var re *mgcp.ResponseError
		if err != nil && !errors.As(err, &re) {
			t.Fatal(err)
		}
	}
	must(gw.Restart(ctx, "*", mgcp.RestartRestart, 0))
	must(ca.AuditEndpoint(ctx, to, gw.Endpoint("*")))
	must(ca.AuditEndpoint(ctx, to, ep, "R", "D", "S", "X", "N", "I", "ES", "A", "PL", "MD", "RM", "RD", "B"))
	must(ca.EndpointConfiguration(ctx, to, ep, "e:mu"))
	must(ca.NotificationRequest(ctx, to, ep, mgcp.Parameters{NotifiedEntity: "ca@" + conn.LocalAddr().String(), RequestID: "A1",
		RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hd"}, Actions: []mgcp.Action{{Code: "N"}}}}, Signals: []mgcp.Event{}}))
	must(gw.OffHook(ctx, "aaln/1"))
	must(ca.NotificationRequest(ctx, to, ep, mgcp.Parameters{RequestID: "A2", DigitMap: "(*xx|[2-9]xxx|0T)",
		RequestedEvents: []mgcp.RequestedEvent{
			{Event: mgcp.Event{Package: "L", Name: "hu"}, Actions: []mgcp.Action{{Code: "N"}}},
			{Event: mgcp.Event{Package: "D", Name: "[0-9#*T]"}, Actions: []mgcp.Action{{Code: "D"}}},
			{Event: mgcp.Event{Package: "L", Name: "hf"}, Actions: []mgcp.Action{{Code: "E", Embedded: &mgcp.EmbeddedRequest{
				Signals: []mgcp.Event{{Package: "L", Name: "dl"}}, RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hu"}}}}}}}},
		Signals: []mgcp.Event{{Package: "L", Name: "dl"}}}))
	must(gw.Dial(ctx, "aaln/1", "2017"))
	crcx, err := ca.CreateConnection(ctx, to, ep, mgcp.Parameters{CallID: "6C0B2E91", Mode: mgcp.ModeRecvOnly,
		LocalOptions: &mgcp.LocalConnectionOptions{Codecs: []string{"PCMU", "PCMA"}, Packetization: mgcp.Range{Min: 20, Max: 20}, EchoCancellation: mgcp.On}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	must(ca.CreateConnection(ctx, to, gw.Endpoint("aaln/2"), mgcp.Parameters{CallID: "6C0B2E91", Mode: mgcp.ModeInactive,
		Signals: []mgcp.Event{{Package: "L", Name: "ci", Params: []string{"06/12/09/30", `"4085550100"`, `"Front Desk"`}}, {Package: "L", Name: "rg"}}}, crcx.SDP))
	must(ca.ModifyConnection(ctx, to, ep, mgcp.Parameters{CallID: "6C0B2E91", ConnectionID: crcx.ConnectionID, Mode: mgcp.ModeSendRecv},
		[]byte("v=0\r\no=pbx 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n")))
	must(ca.AuditConnection(ctx, to, ep, crcx.ConnectionID, "C", "N", "L", "M", "LC", "RC", "P"))
	must(ca.DeleteConnection(ctx, to, ep, mgcp.Parameters{CallID: "6C0B2E91", ConnectionID: crcx.ConnectionID}))
	must(ca.DeleteConnection(ctx, to, ep, mgcp.Parameters{ConnectionID: "FFFF"})) // 515
	must(gw.DeleteConnection(ctx, "aaln/2", "A002", mgcp.Reason{Code: 900, Text: "Hardware error"}))
	must(gw.Restart(ctx, "aaln/2", mgcp.RestartGraceful, 30*time.Second))
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return tap.pkts
}

// TestWireFormatDissectedByTshark hands every message of the valid corpus
// (as our serializer writes it) and of a live exchange to Wireshark's MGCP
// dissector, and requires each datagram to be dissected as MGCP with no
// malformed-packet or expert flag.
func TestWireFormatDissectedByTshark(t *testing.T) {
	tshark := testutil.RequireProgram(t, "tshark")
	var pkts []mgcptest.Packet
	ca, gw := netip.MustParseAddrPort("127.0.0.1:2727"), netip.MustParseAddrPort("127.0.0.1:2427")
	files, _ := filepath.Glob("testdata/valid/*.txt")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := mgcp.ParseDatagram(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pkts = append(pkts, mgcptest.Packet{At: time.Now(), From: ca, To: gw, Payload: mgcp.AppendDatagram(nil, msgs...)})
	}
	live := exchange(t)
	verbs := map[string]bool{}
	for _, p := range live {
		verbs[strings.Fields(string(p.Payload))[0]] = true
	}
	for _, v := range []string{"RSIP", "AUEP", "EPCF", "RQNT", "NTFY", "CRCX", "MDCX", "AUCX", "DLCX", "100", "200", "250", "515", "000"} {
		if !verbs[v] {
			t.Errorf("live exchange lacks %s", v)
		}
	}
	// The dissector keys MGCP on ports 2427/2727; map the live exchange's
	// ephemeral ports onto them.
	var caPort uint16
	if len(live) > 0 {
		caPort = live[0].To.Port() // the first datagram is the gateway's RSIP to the call agent
	}
	for _, p := range live {
		from, to := gw, ca
		if p.From.Port() == caPort {
			from, to = ca, gw
		}
		pkts = append(pkts, mgcptest.Packet{At: p.At, From: from, To: to, Payload: p.Payload})
	}
	pcap := filepath.Join(t.TempDir(), "mgcp.pcap")
	var buf bytes.Buffer
	if err := mgcptest.WritePcap(&buf, pkts); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pcap, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tshark, "-r", pcap, "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "mgcp.req.verb", "-e", "mgcp.rsp.rspcode", "-e", "_ws.malformed", "-e", "_ws.expert.message").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(pkts) {
		t.Fatalf("tshark read %d frames, wrote %d", len(lines), len(pkts))
	}
	for i, l := range lines {
		f := strings.Split(l, "|")
		if len(f) != 5 {
			t.Fatalf("unexpected tshark line %q", l)
		}
		if f[1] == "" && f[2] == "" {
			t.Errorf("frame %s not dissected as MGCP: %q", f[0], firstLine(string(pkts[i].Payload)))
		}
		if f[3] != "" || f[4] != "" {
			t.Errorf("frame %s flagged (malformed %q, expert %q): %q", f[0], f[3], f[4], pkts[i].Payload)
		}
	}
	t.Logf("tshark dissected %d datagrams (%d corpus, %d live) as MGCP without a flag", len(pkts), len(files), len(live))

	// mgsip ladder on the live part of the same capture: every response
	// (provisional and final) is joined to its command.
	var lb bytes.Buffer
	if err := mgcptest.WritePcap(&lb, live); err != nil {
		t.Fatal(err)
	}
	var ladder strings.Builder
	if err := trace.Ladder(&lb, &ladder, trace.LadderOptions{}); err != nil {
		t.Fatal(err)
	}
	joined := 0
	for _, l := range strings.Split(ladder.String(), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || f[4] != "mgcp" || len(f[5]) != 3 || f[5] == "000" || f[5][0] < '1' || f[5][0] > '9' {
			continue // not a response, or a response acknowledgement
		}
		if strings.Contains(l, "answers no command") || !strings.Contains(l, "[") {
			t.Errorf("ladder did not join %q", l)
		}
		joined++
	}
	if joined < 10 {
		t.Errorf("ladder joined only %d responses:\n%s", joined, ladder.String())
	}
}

// startOsmoMGW runs osmo-mgw, ready once it answers an AUEP.
func startOsmoMGW(t *testing.T, ca *mgcp.CallAgent) string {
	return testutil.StartOsmoMGW(t, func(addr string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := ca.AuditEndpoint(ctx, addr, mgcp.EndpointName{Local: "rtpbridge/1", Domain: "mgw"})
		return err == nil
	})
}

func isRTP(b []byte) bool { return len(b) >= 12 && b[0]>>6 == 2 }

var (
	sdpPort = regexp.MustCompile(`(?m)^m=audio (\d+) `)
	sdpAddr = regexp.MustCompile(`(?m)^c=IN IP4 ([0-9.]+)`)
)

// TestInteropOsmoMGW drives a real media gateway nobody here wrote through
// our CallAgent: audit, CRCX with and without SDP, MDCX, DLCX and error
// answers, then checks that the SDP it returned is real by relaying RTP
// through it.
func TestInteropOsmoMGW(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := mgcp.New(conn, mgcp.Config{})
	go func() { _ = ca.Serve(context.Background()) }()
	defer ca.Close()
	mgw := startOsmoMGW(t, ca)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	au, err := ca.AuditEndpoint(ctx, mgw, mgcp.EndpointName{Local: "rtpbridge/1", Domain: "mgw"})
	if err != nil || au.Code != mgcp.CodeOK {
		t.Fatalf("AUEP: %v %v", au, err)
	}
	// Two media sockets stand in for the two far ends.
	farA, _ := net.ListenPacket("udp", "127.0.0.1:0")
	farB, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer farA.Close()
	defer farB.Close()
	sdpFor := func(c net.PacketConn) []byte {
		return []byte(fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n",
			c.LocalAddr().(*net.UDPAddr).Port))
	}

	// CRCX without SDP on "any" endpoint: the answer names it in Z:.
	c1, err := ca.CreateConnection(ctx, mgw, mgcp.EndpointName{Local: "rtpbridge/*", Domain: "mgw"},
		mgcp.Parameters{CallID: "ABC1", Mode: mgcp.ModeRecvOnly, LocalOptions: &mgcp.LocalConnectionOptions{Codecs: []string{"PCMU"}, Packetization: mgcp.Range{Min: 20, Max: 20}}}, nil)
	if err != nil {
		t.Fatalf("CRCX: %v", err)
	}
	ep, err := mgcp.ParseEndpointName(c1.SpecificEndpoint)
	if err != nil || c1.ConnectionID == "" || !sdpPort.Match(c1.SDP) {
		t.Fatalf("CRCX answer: Z=%q I=%q SDP=%q (%v)", c1.SpecificEndpoint, c1.ConnectionID, c1.SDP, err)
	}
	// CRCX with SDP on the same endpoint, send-receive.
	c2, err := ca.CreateConnection(ctx, mgw, ep, mgcp.Parameters{CallID: "ABC1", Mode: mgcp.ModeSendRecv}, sdpFor(farB))
	if err != nil || !sdpPort.Match(c2.SDP) {
		t.Fatalf("CRCX with SDP: %v %q", err, c2.SDP)
	}
	// MDCX gives the first connection its far end.
	m1, err := ca.ModifyConnection(ctx, mgw, ep, mgcp.Parameters{CallID: "ABC1", ConnectionID: c1.ConnectionID, Mode: mgcp.ModeSendRecv}, sdpFor(farA))
	if err != nil {
		t.Fatalf("MDCX: %v", err)
	}
	// With "rtp ip-probing" osmo-mgw re-binds the connection toward the
	// remote address and answers with a new descriptor: the latest one is
	// what counts.
	local1 := c1.SDP
	if len(m1.SDP) > 0 {
		local1 = m1.SDP
	}
	// RTP from far end A to connection 1 comes out of connection 2 at far
	// end B: the SDP the gateway returned describes real sockets.
	port1 := sdpPort.FindSubmatch(local1)[1]
	host := sdpAddr.FindSubmatch(local1)[1]
	to1, _ := net.ResolveUDPAddr("udp", net.JoinHostPort(string(host), string(port1)))
	rtp := append([]byte{0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef}, bytes.Repeat([]byte{0xff}, 160)...)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 2048)
		_ = farB.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, _, err := farB.ReadFrom(b)
			if err != nil {
				close(got)
				return
			}
			if isRTP(b[:n]) {
				got <- append([]byte(nil), b[:n]...)
				return
			}
		}
	}()
	for i := 0; i < 10; i++ {
		rtp[3] = byte(i)
		if _, err := farA.WriteTo(rtp, to1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p, ok := <-got; !ok || !bytes.Equal(p[12:], rtp[12:]) {
		t.Fatalf("no RTP relayed through osmo-mgw (got %x)", p)
	}

	// Error answers arrive as *ResponseError with the gateway's code.
	var re *mgcp.ResponseError
	if _, err := ca.ModifyConnection(ctx, mgw, ep, mgcp.Parameters{CallID: "ABC1", ConnectionID: "DEADBEEF", Mode: mgcp.ModeSendRecv}, nil); !errors.As(err, &re) || re.Code().Class() != mgcp.ClassPermanent {
		t.Errorf("MDCX unknown connection: %v", err)
	}
	if _, err := ca.CreateConnection(ctx, mgw, mgcp.EndpointName{Local: "rtpbridge/*", Domain: "mgw"},
		mgcp.Parameters{CallID: "ABC2", Mode: mgcp.ModeRecvOnly, LocalOptions: &mgcp.LocalConnectionOptions{Packetization: mgcp.Range{Min: 30, Max: 30}}}, nil); !errors.As(err, &re) || re.Code() != mgcp.CodePacketization {
		t.Errorf("CRCX p:30: %v", err)
	}

	// DLCX with I: answers 250 with statistics; without I: deletes the
	// rest; then the endpoint is empty (515).
	d, err := ca.DeleteConnection(ctx, mgw, ep, mgcp.Parameters{CallID: "ABC1", ConnectionID: c1.ConnectionID})
	if err != nil || d.Code != mgcp.CodeConnectionDeleted {
		t.Fatalf("DLCX: %v %v", d, err)
	}
	// Connection 1 received the ten packets far end A sent.
	if pr, ok := d.Stat("PR"); !ok || pr != "10" {
		t.Errorf("DLCX statistics: %v, want PR=10", d.ConnectionParams)
	}
	if _, err := ca.DeleteConnection(ctx, mgw, ep, mgcp.Parameters{CallID: "ABC1"}); err != nil {
		t.Fatalf("DLCX call: %v", err)
	}
	if _, err := ca.DeleteConnection(ctx, mgw, ep, mgcp.Parameters{}); !errors.As(err, &re) || re.Code() != mgcp.CodeIncorrectConnectionID {
		t.Errorf("DLCX on an empty endpoint: %v", err)
	}
	if s := ca.Stats(); s.Timeouts != 0 {
		t.Errorf("stats %+v", s)
	}
}
