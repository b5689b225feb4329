package bridge_test

// Interop tests of the line features of issue 15 against real SIPp
// processes (the fault rig of interop_faults_test.go: a fake gateway,
// mgsip, SIPp as the PBX or the far end). Every wait is bounded.

import (
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
)

// TestInteropBlindTransferSIPp: line 1 calls SIPp (number 2000), flashes
// (SIPp takes the hold re-INVITE), dials 2005 and hangs up. SIPp's
// scenario needs a REFER naming 2005 at the domain of the line's peer for
// the call (pbx.example.net; not SIPp's Contact), answers 202, reports 100 and then 200 in NOTIFYs, and
// fails on a BYE before its final NOTIFY was answered. The line ends
// armed with no connection and the call record says transferred.
func TestInteropBlindTransferSIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_transferee.xml")
	r := newFaultRig(t, rigOptions{uas: uas.Addr, realm: "pbx.example.net", noThree: true})
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("the call answered", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv && hasEvent(st, "L/hf")
	})
	r.sim.flash("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.waitFor("held", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeInactive
	})
	r.sim.collect("aaln/1", "2005")
	r.sim.waitFor("the number taken (dial tone stopped)", func() bool { return !hasSignal(r.state("aaln/1"), "L/dl") })
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second) // fails unless SIPp's scenario passed
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Result != "transferred to 2005" {
		t.Errorf("record of the call: %+v", c)
	}
}

// TestInteropCallWaitingCallerIDSIPp: line 1 talks to SIPp's built-in
// UAS (number 2000) when a second SIPp calls the line's account: the
// gateway gets the waiting tone with SIPp's caller id in one signal list
// (S: L/wt,L/ci(...,"sipp","sipp"), RFC 3660). The phone hangs up (BYE to
// the UAS, which ends its scenario), rings again with the caller id,
// answers the waiting call, and SIPp hangs that one up.
func TestInteropCallWaitingCallerIDSIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sn", "uas")
	r := newFaultRig(t, rigOptions{uas: uas.Addr})
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("the call answered", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv
	})
	uac := testutil.StartSIPp(t, "-sf", "../sip/testdata/sipp/uac_hangs_up.xml", "-s", "1001", r.sipAddr)
	cid := func(what, tone string) {
		t.Helper()
		r.sim.waitSignal("aaln/1", tone)
		st := r.state("aaln/1")
		for _, s := range st.Signals {
			if s.Is("L", "ci") {
				if s.Param(1) != "sipp" || s.Param(2) != "sipp" {
					t.Errorf("%s: caller id %v", what, s)
				}
				return
			}
		}
		t.Errorf("%s without caller id: %v", what, st.Signals)
	}
	cid("waiting tone", "L/wt")
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	cid("ring back", "L/rg")
	r.sim.offHook("aaln/1")
	uac.WaitFor(t, 20*time.Second)
	r.sim.waitSignal("aaln/1", "L/ro")
	r.sim.onHook("aaln/1")
	r.waitArmed("aaln/1")
	for range 2 {
		if c := r.record(); !c.Answered {
			t.Errorf("record %+v", c)
		}
	}
}

// TestInteropReferReceivedSIPp: SIPp calls line 1's account and, once the
// phone answered, transfers the line to 2000 with REFER. mgsip accepts
// (202), calls 2000 from the line's account (routed to a second SIPp, the
// built-in UAS), reports 100, 180 and 200 in NOTIFYs and then hangs up
// the transferor's call: the transferor's scenario checks all of it. The
// phone's connection has moved to the target (one connection, its SDP,
// send-receive); hanging up ends the target's call.
func TestInteropReferReceivedSIPp(t *testing.T) {
	target := testutil.StartSIPp(t, "-sn", "uas")
	r := newFaultRig(t, rigOptions{uas: target.Addr})
	transferor := testutil.StartSIPp(t, "-sf", "testdata/sipp/uac_transfers.xml", "-s", "1001", r.sipAddr)
	r.sim.waitSignal("aaln/1", "L/rg")
	r.sim.offHook("aaln/1")
	transferor.WaitFor(t, 20*time.Second)
	r.sim.waitFor("the phone talks to the target", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv &&
			strings.Contains(string(st.Connections[0].RemoteSDP), "o=user1") // the built-in UAS's SDP
	})
	if c := r.record(); c.Result != "transferred by the far end to 2000" {
		t.Errorf("record of the transferred call: %+v", c)
	}
	r.sim.onHook("aaln/1")
	target.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered || c.Number != "2000" {
		t.Errorf("record of the new call: %+v", c)
	}
}

// TestInteropThreeWaySIPp: line 1 calls 2000 at SIPp, flashes (SIPp takes
// the hold re-INVITE), dials 2001 (a second call to SIPp, on a second
// connection), flashes again: both connections go to confrnce and the
// first call is resumed (re-INVITE); hanging up ends both calls, which
// SIPp's scenario (-m 2) needs to finish.
func TestInteropThreeWaySIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_holdable.xml", "-m", "2")
	r := newFaultRig(t, rigOptions{uas: uas.Addr})
	modes := func() string {
		var m []string
		for _, c := range r.state("aaln/1").Connections {
			m = append(m, string(c.Mode))
		}
		return strings.Join(m, " ")
	}
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("A answered", func() bool { return modes() == "sendrecv" && hasEvent(r.state("aaln/1"), "L/hf") })
	r.sim.flash("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2001")
	r.sim.waitFor("A held, C answered", func() bool { return modes() == "inactive sendrecv" })
	r.sim.flash("aaln/1")
	r.sim.waitFor("three-way", func() bool { return modes() == "confrnce confrnce" })
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	for range 2 {
		if c := r.record(); !c.Answered {
			t.Errorf("record %+v", c)
		}
	}
}

// TestInteropAttendedTransferSIPp: line 1 talks to 2000 at SIPp, flashes,
// dials 2001 (a second SIPp call), talks, hangs up: SIPp's scenario needs
// a REFER in the first call naming 2001 at the PBX domain with Replaces
// for the second call's dialog (RFC 3891), answers 202 and NOTIFY 200,
// and then needs the BYEs of both calls.
func TestInteropAttendedTransferSIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_transferable.xml", "-m", "2")
	r := newFaultRig(t, rigOptions{uas: uas.Addr, realm: "pbx.example.net"})
	modes := func() string {
		var m []string
		for _, c := range r.state("aaln/1").Connections {
			m = append(m, string(c.Mode))
		}
		return strings.Join(m, " ")
	}
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("A answered", func() bool { return modes() == "sendrecv" && hasEvent(r.state("aaln/1"), "L/hf") })
	r.sim.flash("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2001")
	r.sim.waitFor("A held, C answered", func() bool { return modes() == "inactive sendrecv" })
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	got := map[string]string{}
	for range 2 {
		c := r.record()
		got[c.Number] = c.Result
	}
	if got["2000"] != "transferred to 2001" {
		t.Errorf("records %v", got)
	}
}

// TestInteropSessionInterval422SIPp: SIPp answers line 1's INVITE with
// 422 (Min-SE: 3600); mgsip places the call again with Session-Expires
// and Min-SE 3600, which SIPp answers; the phone hangs up (BYE).
func TestInteropSessionInterval422SIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_422.xml", "-m", "2")
	r := newFaultRig(t, rigOptions{uas: uas.Addr})
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("answered after the 422", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv
	})
	r.sim.onHook("aaln/1")
	uas.WaitFor(t, 20*time.Second)
	r.waitArmed("aaln/1")
	if c := r.record(); !c.Answered {
		t.Errorf("record %+v", c)
	}
}
