package sip_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

const holdOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\na=sendonly\r\n"
const holdAnswer = "v=0\r\no=- 2 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=recvonly\r\n"

// answering returns a handler that answers, then accepts every offer with
// holdAnswer and forwards the events to got.
func answering(t *testing.T, got chan<- sip.Event, dialogs chan<- *sip.Dialog) sip.HandlerFunc {
	return func(d *sip.Dialog) {
		if dialogs != nil {
			dialogs <- d
		}
		if err := d.Answer([]byte(answer)); err != nil {
			// Once the test is over its stacks close under a call whose
			// ACK is still on the way; that is no failure.
			if t.Context().Err() == nil {
				t.Error(err)
			}
			return
		}
		for e := range d.Events() {
			if e.Kind == sip.EventReinvite || e.Kind == sip.EventUpdate {
				_ = d.AcceptReinvite([]byte(holdAnswer))
			}
			got <- e
		}
	}
}

func waitEvent(t *testing.T, ch <-chan sip.Event, kind sip.EventKind) sip.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %v event within 10s", kind)
		}
	}
}

// TestReinviteAndUpdateSent: the caller puts the call on hold with a
// re-INVITE, then changes media with an UPDATE; the callee puts it on hold
// the other way; answers come back and the remote SDP follows.
func TestReinviteAndUpdateSent(t *testing.T) {
	got := make(chan sip.Event, 16)
	dialogs := make(chan *sip.Dialog, 1)
	caller, callee := pair(t, answering(t, got, dialogs))
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v", e)
	}
	ans, err := d.Reinvite(context.Background(), []byte(holdOffer))
	if err != nil || string(ans) != holdAnswer || string(d.RemoteSDP()) != holdAnswer {
		t.Fatalf("re-INVITE: %q %v", ans, err)
	}
	if e := waitEvent(t, got, sip.EventReinvite); string(e.SDP) != holdOffer {
		t.Fatalf("callee saw %+v", e)
	}
	ans, err = d.Update(context.Background(), []byte(offer))
	if err != nil || string(ans) != holdAnswer {
		t.Fatalf("UPDATE: %q %v", ans, err)
	}
	if e := waitEvent(t, got, sip.EventUpdate); string(e.SDP) != offer {
		t.Fatalf("callee saw %+v", e)
	}
	// The callee holds: the caller accepts.
	cd := <-dialogs
	res := make(chan error, 1)
	go func() {
		a, err := cd.Reinvite(context.Background(), []byte(holdOffer))
		if err == nil && string(a) != answer {
			err = errors.New("answer " + string(a))
		}
		res <- err
	}()
	e := next(t, d)
	if e.Kind != sip.EventReinvite || string(e.SDP) != holdOffer {
		t.Fatalf("caller saw %+v", e)
	}
	if err := d.AcceptReinvite([]byte(answer)); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	// A failure answer leaves the dialog up: 488 comes back as StatusError.
	go func() {
		_, err := cd.Reinvite(context.Background(), []byte(offer))
		res <- err
	}()
	if e := next(t, d); e.Kind != sip.EventReinvite {
		t.Fatalf("%+v", e)
	}
	_ = d.RejectReinvite(488, "Not Acceptable Here")
	var se *sip.StatusError
	if err := <-res; !errors.As(err, &se) || se.Status != 488 {
		t.Fatalf("rejected re-INVITE: %v", err)
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestOfferlessBothWays: an INVITE without SDP gets the offer in the 200
// and sends the answer in the ACK; both sides see both SDPs.
func TestOfferlessBothWays(t *testing.T) {
	calleeSaw := make(chan sip.Event, 4)
	caller, callee := pair(t, func(d *sip.Dialog) {
		if len(d.RemoteSDP()) != 0 {
			t.Errorf("offerless INVITE carried %q", d.RemoteSDP())
		}
		if err := d.Answer([]byte(offer)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			calleeSaw <- e
		}
	})
	d, err := caller.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "2002",
		Peer: callee.LocalAddr().String(), AnswerOffer: func(o []byte) []byte {
			if string(o) != offer {
				t.Errorf("offer in 200: %q", o)
			}
			return []byte(answer)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != sip.EventAnswered || string(e.SDP) != offer {
		t.Fatalf("caller: %+v", e)
	}
	e := waitEvent(t, calleeSaw, sip.EventAnswered)
	if string(e.SDP) != answer {
		t.Fatalf("callee's ACK carried %q", e.SDP)
	}
	_ = d.Bye(context.Background())
}

// TestReferBothWays: blind transfer (Refer-To a number) with the implicit
// subscription's NOTIFYs, and an attended transfer whose Replaces names
// the other dialog so that its owner finds it.
func TestReferBothWays(t *testing.T) {
	got := make(chan sip.Event, 16)
	dialogs := make(chan *sip.Dialog, 2)
	caller, callee := pair(t, answering(t, got, dialogs))
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v", e)
	}
	cd := <-dialogs
	if err := d.Refer(context.Background(), "3000", nil); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, got, sip.EventRefer)
	if e.ReferToUser != "3000" || e.Replaces != "" || !strings.Contains(e.ReferredBy, "2001") {
		t.Fatalf("REFER seen as %+v", e)
	}
	if e := next(t, d); e.Kind != sip.EventReferStatus || e.Status != 100 || e.Final {
		t.Fatalf("first NOTIFY %+v", e)
	}
	for _, st := range []int{180, 200} {
		if err := cd.NotifyRefer(context.Background(), st, "x"); err != nil {
			t.Fatal(err)
		}
		if e := next(t, d); e.Kind != sip.EventReferStatus || e.Status != st || e.Final != (st == 200) {
			t.Fatalf("NOTIFY %d seen as %+v", st, e)
		}
	}
	// Attended: a second call; the caller refers the first call's far end
	// to it with Replaces.
	d2 := call(t, caller, callee, context.Background())
	if e := next(t, d2); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v", e)
	}
	cd2 := <-dialogs
	if err := d.Refer(context.Background(), "sip:3001@127.0.0.1", d2); err != nil {
		t.Fatal(err)
	}
	e = waitEvent(t, got, sip.EventRefer)
	if e.ReferToUser != "3001" || e.Replaces != d2.ReplacesValue() {
		t.Fatalf("attended REFER %+v, want Replaces %q", e, d2.ReplacesValue())
	}
	// The referred party would send INVITE with Replaces to the caller,
	// which owns d2 from the caller's side... here the callee owns cd2 as
	// the far end: Replaces names cd2 at the callee.
	if found := callee.FindReplaced(e.Replaces); found != cd2 {
		t.Fatalf("FindReplaced(%q) = %v, want the second call's dialog", e.Replaces, found)
	}
	if caller.FindReplaced(e.Replaces) != nil {
		t.Fatal("the caller matched a Replaces meant for the callee")
	}
	_ = d.Bye(context.Background())
	_ = d2.Bye(context.Background())
}

