package bridge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
)

// Refused resume: the MDCX that takes a held call off hold (M: sendrecv)
// refused by the gateway, with an error code or no answer at all. The
// call stays held (its connection inactive, the far end not re-INVITEd
// to sendrecv), the phone hears the error tone, and the next flash tries
// again. One test per way back to a held call.

// waitingCall: aaln/1 talks to 2000, then the PBX calls it from 5550002
// and that call waits (waiting tone). The channel gets the PBX side's
// outcome of the waiting call (nil when it failed); ctx gives it up.
func waitingCall(ctx context.Context, e *env) <-chan *siptest.OutCall {
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("first call answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	res := make(chan *siptest.OutCall, 1)
	go func() {
		out, _ := e.pbx.Call(ctx, "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- out
	}()
	e.waitSignal("aaln/1", "L/wt")
	return res
}

// refuseResume makes the gateway refuse the next MDCX M: sendrecv on
// aaln/1: with 500, or, drop set, by answering nothing.
func refuseResume(e *env, drop bool) {
	e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbMDCX, Endpoint: "aaln/1", Mode: mgcp.ModeSendRecv,
		Code: mgcp.CodeEndpointUnknown, Drop: drop, Count: 1})
}

// reinvites counts the INVITEs the PBX received in the dialog with user
// (the To of our requests in it) whose SDP has the direction attribute
// dir ("sendrecv", "sendonly").
func reinvites(e *env, user, dir string) int {
	n := 0
	for _, m := range e.pbx.Received("INVITE") {
		msg, err := sipgo.ParseMessage(m.Data)
		if err != nil {
			continue
		}
		r, ok := msg.(*sipgo.Request)
		if !ok || r.To() == nil || r.To().Address.User != user {
			continue
		}
		if strings.Contains(string(r.Body()), "a="+dir+"\r\n") {
			n++
		}
	}
	return n
}

// errorTones counts the gateway's commands for aaln/1 from index n on
// whose signals include the error tone.
func errorTones(e *env, n int) int {
	k := 0
	for _, c := range e.gw.Commands()[n:] {
		if c.Endpoint.Local != "aaln/1" {
			continue
		}
		for _, s := range c.Signals {
			if s.Is("L", "e") {
				k++
			}
		}
	}
	return k
}

// expectStillHeld checks the state after a refused resume: the modes of
// aaln/1's connections, no re-INVITE a=sendrecv to user beyond sendrecv
// before, and the error tone asked for since command n.
func expectStillHeld(t *testing.T, e *env, modes, user string, sendrecv, n int) {
	t.Helper()
	e.waitFor("the error tone", func() bool { return errorTones(e, n) > 0 })
	if m := e.modes("aaln/1"); m != modes {
		t.Errorf("after the refused resume: modes %q, want %q", m, modes)
	}
	if user == "" {
		return
	}
	// The re-INVITE would have gone at once, right after the MDCX; give
	// the PBX time to have it if it had been sent.
	time.Sleep(300 * time.Millisecond)
	if got := reinvites(e, user, "sendrecv"); got != sendrecv {
		t.Errorf("%d INVITEs a=sendrecv to %s after the refused resume, want %d", got, user, sendrecv)
	}
}

