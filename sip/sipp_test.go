package sip_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/sip"
)

func startSIPp(t *testing.T, args ...string) *testutil.SIPp { return testutil.StartSIPp(t, args...) }

// TestInteropSIPpAnswersOurInvite: SIPp as the PBX answers our INVITE;
// once we hang up (built-in uas scenario), once SIPp does.
func TestInteropSIPpAnswersOurInvite(t *testing.T) {
	for _, sippHangsUp := range []bool{false, true} {
		scenario := []string{"-sn", "uas"}
		if sippHangsUp {
			scenario = []string{"-sf", "testdata/sipp/uas_hangs_up.xml"}
		}
		sipp := startSIPp(t, scenario...)
		stack, _ := newStack(t)
		d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
		if err != nil {
			t.Fatal(err)
		}
		var answered bool
		timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
		defer timeout.Stop()
		for e := range d.Events() {
			switch e.Kind {
			case sip.EventAnswered:
				answered = true
				if len(e.SDP) == 0 {
					t.Error("answer without SDP")
				}
				if !sippHangsUp {
					if err := d.Bye(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			case sip.EventFailed:
				t.Fatalf("call failed: %+v\n%s", e, sipp.Output.String())
			}
		}
		if !answered {
			t.Fatal("never answered")
		}
		sipp.Wait(t)
	}
}

// TestInteropSIPpCallsRegisteredLine: a line registers at Kamailio; SIPp
// calls it through Kamailio (record-routed); once SIPp hangs up, once we do.
func TestInteropSIPpCallsRegisteredLine(t *testing.T) {
	kam := startKamailio(t, "SHA-256", 3600)
	for _, weHangUp := range []bool{false, true} {
		stack, _ := newStack(t)
		events := make(chan sip.EventKind, 8)
		stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
			if d.RequestUser() != "2002" {
				_ = d.Reject(404, "Not Found")
				return
			}
			_ = d.Ring()
			if err := d.Answer([]byte(answer)); err != nil {
				t.Error(err)
				return
			}
			for e := range d.Events() {
				events <- e.Kind
				if e.Kind == sip.EventAnswered && weHangUp {
					_ = d.Bye(context.Background())
					return
				}
			}
		}))
		regs := stack.NewRegistrations(sip.RegistrationConfig{})
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- regs.Run(ctx) }()
		regs.Add(sip.Account{ID: "l2", User: "2002", Password: "pw-2002", Registrar: kam.Addr})
		deadline := time.Now().Add(10 * time.Second)
		for st, _ := regs.Status("l2"); st.State != sip.RegRegistered; st, _ = regs.Status("l2") {
			if time.Now().After(deadline) {
				t.Fatalf("registration: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// SIPp's built-in uac ignores Record-Route, so its ACK and BYE would
		// never find their way back through Kamailio: these scenarios keep
		// the route set as a phone does.
		scenario := []string{"-sf", "testdata/sipp/uac_hangs_up.xml"}
		if weHangUp {
			scenario = []string{"-sf", "testdata/sipp/uac_waits_bye.xml"}
		}
		sipp := startSIPp(t, append(scenario, "-s", "2002", kam.Addr)...)
		sipp.Wait(t)
		select {
		case first := <-events:
			if first != sip.EventAnswered {
				t.Errorf("first event %v", first)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the line never saw the call answered; sipp:\n%s", sipp.Output.String())
		}
		if !weHangUp {
			select {
			case e := <-events:
				if e != sip.EventBye {
					t.Errorf("after SIPp's BYE: %v", e)
				}
			case <-time.After(5 * time.Second):
				t.Error("SIPp's BYE never reached the line")
			}
		}
		stop()
		<-done
	}
}

// TestInteropSIPpPutsUsOnHold: SIPp answers our call, puts it on hold with
// a re-INVITE (a=sendonly), which we accept with a=recvonly (SIPp checks),
// then hangs up.
func TestInteropSIPpPutsUsOnHold(t *testing.T) {
	sipp := startSIPp(t, "-sf", "testdata/sipp/uas_holds.xml")
	stack, _ := newStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	var held, bye bool
	timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
	defer timeout.Stop()
	for e := range d.Events() {
		switch e.Kind {
		case sip.EventReinvite:
			held = strings.Contains(string(e.SDP), "a=sendonly")
			if err := d.AcceptReinvite([]byte(strings.Replace(offer, "m=audio 16000 RTP/AVP 0\r\n", "m=audio 16000 RTP/AVP 0\r\na=recvonly\r\n", 1))); err != nil {
				t.Error(err)
			}
		case sip.EventBye:
			bye = true
		case sip.EventFailed:
			t.Fatalf("%+v\n%s", e, sipp.Output.String())
		}
	}
	sipp.Wait(t)
	if !held || !bye {
		t.Errorf("held %v, bye %v", held, bye)
	}
	if !strings.Contains(string(d.RemoteSDP()), "a=sendonly") {
		t.Errorf("remote SDP not updated by the re-INVITE: %q", d.RemoteSDP())
	}
}

// TestInteropSIPpOverlappingReinvite: while SIPp's first re-INVITE waits
// for our answer, its second one gets 500 with Retry-After (RFC 3261
// §14.2; SIPp checks both); the first is then accepted.
func TestInteropSIPpOverlappingReinvite(t *testing.T) {
	sipp := startSIPp(t, "-sf", "testdata/sipp/uas_overlapping_reinvites.xml")
	stack, _ := newStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	reinvites := 0
	timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
	defer timeout.Stop()
	for e := range d.Events() {
		switch e.Kind {
		case sip.EventReinvite:
			reinvites++
			go func() {
				time.Sleep(100 * time.Millisecond) // the second re-INVITE arrives meanwhile
				_ = d.AcceptReinvite([]byte(strings.Replace(offer, "RTP/AVP 0\r\n", "RTP/AVP 0\r\na=recvonly\r\n", 1)))
			}()
		case sip.EventFailed:
			t.Fatalf("%+v\n%s", e, sipp.Output.String())
		}
	}
	sipp.Wait(t)
	if reinvites != 1 {
		t.Errorf("%d re-INVITEs reached the dialog, want only the first", reinvites)
	}
}

// TestInteropSIPpGlare: SIPp refuses our hold re-INVITE with 491 as if
// its own had crossed ours; we wait 2.1-4 s (RFC 3261 §14.1, we own the
// Call-ID) and retry; SIPp checks the retry holds and gets our BYE.
func TestInteropSIPpGlare(t *testing.T) {
	t.Parallel()
	sipp := startSIPp(t, "-sf", "testdata/sipp/uas_glare.xml")
	stack, _ := newStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v\n%s", e, sipp.Output.String())
	}
	start := time.Now()
	ans, err := d.Reinvite(context.Background(), []byte(holdOffer))
	took := time.Since(start)
	if err != nil || !strings.Contains(string(ans), "a=recvonly") {
		t.Fatalf("re-INVITE after glare: %q %v\n%s", ans, err, sipp.Output.String())
	}
	if took < 2100*time.Millisecond || took > 5*time.Second {
		t.Errorf("retry came after %v, want 2.1-4 s", took)
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
	sipp.Wait(t)
}

// TestInteropSIPpSessionTimerRefresh: SIPp answers with a 2 s session
// interval and makes us the refresher; it requires two UPDATE refreshes
// before it hangs up.
func TestInteropSIPpSessionTimerRefresh(t *testing.T) {
	t.Parallel()
	sipp := startSIPp(t, "-sf", "testdata/sipp/uas_session_timer.xml")
	stack, _ := newStackWith(t, sip.Config{MinSE: time.Second, SessionExpires: 2 * time.Second})
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	for e := range d.Events() {
		if e.Kind == sip.EventFailed {
			t.Fatalf("%+v\n%s", e, sipp.Output.String())
		}
		if e.Kind == sip.EventBye && e.Reason != "" {
			t.Fatalf("we hung up: %+v\n%s", e, sipp.Output.String())
		}
	}
	sipp.Wait(t)
}

// TestInteropSIPpSessionNotRefreshed: SIPp asks for a 3 s session as
// refresher and never refreshes; we hang up before it ends (RFC 4028 §10),
// which SIPp requires.
func TestInteropSIPpSessionNotRefreshed(t *testing.T) {
	t.Parallel()
	stack, _ := newStackWith(t, sip.Config{MinSE: time.Second})
	ended := make(chan sip.Event, 1)
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		if err := d.Answer([]byte(answer)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			if e.Kind == sip.EventBye {
				ended <- e
			}
		}
	}))
	sipp := startSIPp(t, "-sf", "testdata/sipp/uac_no_refresh.xml", "-s", "2002", stack.LocalAddr().String())
	sipp.Wait(t)
	select {
	case e := <-ended:
		if e.Reason != "session expired" {
			t.Errorf("ended with %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dialog did not report its end")
	}
}

// TestInteropSIPpNeverAcks: SIPp never acknowledges our 200; after 64*T1
// (32 s) we hang up with BYE (RFC 3261 §13.3.1.4) and report the call
// failed. Runs in parallel with the other slow interop tests.
func TestInteropSIPpNeverAcks(t *testing.T) {
	t.Parallel()
	stack, _ := newStack(t)
	result := make(chan error, 1)
	events := make(chan sip.Event, 4)
	stack.SetHandler(sip.HandlerFunc(func(d *sip.Dialog) {
		result <- d.Answer([]byte(answer))
		for e := range d.Events() {
			events <- e
		}
	}))
	sipp := startSIPp(t, "-sf", "testdata/sipp/uac_no_ack.xml", "-timeout", "60s", "-s", "2002", stack.LocalAddr().String())
	sipp.WaitFor(t, 60*time.Second)
	if err := <-result; err == nil {
		t.Fatal("Answer succeeded without an ACK")
	}
	select {
	case e := <-events:
		if e.Kind != sip.EventFailed || e.Status != 408 {
			t.Errorf("event %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no failure event")
	}
}
