package sip_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

// TestInteropSIPpForkedSecond2xx: SIPp plays the two UASs of a forked
// INVITE (uas_forks.xml): fork A's 200 is the call; fork B's 200, after
// it, gets its own ACK and a BYE in B's dialog (SIPp checks the To tag,
// the Request-URI and the reversed route set of both), its repetition
// the same ACK again; then A hangs up the call, which saw nothing of B.
func TestInteropSIPpForkedSecond2xx(t *testing.T) {
	sipp := startSIPp(t, "-nr", "-sf", "testdata/sipp/uas_forks.xml")
	stack, cp := capturedStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.AfterFunc(20*time.Second, func() { _ = d.Bye(context.Background()) })
	defer timeout.Stop()
	var kinds []string
	for e := range d.Events() {
		kinds = append(kinds, e.Kind.String())
		if e.Kind == sip.EventAnswered && !strings.Contains(string(e.SDP), "o=sipp 1 1") {
			t.Errorf("the call took fork B's answer: %q", e.SDP)
		}
	}
	sipp.Wait(t)
	if got := strings.Join(kinds, ","); got != "ringing,answered,bye" {
		t.Errorf("events %s, want ringing,answered,bye", got)
	}
	inv := cp.find(true, "INVITE ")[0]
	var ackA, ackB []string
	for _, a := range cp.find(true, "ACK ") {
		if strings.Contains(hdr(a, "To"), "SIPpTag02") {
			ackB = append(ackB, a)
		} else {
			ackA = append(ackA, a)
		}
	}
	if len(ackA) != 1 || len(ackB) != 2 || ackB[0] != ackB[1] {
		t.Fatalf("ACKs: %d for fork A (want 1), %d for fork B (want 2, the same)", len(ackA), len(ackB))
	}
	byes := cp.find(true, "BYE ")
	if len(byes) != 1 || !strings.Contains(hdr(byes[0], "To"), "SIPpTag02") {
		t.Fatalf("BYEs sent: %q, want one, to fork B", byes)
	}
	if cseqNum(t, ackB[0]) != cseqNum(t, inv) || cseqNum(t, byes[0]) <= cseqNum(t, inv) {
		t.Errorf("CSeq: INVITE %d, fork B's ACK %d, its BYE %d", cseqNum(t, inv), cseqNum(t, ackB[0]), cseqNum(t, byes[0]))
	}
	for _, m := range []string{ackB[0], byes[0]} {
		if r := routes(m); len(r) != 2 || !strings.Contains(r[0], "hop=uac-side") || !strings.Contains(r[1], "hop=uas-side") {
			t.Errorf("Route %q, want the Record-Route reversed", r)
		}
	}
}

// TestInteropSIPpLateReinvite2xx: SIPp answers the call, holds our
// re-INVITE with 100 Trying, and answers it 200 only after our BYE
// (uas_late_reinvite_200.xml): the wait was abandoned when the call
// ended, and the 200 still gets its ACK, and its repetition the same
// ACK again (SIPp requires both).
func TestInteropSIPpLateReinvite2xx(t *testing.T) {
	sipp := startSIPp(t, "-nr", "-sf", "testdata/sipp/uas_late_reinvite_200.xml")
	stack, cp := capturedStack(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "2001"}, To: "service", Peer: sipp.Addr, SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("event %v, want answered\n%s", e.Kind, sipp.Output.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := d.Reinvite(ctx, []byte(offer)); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for len(cp.find(false, "SIP/2.0 100 ")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no 100 Trying to the re-INVITE\n%s", sipp.Output.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // the call ends as the bridge ends it: the wait abandoned, BYE at once
	if err := <-done; err == nil {
		t.Fatal("abandoned re-INVITE returned no error")
	}
	if err := d.Bye(context.Background()); err != nil {
		t.Fatalf("BYE: %v\n%s", err, sipp.Output.String())
	}
	sipp.Wait(t)
	re := cp.find(true, "INVITE ")[1]
	var late []string
	for _, a := range cp.find(true, "ACK ") {
		if cseqNum(t, a) == cseqNum(t, re) {
			late = append(late, a)
		}
	}
	if len(late) != 2 || late[0] != late[1] {
		t.Fatalf("%d ACKs with the re-INVITE's CSeq %d, want 2, the same: %q", len(late), cseqNum(t, re), late)
	}
}