// TestResumeRefusedSIPHeld: a flash holds the PBX party (dial tone for a
// transfer), a flash goes back to it and the gateway refuses the resume
// (500, or no answer): the party stays held, no re-INVITE a=sendrecv;
// the phone hears the error tone. The next flash resumes it (MDCX
// sendrecv, re-INVITE a=sendrecv), and the call ends normally.
func TestResumeRefusedSIPHeld(t *testing.T) {
	for _, drop := range []bool{false, true} {
		name := "500"
		if drop {
			name = "timeout"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{register: true, keepalive: time.Second,
				mgcp: mgcp.Config{TMax: 1500 * time.Millisecond, MaxRTO: 500 * time.Millisecond}})
			e.offHook("aaln/1")
			e.dial("aaln/1", "2000")
			e.waitFor("answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
			e.flash("aaln/1")
			e.waitSignal("aaln/1", "L/dl")
			e.waitFor("held", func() bool { return e.modes("aaln/1") == "inactive" && reinvites(e, "2000", "sendonly") == 1 })
			before := reinvites(e, "2000", "sendrecv") // the first INVITE's offer
			refuseResume(e, drop)
			n := len(e.gw.Commands())
			e.flash("aaln/1")
			if drop {
				// The silent gateway was marked down (a line sends it
				// nothing meanwhile); its next keepalive answer brings it
				// back, and the line's request with the error tone goes.
				e.waitFor("the gateway back", func() bool {
					for _, g := range e.b.Gateways() {
						if g.Down {
							return false
						}
					}
					return true
				})
			}
			expectStillHeld(t, e, "inactive", "2000", before, n)
			e.flash("aaln/1")
			e.waitFor("resumed", func() bool { return e.modes("aaln/1") == "sendrecv" })
			e.waitFor("re-INVITE a=sendrecv", func() bool { return reinvites(e, "2000", "sendrecv") == before+1 })
			e.onHook("aaln/1")
			e.noConnections("aaln/1")
			if r := e.record(); !r.Answered || r.Number != "2000" {
				t.Errorf("record %+v", r)
			}
		})
	}
}

