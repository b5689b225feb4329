package sip_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

const (
	offer  = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n"
	answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
)

// pair starts a caller stack and a callee stack whose inbound dialogs are
// served by h.
func pair(t *testing.T, h sip.HandlerFunc) (caller, callee *sip.Stack) {
	t.Helper()
	mk := func() *sip.Stack {
		s, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(serve(t, s))
		return s
	}
	caller, callee = mk(), mk()
	if h != nil {
		callee.SetHandler(h)
	}
	return caller, callee
}

// next waits for the next event of a dialog.
func next(t *testing.T, d *sip.Dialog) sip.Event {
	t.Helper()
	select {
	case e, ok := <-d.Events():
		if !ok {
			t.Fatal("dialog ended without the expected event")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no dialog event within 10s")
	}
	return sip.Event{}
}

func call(t *testing.T, caller, callee *sip.Stack, ctx context.Context) *sip.Dialog {
	t.Helper()
	d, err := caller.Invite(ctx, sip.Call{From: sip.Account{User: "2001", DisplayName: "Line 1"}, To: "2002",
		Peer: callee.LocalAddr().String(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCallAnsweredByeFromEitherSide(t *testing.T) {
	for _, calleeHangsUp := range []bool{false, true} {
		got := make(chan string, 8)
		proceed := make(chan struct{})
		caller, callee := pair(t, func(d *sip.Dialog) {
			got <- d.RequestUser() + " from " + d.FromUser() + " " + d.FromName()
			if !bytes.Equal(d.RemoteSDP(), []byte(offer)) {
				got <- "bad offer"
			}
			_ = d.Ring()
			<-proceed // answer once the caller saw the ringing
			if err := d.Answer([]byte(answer)); err != nil {
				got <- err.Error()
				return
			}
			for e := range d.Events() {
				got <- "callee " + e.Kind.String()
				if e.Kind == sip.EventAnswered && calleeHangsUp {
					_ = d.Bye(context.Background())
					return
				}
			}
		})
		d := call(t, caller, callee, context.Background())
		if e := next(t, d); e.Kind != sip.EventRinging || e.Status != 180 {
			t.Fatalf("first event %+v", e)
		}
		close(proceed)
		e := next(t, d)
		if e.Kind != sip.EventAnswered || string(e.SDP) != answer || string(d.RemoteSDP()) != answer {
			t.Fatalf("answer %+v", e)
		}
		if who := <-got; who != "2002 from 2001 Line 1" {
			t.Fatalf("callee saw %q", who)
		}
		if ev := <-got; ev != "callee answered" {
			t.Fatalf("callee event %q", ev)
		}
		if calleeHangsUp {
			if e := next(t, d); e.Kind != sip.EventBye {
				t.Fatalf("caller got %+v, want bye", e)
			}
		} else {
			if err := d.Bye(context.Background()); err != nil {
				t.Fatal(err)
			}
			if ev := <-got; ev != "callee bye" {
				t.Fatalf("callee event %q", ev)
			}
		}
		select {
		case <-d.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatal("dialog context did not end")
		}
	}
}

func TestCallRejectedEarlyMediaAndNoHandler(t *testing.T) {
	proceed := make(chan struct{})
	caller, callee := pair(t, func(d *sip.Dialog) {
		_ = d.Progress([]byte(answer))
		<-proceed
		_ = d.Reject(486, "Busy Here")
	})
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventProgress || string(e.SDP) != answer {
		t.Fatalf("progress %+v", e)
	}
	close(proceed)
	if e := next(t, d); e.Kind != sip.EventFailed || e.Status != 486 {
		t.Fatalf("failure %+v", e)
	}
	// A stack without a handler answers 480.
	c2, bare := pair(t, nil)
	d2 := call(t, c2, bare, context.Background())
	if e := next(t, d2); e.Kind != sip.EventFailed || e.Status != 480 {
		t.Fatalf("no handler: %+v", e)
	}
}

func TestCancelBeforeAnswer(t *testing.T) {
	calleeEvents := make(chan sip.EventKind, 4)
	caller, callee := pair(t, func(d *sip.Dialog) {
		_ = d.Ring()
		for e := range d.Events() {
			calleeEvents <- e.Kind
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	d := call(t, caller, callee, ctx)
	if e := next(t, d); e.Kind != sip.EventRinging {
		t.Fatalf("%+v", e)
	}
	cancel() // sends CANCEL
	select {
	case k := <-calleeEvents:
		if k != sip.EventCancelled {
			t.Fatalf("callee got %v", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("callee never saw the CANCEL")
	}
	start := time.Now()
	if e := next(t, d); e.Kind != sip.EventFailed {
		t.Fatalf("caller after cancel: %+v", e)
	} else {
		t.Logf("caller: %+v after %v", e, time.Since(start))
	}
}

// TestInfoBothWays relays DTMF as SIP INFO from caller to callee and back.
func TestInfoBothWays(t *testing.T) {
	calleeGot := make(chan sip.Event, 4)
	calleeSent := make(chan error, 1)
	caller, callee := pair(t, func(d *sip.Dialog) {
		if err := d.Answer([]byte(answer)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			switch e.Kind {
			case sip.EventAnswered:
				calleeSent <- d.Info(context.Background(), "application/dtmf-relay", []byte("Signal=7\r\nDuration=160\r\n"))
			case sip.EventInfo:
				calleeGot <- e
			}
		}
	})
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("%+v", e)
	}
	if err := d.Info(context.Background(), "application/dtmf", []byte("5")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-calleeGot:
		if e.ContentType != "application/dtmf" || string(e.Body) != "5" {
			t.Errorf("callee got %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("callee got no INFO")
	}
	if err := <-calleeSent; err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != sip.EventInfo || e.ContentType != "application/dtmf-relay" || !bytes.Contains(e.Body, []byte("Signal=7")) {
		t.Errorf("caller got %+v", e)
	}
	_ = d.Bye(context.Background())
}

// TestByeBeforeAnswerCancels: Bye on an outbound call still ringing sends
// CANCEL; the callee sees the call cancelled, the caller a failure.
func TestByeBeforeAnswerCancels(t *testing.T) {
	calleeEvents := make(chan sip.EventKind, 4)
	caller, callee := pair(t, func(d *sip.Dialog) {
		_ = d.Ring()
		for e := range d.Events() {
			calleeEvents <- e.Kind
		}
	})
	d := call(t, caller, callee, context.Background())
	if e := next(t, d); e.Kind != sip.EventRinging {
		t.Fatalf("%+v", e)
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-calleeEvents:
		if k != sip.EventCancelled {
			t.Fatalf("callee got %v", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("callee never saw the CANCEL")
	}
	if e := next(t, d); e.Kind != sip.EventFailed {
		t.Fatalf("caller: %+v", e)
	}
}

// TestSessionExpiresNotBelowMinSE: an INVITE never asks for a session
// interval below the Min-SE it sends (RFC 4028 §4): a retry after a 422
// that raises only the Min-SE raises Session-Expires with it; otherwise
// both are as asked.
func TestSessionExpiresNotBelowMinSE(t *testing.T) {
	stack, _ := capturedStack(t)
	for _, tc := range []struct {
		se, minSE time.Duration
		want      string
	}{
		{100 * time.Second, 600 * time.Second, "600 600"},
		{1200 * time.Second, 600 * time.Second, "1200 600"},
	} {
		p := newPeer(t)
		ctx, cancel := context.WithCancel(context.Background())
		d, err := stack.Invite(ctx, sip.Call{From: sip.Account{User: "2001"}, To: "2002", Peer: p.addr(), SDP: []byte(offer),
			SessionExpires: tc.se, MinSE: tc.minSE})
		if err != nil {
			t.Fatal(err)
		}
		inv := p.expect("INVITE ", 5*time.Second)
		if got := hdr(inv, "Session-Expires") + " " + hdr(inv, "Min-SE"); got != tc.want {
			t.Errorf("Session-Expires, Min-SE: %q, want %q", got, tc.want)
		}
		// Refused at once, so the dialog ends without a CANCEL.
		p.send(stack.LocalAddr(), "SIP/2.0 486 Busy Here\r\nVia: "+hdr(inv, "Via")+"\r\nFrom: "+hdr(inv, "From")+"\r\nTo: "+
			hdr(inv, "To")+";tag=b1\r\nCall-ID: "+hdr(inv, "Call-ID")+"\r\nCSeq: "+hdr(inv, "CSeq")+"\r\nContent-Length: 0\r\n\r\n")
		for e := range d.Events() {
			if e.Kind != sip.EventFailed || e.Status != 486 {
				t.Errorf("event %+v", e)
			}
		}
		cancel()
	}
}