// TestMWISubscribeAndNotify: a line subscribes to message-summary through
// a digest challenge; solicited and unsolicited NOTIFYs reach the MWI
// handler; ending the context unsubscribes.
func TestMWISubscribeAndNotify(t *testing.T) {
	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"}, Algorithms: []string{"SHA-256"}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, s))
	mwi := make(chan sip.MWI, 4)
	s.SetMWIHandler(func(m sip.MWI) { mwi <- m })
	acct := sip.Account{ID: "l1", User: "2001", Password: "pw", Registrar: pbx.Addr(), Expiry: time.Minute}
	regs := s.NewRegistrations(sip.RegistrationConfig{})
	regs.Add(acct)
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- regs.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()
	waitFor(t, func() bool { _, ok := pbx.Binding("2001"); return ok })

	// Unsolicited, to the registered contact.
	if code, err := pbx.NotifyMWI(context.Background(), "2001", true, 2, 5); err != nil || code != 200 {
		t.Fatalf("unsolicited NOTIFY: %d %v", code, err)
	}
	if m := <-mwi; m.User != "2001" || !m.Waiting || m.New != 2 || m.Old != 5 {
		t.Fatalf("MWI %+v", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, sip.Subscription{Account: acct}) }()
	waitFor(t, func() bool { _, active := pbx.Subscribed("2001"); return active })
	if code, err := pbx.NotifyMWI(context.Background(), "2001", false, 0, 7); err != nil || code != 200 {
		t.Fatalf("NOTIFY in the subscription: %d %v", code, err)
	}
	if m := <-mwi; m.Waiting || m.Old != 7 {
		t.Fatalf("MWI %+v", m)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, active := pbx.Subscribed("2001"); active || n != 2 {
		t.Fatalf("after cancel: %d SUBSCRIBEs, active %v (want 2, false)", n, active)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("condition not met within 5s")
}

func TestParseMessageSummary(t *testing.T) {
	m, err := sip.ParseMessageSummary([]byte("Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n\r\n"))
	if err != nil || !m.Waiting || m.New != 2 || m.Old != 8 || m.UrgentNew != 0 || m.UrgentOld != 2 || m.Account != "sip:alice@vmail.example.com" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, bad := range []string{"", "Voice-Message: 1/1\r\n", "Messages-Waiting: maybe\r\n", "Messages-Waiting: yes\r\nVoice-Message: x/1\r\n"} {
		if _, err := sip.ParseMessageSummary([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseReferTo(t *testing.T) {
	u, rep, err := sip.ParseReferTo(`"Carol" <sip:carol@pbx.example;transport=udp?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>`)
	if err != nil || u.User != "carol" || rep != "abc@h;to-tag=1;from-tag=2" {
		t.Fatalf("%v %q %v", u, rep, err)
	}
	if _, _, err := sip.ParseReferTo("<sip:carol@pbx"); err == nil {
		t.Fatal("unterminated accepted")
	}
}

// TestSessionTimers: the caller asks for a 4 s session; the callee makes
// the caller the refresher, which refreshes with UPDATE every 2 s; a
// session below the callee's Min-SE is refused 422.
func TestSessionTimers(t *testing.T) {
	mk := func(minSE, se time.Duration) *sip.Stack {
		s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}, MinSE: minSE, SessionExpires: se})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(serve(t, s))
		return s
	}
	got := make(chan sip.Event, 16)
	dialogs := make(chan *sip.Dialog, 1)
	caller, callee := mk(time.Second, 4*time.Second), mk(time.Second, 4*time.Second)
	callee.SetHandler(answering(t, got, dialogs))
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v", e)
	}
	cd := <-dialogs
	if iv, refresher := d.SessionInterval(); iv != 4*time.Second || !refresher {
		t.Fatalf("caller: %v refresher=%v", iv, refresher)
	}
	waitFor(t, func() bool { iv, _ := cd.SessionInterval(); return iv != 0 })
	if iv, refresher := cd.SessionInterval(); iv != 4*time.Second || refresher {
		t.Fatalf("callee: %v refresher=%v", iv, refresher)
	}
	// Without refreshes the callee would hang up after 4-4/3 s; at 6 s
	// the call must still be up.
	select {
	case <-cd.Context().Done():
		t.Fatal("the callee hung up although the caller refreshes")
	case <-time.After(6 * time.Second):
	}
	_ = d.Bye(context.Background())

	strict := mk(90*time.Second, 0)
	strict.SetHandler(answering(t, got, nil))
	d2 := call(t, caller, strict, context.Background())
	if e := next(t, d2); e.Kind != sip.EventFailed || e.Status != 422 {
		t.Fatalf("short session: %+v", e)
	}
}
