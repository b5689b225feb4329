package mgcp_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// udpPair starts a CallAgent and a fake gateway on real loopback sockets.
func udpPair(t *testing.T) (*mgcp.CallAgent, *mgcptest.Gateway) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := mgcp.New(conn, mgcp.Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ca.Serve(context.Background())
	}()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{Lines: 4, CallAgent: conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = gw.Close()
		_ = ca.Close()
		<-done
	})
	return ca, gw
}

func TestTypedHelpersAgainstFakeGateway(t *testing.T) {
	ca, gw := udpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	to := gw.Addr()
	ep := gw.Endpoint("aaln/1")

	if _, err := ca.EndpointConfiguration(ctx, to, ep, "e:mu"); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NotificationRequest(ctx, to, ep, mgcp.Parameters{RequestID: "a1", NotifiedEntity: "ca@" + ca.LocalAddr().String(),
		RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "L", Name: "hd"}, Actions: []mgcp.Action{{Code: "N"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := ca.CreateConnection(ctx, to, ep, mgcp.Parameters{CallID: "C1", Mode: mgcp.ModeRecvOnly,
		LocalOptions: &mgcp.LocalConnectionOptions{Codecs: []string{"PCMA", "PCMU"}, Packetization: mgcp.Range{Min: 20, Max: 20}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ConnectionID == "" || !strings.Contains(string(r.SDP), "m=audio 16000 RTP/AVP 8 0") {
		t.Fatalf("CRCX answer %q", r)
	}
	conn := r.ConnectionID
	if _, err := ca.ModifyConnection(ctx, to, ep, mgcp.Parameters{CallID: "C1", ConnectionID: conn, Mode: mgcp.ModeSendRecv},
		[]byte("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n")); err != nil {
		t.Fatal(err)
	}
	a, err := ca.AuditConnection(ctx, to, ep, conn, "C", "M", "RC")
	if err != nil || a.CallID != "C1" || a.Mode != mgcp.ModeSendRecv || !strings.Contains(string(a.SDP), "m=audio 4000") {
		t.Fatalf("AUCX %v %v", a, err)
	}
	au, err := ca.AuditEndpoint(ctx, to, ep, "I", "ES", "X")
	if err != nil || au.ConnectionID != conn || au.RequestID != "a1" || au.EventStates[0].Name != "hu" {
		t.Fatalf("AUEP %v %v", au, err)
	}
	list, err := ca.AuditEndpoint(ctx, to, gw.Endpoint("*"))
	if err != nil || len(list.SpecificEndpoints()) != 4 {
		t.Fatalf("AUEP * %v %v", list, err)
	}
	d, err := ca.DeleteConnection(ctx, to, ep, mgcp.Parameters{CallID: "C1", ConnectionID: conn})
	if err != nil || d.Code != mgcp.CodeConnectionDeleted {
		t.Fatalf("DLCX %v %v", d, err)
	}
	if v, ok := d.Stat("PS"); !ok || v != "1000" {
		t.Errorf("P: PS = %q", v)
	}
	// A non-2xx answer is a *ResponseError carrying the response.
	_, err = ca.DeleteConnection(ctx, to, ep, mgcp.Parameters{ConnectionID: conn})
	var re *mgcp.ResponseError
	if !errors.As(err, &re) || re.Code() != mgcp.CodeIncorrectConnectionID || re.Temporary() {
		t.Fatalf("DLCX of a deleted connection: %v", err)
	}
	_, err = ca.CreateConnection(ctx, to, gw.Endpoint("aaln/9"), mgcp.Parameters{CallID: "C2", Mode: mgcp.ModeRecvOnly}, nil)
	if !errors.As(err, &re) || re.Code() != mgcp.CodeEndpointUnknown {
		t.Fatalf("CRCX on unknown endpoint: %v", err)
	}
	// Required parameters are checked before anything is sent.
	for _, f := range []func() error{
		func() error {
			_, err := ca.CreateConnection(ctx, to, ep, mgcp.Parameters{Mode: mgcp.ModeRecvOnly}, nil)
			return err
		},
		func() error { _, err := ca.ModifyConnection(ctx, to, ep, mgcp.Parameters{}, nil); return err },
		func() error { _, err := ca.NotificationRequest(ctx, to, ep, mgcp.Parameters{}); return err },
		func() error { _, err := ca.AuditConnection(ctx, to, ep, ""); return err },
		func() error { _, err := ca.EndpointConfiguration(ctx, to, ep, ""); return err },
	} {
		if err := f(); !errors.Is(err, mgcp.ErrMissingParameter) {
			t.Errorf("got %v, want ErrMissingParameter", err)
		}
	}
	// "$" lets the gateway choose; the answer names the endpoint.
	w, err := ca.CreateConnection(ctx, to, gw.Endpoint("aaln/$"), mgcp.Parameters{CallID: "C3", Mode: mgcp.ModeInactive}, nil)
	if err != nil || w.SpecificEndpoint == "" {
		t.Fatalf("CRCX $: %v %v", w, err)
	}
}

func TestGatewayOriginatedCommands(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *mgcp.Command, 8)
	ca := mgcp.New(conn, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
		got <- c
		return mgcp.NewResponse(c, mgcp.CodeOK)
	})))
	go func() { _ = ca.Serve(context.Background()) }()
	defer ca.Close()
	gw, err := mgcptest.NewGateway(mgcptest.GatewayConfig{CallAgent: conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := gw.Restart(ctx, "*", mgcp.RestartRestart, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.OffHook(ctx, "aaln/1"); err != nil {
		t.Fatal(err)
	}
	// The strict gateway reports the digits only once a request asks for
	// them (lock-step, RFC 3435 §4.4.1).
	if _, err := ca.NotificationRequest(ctx, gw.Addr(), gw.Endpoint("aaln/1"), mgcp.Parameters{RequestID: "1", DigitMap: "xxxx",
		RequestedEvents: []mgcp.RequestedEvent{{Event: mgcp.Event{Package: "D", Name: "[0-9]"}, Actions: []mgcp.Action{{Code: "D"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Dial(ctx, "aaln/1", "2017"); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.DeleteConnection(ctx, "aaln/1", "A1", mgcp.Reason{Code: 900, Text: "Hardware error"}); err != nil {
		t.Fatal(err)
	}
	rsip, hd, digits, dlcx := <-got, <-got, <-got, <-got
	if rsip.Verb != mgcp.VerbRSIP || rsip.Endpoint.Local != "*" || rsip.RestartMethod != mgcp.RestartRestart {
		t.Errorf("RSIP %v", rsip)
	}
	if hd.Verb != mgcp.VerbNTFY || !hd.ObservedEvents[0].Is("L", "hd") {
		t.Errorf("NTFY %v", hd)
	}
	if len(digits.ObservedEvents) != 4 || digits.ObservedEvents[3].Name != "7" {
		t.Errorf("digits %v", digits)
	}
	if dlcx.Verb != mgcp.VerbDLCX || dlcx.Reason.Code != 900 {
		t.Errorf("DLCX %v", dlcx)
	}
}
