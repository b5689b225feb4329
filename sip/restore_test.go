package sip_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	mgsip "github.com/mgsip/mgsip/sip"
)

func restoreStack(t *testing.T, opts ...mgsip.StackOption) *mgsip.Stack {
	t.Helper()
	s, err := mgsip.NewStack(mgsip.Config{Listeners: []mgsip.Listener{{Listen: "127.0.0.1:0"}}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, s))
	return s
}

// waitKind reads events until one of kind k.
func waitKind(t *testing.T, d *mgsip.Dialog, k mgsip.EventKind) mgsip.Event {
	t.Helper()
	for {
		if e := next(t, d); e.Kind == k {
			return e
		}
	}
}

// TestRestoreUAS: the far end calls node A, which answers; A dies (its
// stack closes without a BYE); node B restores the dialog from A's
// export, sends the target refresh, and from then on the far end's
// re-INVITE and BYE reach B and are served there.
func TestRestoreUAS(t *testing.T) {
	far := restoreStack(t)
	a, b := restoreStack(t), restoreStack(t)
	served := make(chan *mgsip.Dialog, 1)
	a.SetHandler(mgsip.HandlerFunc(func(d *mgsip.Dialog) {
		if err := d.Answer([]byte(answer)); err != nil {
			t.Error(err)
			return
		}
		served <- d
		<-d.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fd := call(t, far, a, ctx)
	waitKind(t, fd, mgsip.EventAnswered)
	ad := <-served
	st, ok := ad.State()
	if !ok {
		t.Fatal("no state for a confirmed dialog")
	}
	if st.UAC || st.CallID != fd.CallID || st.LocalTag == "" || st.RemoteTag == "" || st.RemoteCSeq == 0 ||
		!strings.Contains(st.RemoteTarget, "2001@") || !strings.Contains(st.RemoteURI, "2001@") || string(st.LocalSDP) != answer {
		t.Fatalf("exported %+v", st)
	}
	_ = a.Close() // killed: no BYE

	bd, err := b.RestoreDialog(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RestoreDialog(st); err == nil {
		t.Error("the same dialog restored twice")
	}
	if err := bd.TargetRefresh(ctx, []byte(answer)); err != nil {
		t.Fatalf("target refresh: %v", err)
	}
	// The far end's re-INVITE goes to B now and is answered there.
	got := make(chan []byte, 1)
	go func() {
		ans, err := fd.Reinvite(ctx, []byte(offer))
		if err != nil {
			t.Error(err)
		}
		got <- ans
	}()
	if e := waitKind(t, bd, mgsip.EventReinvite); string(e.SDP) != offer {
		t.Errorf("re-INVITE offer %q", e.SDP)
	}
	if err := bd.AcceptReinvite([]byte(answer)); err != nil {
		t.Fatal(err)
	}
	if ans := <-got; string(ans) != answer {
		t.Errorf("re-INVITE answer %q", ans)
	}
	// ... and its BYE too.
	if err := fd.Bye(ctx); err != nil {
		t.Fatalf("far end's BYE: %v", err)
	}
	waitKind(t, bd, mgsip.EventBye)
	select {
	case <-bd.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("restored dialog not ended by the BYE")
	}
}

// TestRestoreUAC: node A calls the far end; B restores the dialog; the
// far end receives B's target refresh with B's Contact and CSeq A's
// next number, then B's BYE with the one after, and accepts both.
func TestRestoreUAC(t *testing.T) {
	cap := &capture{}
	far := restoreStack(t, mgsip.WithPacketConnWrapper(cap.wrap))
	a, b := restoreStack(t), restoreStack(t)
	ended := make(chan mgsip.Event, 1)
	far.SetHandler(mgsip.HandlerFunc(func(d *mgsip.Dialog) {
		if err := d.Answer([]byte(answer)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			if e.Kind == mgsip.EventBye {
				ended <- e
			}
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ad := call(t, a, far, ctx)
	waitKind(t, ad, mgsip.EventAnswered)
	// A request of A's before the takeover moves the CSeq on.
	if err := ad.Info(ctx, "application/dtmf-relay", []byte("Signal=5\r\nDuration=160\r\n")); err != nil {
		t.Fatal(err)
	}
	st, ok := ad.State()
	if !ok || !st.UAC || st.RemoteCSeq != 0 || !strings.Contains(st.LocalURI, "2001@") || !strings.Contains(st.LocalContact, "2001@") {
		t.Fatalf("exported %+v", st)
	}
	inv := cap.request(t, "INVITE")
	if st.LocalCSeq != inv.CSeq().SeqNo+1 {
		t.Fatalf("local CSeq %d after INVITE %d and one INFO", st.LocalCSeq, inv.CSeq().SeqNo)
	}
	_ = a.Close()

	bd, err := b.RestoreDialog(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := bd.TargetRefresh(ctx, []byte(offer)); err != nil {
		t.Fatalf("target refresh: %v", err)
	}
	bPort := strconv.Itoa(b.LocalAddr().(*net.UDPAddr).Port)
	// The far end allows UPDATE (our stack's Allow): the refresh is one.
	up := cap.request(t, "UPDATE")
	if up.CSeq().SeqNo != st.LocalCSeq+1 {
		t.Errorf("UPDATE CSeq %d, want %d", up.CSeq().SeqNo, st.LocalCSeq+1)
	}
	if c := up.Contact(); c == nil || strconv.Itoa(c.Address.Port) != bPort || c.Address.User != "2001" {
		t.Errorf("UPDATE Contact %v, want 2001@ port %s", up.Contact(), bPort)
	}
	if tag, _ := up.From().Params.Get("tag"); tag != st.LocalTag || up.CallID().Value() != st.CallID {
		t.Errorf("UPDATE From %v Call-ID %v", up.From(), up.CallID())
	}
	if err := bd.Bye(ctx); err != nil {
		t.Fatalf("BYE from B: %v", err)
	}
	bye := cap.request(t, "BYE")
	if bye.CSeq().SeqNo != st.LocalCSeq+2 {
		t.Errorf("BYE CSeq %d, want %d", bye.CSeq().SeqNo, st.LocalCSeq+2)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the far end never saw the BYE")
	}
}

// TestRestoreSessionTimer: a restored dialog keeps refreshing the
// session when it is the refresher.
func TestRestoreSessionTimer(t *testing.T) {
	cap := &capture{}
	far := restoreStack(t, mgsip.WithPacketConnWrapper(cap.wrap))
	b := restoreStack(t)
	far.SetHandler(mgsip.HandlerFunc(func(d *mgsip.Dialog) {
		_ = d.Answer([]byte(answer))
		<-d.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := restoreStack(t)
	ad := call(t, a, far, ctx)
	waitKind(t, ad, mgsip.EventAnswered)
	st, ok := ad.State()
	if !ok {
		t.Fatal("no state")
	}
	_ = a.Close()
	st.SessionInterval, st.Refresher = 2*time.Second, true
	bd, err := b.RestoreDialog(st)
	if err != nil {
		t.Fatal(err)
	}
	if iv, refresh := bd.SessionInterval(); iv != 2*time.Second || !refresh {
		t.Fatalf("session interval %v refresher %v", iv, refresh)
	}
	// Half the interval later, B refreshes (an UPDATE: the far end allows it).
	up := cap.request(t, "UPDATE", "Session-Expires: 2;refresher=uac")
	if up.CSeq().SeqNo != st.LocalCSeq+1 {
		t.Errorf("refresh CSeq %d, want %d", up.CSeq().SeqNo, st.LocalCSeq+1)
	}
	_ = bd.Bye(ctx)
}

func TestRestoreRefusesBadState(t *testing.T) {
	b := restoreStack(t)
	good := mgsip.DialogState{CallID: "c1", LocalTag: "l", RemoteTag: "r", RemoteTarget: "sip:far@127.0.0.1:5",
		LocalURI: "<sip:1001@x>", RemoteURI: "<sip:far@y>"}
	for name, mutate := range map[string]func(*mgsip.DialogState){
		"no call-id":     func(s *mgsip.DialogState) { s.CallID = "" },
		"no remote tag":  func(s *mgsip.DialogState) { s.RemoteTag = "" },
		"header break":   func(s *mgsip.DialogState) { s.RemoteURI = "<sip:far@y>\r\nX-Evil: 1" },
		"route break":    func(s *mgsip.DialogState) { s.RouteSet = []string{"<sip:p;lr>\nVia: x"} },
		"bad target":     func(s *mgsip.DialogState) { s.RemoteTarget = "<<<" },
		"negative timer": func(s *mgsip.DialogState) { s.SessionInterval = -time.Second },
	} {
		st := good
		mutate(&st)
		if d, err := b.RestoreDialog(st); err == nil {
			t.Errorf("%s: restored %v", name, d.CallID)
			_ = d.Bye(context.Background())
		}
	}
	d, err := b.RestoreDialog(good)
	if err != nil {
		t.Fatalf("good state: %v", err)
	}
	if got, ok := d.State(); !ok || got.CallID != "c1" || got.LocalTag != "l" || got.RemoteTag != "r" {
		t.Errorf("restored state %+v", got)
	}
}
