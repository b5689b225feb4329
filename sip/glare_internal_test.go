package sip

import (
	"context"
	"testing"
	"time"
)

// TestGlareAnswered491: while our re-INVITE is outstanding, a re-INVITE
// from the far end gets 491 Request Pending (RFC 3261 §14.2), and ours
// still completes. The far end's request is built by hand so that it can
// be sent while its own side has an offer pending.
func TestGlareAnswered491(t *testing.T) {
	mk := func() *Stack {
		s, err := NewStack(Config{Listeners: []Listener{{Listen: "127.0.0.1:0"}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { _ = s.Serve(ctx) }()
		t.Cleanup(func() { cancel(); _ = s.Close() })
		return s
	}
	a, b := mk(), mk()
	const sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\n"
	offers := make(chan *Dialog, 1)
	b.SetHandler(HandlerFunc(func(d *Dialog) {
		if err := d.Answer([]byte(sdp)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			if e.Kind == EventReinvite {
				offers <- d
			}
		}
	}))
	d, err := a.Invite(context.Background(), Call{From: Account{User: "1"}, To: "2", Peer: b.LocalAddr().String(), SDP: []byte(sdp)})
	if err != nil {
		t.Fatal(err)
	}
	if e := <-d.Events(); e.Kind != EventAnswered {
		t.Fatalf("%+v", e)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Reinvite(context.Background(), []byte(sdp))
		done <- err
	}()
	var bd *Dialog
	select {
	case bd = <-offers:
	case <-time.After(10 * time.Second):
		t.Fatal("B never saw A's re-INVITE")
	}
	req, err := bd.newRequest("INVITE")
	if err != nil {
		t.Fatal(err)
	}
	req.SetBody([]byte(sdp))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx, err := bd.transaction(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := finalResponse(ctx, tx)
	if err != nil || res.StatusCode != 491 {
		t.Fatalf("crossing re-INVITE answered %v %v, want 491", res, err)
	}
	// B's own side refuses a local offer while A's is pending.
	if _, err := bd.Reinvite(ctx, []byte(sdp)); err != ErrOfferPending {
		t.Fatalf("local offer during a pending one: %v", err)
	}
	if err := bd.AcceptReinvite([]byte(sdp)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = d.Bye(context.Background())
}
