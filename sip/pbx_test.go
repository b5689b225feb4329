package sip_test

import (
	"context"
	"strings"
	"testing"
	"time"

	mgsip "github.com/mgsip/mgsip/sip"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestSiptestPBX drives a line through the siptest PBX: the PBX calls the
// registered line (answered, then the PBX hangs up), the line calls out
// and is rung then refused 486, and called again answered and hung up by
// the PBX; the recorder saw every request.
func TestSiptestPBX(t *testing.T) {
	pbx, err := siptest.NewRegistrar(siptest.RegistrarConfig{Users: map[string]string{"2001": "pw"},
		UAS: func(in siptest.Incoming) siptest.Script {
			if in.User == "486" {
				return siptest.Script{Ring: 50 * time.Millisecond, Status: 486}
			}
			return siptest.Script{HangUpAfter: 100 * time.Millisecond}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer pbx.Close()
	stack, _ := newStack(t)
	answered := make(chan mgsip.Event, 4)
	stack.SetHandler(mgsip.HandlerFunc(func(d *mgsip.Dialog) {
		_ = d.Ring()
		if err := d.Answer([]byte(answer)); err != nil {
			t.Error(err)
			return
		}
		for e := range d.Events() {
			answered <- e
		}
	}))
	regs := stack.NewRegistrations(mgsip.RegistrationConfig{})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- regs.Run(ctx) }()
	defer func() { stop(); <-done }()
	regs.Add(mgsip.Account{ID: "l1", User: "2001", Password: "pw", Registrar: pbx.Addr()})
	waitFor(t, func() bool { _, ok := pbx.Binding("2001"); return ok })

	if rtt, code, err := stack.Ping(context.Background(), pbx.Addr(), ""); err != nil || code != 200 || rtt <= 0 {
		t.Fatalf("OPTIONS ping: %v %d %v", rtt, code, err)
	}
	call, err := pbx.Call(context.Background(), "2001", "5551234", []byte(siptest.DefaultAnswerSDP))
	if err != nil || call.Status != 200 || string(call.SDP) != answer {
		t.Fatalf("PBX call: %+v %v", call, err)
	}
	if e := <-answered; e.Kind != mgsip.EventAnswered {
		t.Fatalf("line saw %+v", e)
	}
	if err := call.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := <-answered; e.Kind != mgsip.EventBye {
		t.Fatalf("line saw %+v", e)
	}

	d, err := stack.Invite(context.Background(), mgsip.Call{From: mgsip.Account{User: "2001"}, To: "486", Peer: pbx.Addr(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != mgsip.EventRinging {
		t.Fatalf("%+v", e)
	}
	if e := next(t, d); e.Kind != mgsip.EventFailed || e.Status != 486 {
		t.Fatalf("%+v", e)
	}
	d, err = stack.Invite(context.Background(), mgsip.Call{From: mgsip.Account{User: "2001"}, To: "3000", Peer: pbx.Addr(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != mgsip.EventAnswered || !strings.Contains(string(e.SDP), "telephone-event") {
		t.Fatalf("%+v", e)
	}
	if e := next(t, d); e.Kind != mgsip.EventBye {
		t.Fatalf("%+v", e)
	}
	if got := pbx.Calls(); got[486] != 1 || got[200] != 1 {
		t.Errorf("PBX finals %v", got)
	}
	for _, m := range []string{"REGISTER", "INVITE", "ACK"} {
		if len(pbx.Received(m)) == 0 {
			t.Errorf("recorder saw no %s received", m)
		}
	}
	if n := len(pbx.Sent("BYE")); n != 2 {
		t.Errorf("recorder saw %d BYEs sent, want 2", n)
	}
}