// TestResumeRefusedLocalHeld: the same with a local party (line 2) held
// by a flash of line 1: the flash back finds the resume refused, line 1's
// connection stays inactive with the error tone; the next flash resumes.
func TestResumeRefusedLocalHeld(t *testing.T) {
	e := newEnv(t, envOptions{lines: 2})
	e.localTalk("aaln/1", "aaln/2", "1002")
	e.flash("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	e.waitFor("held", func() bool { return e.modes("aaln/1") == "inactive" })
	refuseResume(e, false)
	n := len(e.gw.Commands())
	e.flash("aaln/1")
	expectStillHeld(t, e, "inactive", "", 0, n)
	if st := e.state("aaln/1"); !hasEvent(st, "L/hf") || !hasEvent(st, "L/hu") || hasSignal(st, "L/dl") {
		t.Errorf("after the refused resume: events %v signals %v", st.RequestedEvents, st.Signals)
	}
	e.flash("aaln/1")
	e.waitFor("resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && e.modes("aaln/2") == "sendrecv" })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.recordsN(2)
}

// TestResumeRefusedCallWaitingSwap: talking to the waiting call (the
// first one held), a flash swaps back and the gateway refuses to resume
// the first call: nothing is swapped. The first call stays held (no
// re-INVITE a=sendrecv), the second is taken back (its connection
// sendrecv again, re-INVITE a=sendrecv after its hold's a=sendonly), the
// error tone plays; the next flash swaps.
func TestResumeRefusedCallWaitingSwap(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := waitingCall(ctx, e)
	e.flash("aaln/1") // answers the waiting call, holds the first
	e.waitFor("swapped", func() bool {
		return e.modes("aaln/1") == "inactive sendrecv" && reinvites(e, "2000", "sendonly") == 1
	})
	out := <-res
	if out == nil {
		t.Fatal("the waiting call was not answered")
	}
	first := reinvites(e, "2000", "sendrecv")
	second := reinvites(e, "5550002", "sendrecv")
	refuseResume(e, false)
	n := len(e.gw.Commands())
	e.flash("aaln/1")
	expectStillHeld(t, e, "inactive sendrecv", "2000", first, n)
	e.waitFor("the second call taken back", func() bool {
		return reinvites(e, "5550002", "sendonly") == 1 && reinvites(e, "5550002", "sendrecv") == second+1
	})
	// The next flash swaps: the first call resumed, the second held.
	e.flash("aaln/1")
	e.waitFor("swapped at last", func() bool {
		return e.modes("aaln/1") == "sendrecv inactive" && reinvites(e, "2000", "sendrecv") == first+1 &&
			reinvites(e, "5550002", "sendonly") == 2
	})
	_ = out.HangUp(context.Background())
	e.waitFor("the second call gone", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.record()
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}

// TestResumeRefusedConsultationEnds: talking to A, a flash and a number
// call C (a consultation, A held); a flash while C rings gives C up and
// goes back to A, whose resume the gateway refuses: A stays held (no
// re-INVITE a=sendrecv), the error tone plays; the next flash resumes A
// rather than starting another consultation.
func TestResumeRefusedConsultationEnds(t *testing.T) {
	e := newEnv(t, envOptions{register: true, uas: func(in siptest.Incoming) siptest.Script {
		if in.User == "2999" {
			return siptest.Script{Ring: 20 * time.Second}
		}
		return siptest.Script{}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2999")
	e.waitFor("C ringing", func() bool { return e.modes("aaln/1") == "inactive recvonly" })
	before := reinvites(e, "2000", "sendrecv")
	refuseResume(e, false)
	n := len(e.gw.Commands())
	e.flash("aaln/1")
	e.waitFor("C cancelled", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	expectStillHeld(t, e, "inactive", "2000", before, n)
	if r := e.record(); r.Number != "2999" {
		t.Errorf("C's record %+v", r)
	}
	e.flash("aaln/1")
	e.waitFor("A resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && reinvites(e, "2000", "sendrecv") == before+1 })
	if st := e.state("aaln/1"); hasSignal(st, "L/dl") {
		t.Errorf("the retry flash gave dial tone: %v", st.Signals)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if r := e.record(); r.Number != "2000" || !r.Answered {
		t.Errorf("A's record %+v", r)
	}
}

// TestCallWaitingAnswerRefused: the flash that would answer the waiting
// call holds the first one, then the gateway refuses the MDCX sendrecv
// that answers the waiting call: the waiting call gets its final answer
// (500 is 404 Not Found, StatusForMGCP), the first call is taken back
// off hold (MDCX sendrecv, re-INVITE a=sendrecv) and stays the line's
// call, with the error tone; its hang-up ends it as usual.
func TestCallWaitingAnswerRefused(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := waitingCall(ctx, e)
	e.waitFor("waiting", func() bool { return e.modes("aaln/1") == "sendrecv inactive" })
	first := reinvites(e, "2000", "sendrecv")
	refuseResume(e, false)
	n := len(e.gw.Commands())
	e.flash("aaln/1")
	out := <-res
	if out == nil || out.Status != 404 {
		t.Fatalf("the waiting call's final answer: %+v", out)
	}
	e.waitFor("the first call taken back", func() bool {
		return e.modes("aaln/1") == "sendrecv" && reinvites(e, "2000", "sendonly") == 1 && reinvites(e, "2000", "sendrecv") == first+1
	})
	e.waitFor("the error tone", func() bool { return errorTones(e, n) > 0 })
	if r := e.record(); r.Number != "5550002" || r.Answered {
		t.Errorf("the waiting call's record %+v", r)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	if r := e.record(); r.Number != "2000" || !r.Answered {
		t.Errorf("the first call's record %+v", r)
	}
}

// TestResumeRefusedRecall: hanging up with the PBX party held (a flash,
// no number) rings the phone back for it; lifting the phone resumes it,
// and the gateway refuses that: the party stays held with the error tone,
// and a flash resumes it.
func TestResumeRefusedRecall(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.flash("aaln/1")
	e.waitSignal("aaln/1", "L/dl")
	e.waitFor("held", func() bool { return e.modes("aaln/1") == "inactive" })
	e.onHook("aaln/1")
	e.waitSignal("aaln/1", "L/rg")
	before := reinvites(e, "2000", "sendrecv")
	refuseResume(e, false)
	n := len(e.gw.Commands())
	e.offHook("aaln/1")
	expectStillHeld(t, e, "inactive", "2000", before, n)
	e.flash("aaln/1")
	e.waitFor("resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && reinvites(e, "2000", "sendrecv") == before+1 })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.record()
}
