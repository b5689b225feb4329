package bridge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip"
)

// TestInteropTrunkOriginatedKamailio: a trunk-originated call with a real
// proxy in the path. The trunk group's provider is Kamailio (IP
// authentication toward it, record-routing); the called number 2000 is a
// SIP phone registered at Kamailio with digest. The channel seizes and
// sends 2000, the phone answers, the trunk gets the answer signal; the
// trunk releases and the phone receives the BYE through Kamailio.
func TestInteropTrunkOriginatedKamailio(t *testing.T) {
	kam := testutil.StartKamailio(t, "SHA-256", 3600)
	const answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

	var cap sipCapture
	phone, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}}, sip.WithPacketConnWrapper(cap.wrap))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		bye string
		err error
	}
	got := make(chan result, 1)
	phone.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		var r result
		if r.err = d.Answer([]byte(answer)); r.err == nil {
			for ev := range d.Events() {
				if ev.Kind == sip.EventBye {
					r.bye = "BYE"
				}
			}
		}
		got <- r
	}))
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- phone.Serve(ctx) }()
	regs := phone.NewRegistrations(sip.RegistrationConfig{})
	regsDone := make(chan error, 1)
	go func() { regsDone <- regs.Run(ctx) }()
	t.Cleanup(func() { stop(); <-regsDone; <-served; _ = phone.Close() })
	regs.Add(sip.Account{ID: "phone", User: "2000", Password: "pw-2000", Registrar: kam.Addr})
	deadline := time.Now().Add(10 * time.Second)
	for st, _ := regs.Status("phone"); st.State != sip.RegRegistered; st, _ = regs.Status("phone") {
		if time.Now().After(deadline) {
			t.Fatalf("registration at Kamailio: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}

	e := casEnvAt(t, "MS", "", nil, nil, kam.Addr)
	if _, err := e.gw.Seize(context.Background(), tch1, "2000", "2125550000"); err != nil {
		t.Fatal(err)
	}
	e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
		return st.Answered && !st.NotificationState && len(st.Connections) == 1 && st.Connections[0].Mode == "sendrecv"
	})
	if _, err := e.gw.TrunkRelease(context.Background(), tch1); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the phone's call never ended")
	}
	if r.err != nil {
		t.Fatalf("answer: %v", r.err)
	}
	if r.bye != "BYE" {
		t.Error("the phone got no BYE after the trunk released")
	}
	// Through Kamailio: its Via above ours, and its Record-Route; the
	// BYE followed the route set.
	inv := cap.request(t, "INVITE")
	if n := len(inv.GetHeaders("Via")); n < 2 {
		t.Errorf("the INVITE did not cross Kamailio (%d Via headers):\n%s", n, inv)
	}
	if inv.GetHeader("Record-Route") == nil {
		t.Errorf("no Record-Route from Kamailio:\n%s", inv)
	}
	if !strings.Contains(inv.From().Address.User, "2125550000") {
		t.Errorf("the caller's number is not the INVITE's From:\n%s", inv)
	}
	if bye := cap.request(t, "BYE"); len(bye.GetHeaders("Via")) < 2 {
		t.Errorf("the BYE did not cross Kamailio:\n%s", bye)
	}
	if rec := e.record(); !rec.Answered || rec.Called != "2000" || rec.SIPStatus != 200 {
		t.Errorf("record %+v", rec)
	}
	e.idleChannel(tch1, "MS")
}
