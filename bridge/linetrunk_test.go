package bridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// supSent returns the sup signals the call agent sent to a channel, as
// on the wire.
func supSent(gw *mgcptest.Gateway, local string) []string { return casSent(gw, local, "sup") }

// casSent returns the MS signals named name sent to a channel.
func casSent(gw *mgcptest.Gateway, local, name string) []string {
	var out []string
	for _, c := range gw.Commands() {
		if !strings.EqualFold(c.Endpoint.Local, local) {
			continue
		}
		for _, s := range c.Signals {
			if s.Is("MS", name) {
				out = append(out, s.String())
			}
		}
	}
	return out
}

// checkYieldOrder checks what a channel that yielded in glare was sent:
// the yielded call's connection deleted before the trunk's own call
// creates one (the channel is one DS0 and holds one connection), that
// CRCX carrying the trunk call's request (rel watched), and at the end
// the trunk call's DLCX.
func checkYieldOrder(t *testing.T, gw *mgcptest.Gateway, local string) {
	t.Helper()
	var conns []string
	var trunkCRCX *mgcp.Command
	for _, c := range gw.Commands() {
		if !strings.EqualFold(c.Endpoint.Local, local) || (c.Verb != mgcp.VerbCRCX && c.Verb != mgcp.VerbDLCX) {
			continue
		}
		conns = append(conns, string(c.Verb))
		if c.Verb == mgcp.VerbCRCX && len(conns) == 3 {
			trunkCRCX = c
		}
	}
	if got := strings.Join(conns, " "); got != "CRCX DLCX CRCX DLCX" {
		t.Fatalf("connection commands on %s: %s (want the yielded call's DLCX before the trunk call's CRCX)", local, got)
	}
	rel := false
	for _, ev := range trunkCRCX.RequestedEvents {
		rel = rel || ev.Event.Is("MS", "rel")
	}
	if !rel {
		t.Errorf("the trunk call's CRCX requests %v, not MS/rel", trunkCRCX.RequestedEvents)
	}
}

// lineOnTrunk dials number from aaln/1 and waits for channel ch to be
// seized with address addr (oc reported and the next request taken).
func lineOnTrunk(e *env, number, ch, addr string) {
	e.t.Helper()
	e.offHook("aaln/1")
	e.dial("aaln/1", number)
	e.waitSignalState(ch, func(st mgcptest.EndpointState) bool {
		return st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed == addr && !st.NotificationState
	})
}

// A line's call out of a CAS trunk group: the channel is seized with
// the dialled number and the line's number (sup(addr, ani)), the line
// hears the trunk (its connection has the channel's SDP), the far end's
// answer connects both with RTP both ways; either side's release ends
// the other.
func TestLineToTrunk(t *testing.T) {
	for _, lineHangsUp := range []bool{true, false} {
		name := "line-hangs-up"
		if !lineHangsUp {
			name = "trunk-releases"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{lines: 1, trunk: 2, trunkOut: "9"})
			ctx := context.Background()
			lineOnTrunk(e, "9555", tch1, "9555")
			if got := supSent(e.gw, tch1); len(got) != 1 || got[0] != "MS/sup(addr(9555),ani(1001))" {
				t.Fatalf("sup sent: %v", got)
			}
			lc, cc := e.conn("aaln/1"), e.conn(tch1)
			e.waitFor("the line hears the channel", func() bool {
				lc = e.conn("aaln/1")
				return lc.Mode == mgcp.ModeRecvOnly && strings.Contains(string(lc.RemoteSDP), "m=audio "+strconv.Itoa(cc.RTPPort)+" ")
			})
			if cc.Mode != mgcp.ModeSendOnly || !strings.Contains(string(cc.RemoteSDP), "m=audio "+strconv.Itoa(lc.RTPPort)+" ") {
				t.Fatalf("channel connection %s with %q", cc.Mode, cc.RemoteSDP)
			}
			if st := e.state(tch2); st.Seizure != mgcptest.SeizureIdle || len(st.Connections) != 0 {
				t.Fatalf("second channel touched: %+v", st)
			}
			if _, err := e.gw.TrunkAnswer(ctx, tch1); err != nil {
				t.Fatal(err)
			}
			e.waitFor("send-receive on both", func() bool {
				return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn(tch1).Mode == mgcp.ModeSendRecv
			})
			e.waitFor("RTP both ways", func() bool { return lc.RTP.Received() > 10 && cc.RTP.Received() > 10 })
			if lineHangsUp {
				e.onHook("aaln/1")
			} else {
				e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
				if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
					t.Fatal(err)
				}
				e.waitSignal("aaln/1", "L/ro")
				e.onHook("aaln/1")
			}
			e.idleChannel(tch1, "MS")
			e.noConnections("aaln/1")
			for range 2 {
				if r := e.record(); !r.Answered || r.Direction != "local" {
					t.Errorf("record %+v", r)
				}
			}
		})
	}
}

// The hunt: a channel whose gateway refuses the CRCX is passed over for
// the next one; when no channel can take the call the line hears busy,
// and no connection is left.
func TestLineToTrunkHunt(t *testing.T) {
	t.Run("next channel", func(t *testing.T) {
		e := newEnv(t, envOptions{lines: 1, trunk: 2, trunkOut: "9"})
		e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbCRCX, Endpoint: tch1, Code: 502, Count: 1})
		lineOnTrunk(e, "9555", tch2, "9555")
		if got := supSent(e.gw, tch1); len(got) != 0 {
			t.Errorf("refused channel seized: %v", got)
		}
		e.onHook("aaln/1")
		e.idleChannel(tch2, "MS")
		e.noConnections("aaln/1")
	})
	t.Run("all busy", func(t *testing.T) {
		e := newEnv(t, envOptions{lines: 1, trunk: 2, trunkOut: "9"})
		e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbCRCX, Endpoint: tch1, Code: 502, Count: 1})
		e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbCRCX, Endpoint: tch2, Code: 502, Count: 1})
		e.offHook("aaln/1")
		e.dial("aaln/1", "9555")
		e.waitSignal("aaln/1", "L/bz")
		e.noConnections("aaln/1")
		e.onHook("aaln/1")
		var busy bool
		for range 3 { // the line's call and the two channels' attempts
			r := e.record()
			busy = busy || (r.Line == "gw/aaln/1" && r.Result == "all trunk channels busy")
		}
		if !busy {
			t.Error("no busy record for the line")
		}
		for _, ch := range []string{tch1, tch2} {
			e.idleChannel(ch, "MS")
		}
	})
}

// Glare on the first channel: yield gives it to the trunk's own call
// (placed at the PBX) and the line's call takes the second channel;
// keep seizes the first channel again and the trunk's attempt is lost.
func TestLineToTrunkGlare(t *testing.T) {
	for _, rule := range []string{"yield", "keep"} {
		t.Run(rule, func(t *testing.T) {
			e := newEnv(t, envOptions{lines: 1, trunk: 2, trunkOut: "9", glare: rule})
			ctx := context.Background()
			if err := e.gw.ArmGlare(tch1, "2000", ""); err != nil {
				t.Fatal(err)
			}
			ch := tch1
			if rule == "yield" {
				ch = tch2
			}
			lineOnTrunk(e, "9555", ch, "9555")
			if _, err := e.gw.TrunkAnswer(ctx, ch); err != nil {
				t.Fatal(err)
			}
			e.waitFor("send-receive", func() bool {
				return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn(ch).Mode == mgcp.ModeSendRecv
			})
			if rule == "yield" {
				// The trunk's call went to the PBX and was answered there.
				e.waitFor("the trunk's INVITE", func() bool { return len(e.pbx.Received("INVITE")) == 1 })
				e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool { return st.Answered && !st.NotificationState })
				if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
					t.Fatal(err)
				}
			} else if n := len(e.pbx.Received("INVITE")); n != 0 {
				t.Errorf("%d INVITEs: the trunk's seizure should have lost", n)
			}
			e.onHook("aaln/1")
			e.idleChannel(tch1, "MS")
			e.idleChannel(tch2, "MS")
			e.noConnections("aaln/1")
			if rule == "yield" {
				checkYieldOrder(t, e.gw, tch1)
			}
		})
	}
}

// A trunk-originated call whose number routes to a local line rings it
// with the ANI as caller id; the phone's answer answers the trunk (ans)
// and both hear each other; a number routed locally that no line has
// gives the trunk reorder.
func TestTrunkToLocalLine(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		e := newEnv(t, envOptions{lines: 1, trunk: 1})
		ctx := context.Background()
		if _, err := e.gw.Seize(ctx, tch1, "1001", "2125550000"); err != nil {
			t.Fatal(err)
		}
		st := e.waitSignalState("aaln/1", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
		cid := false
		for _, s := range st.Signals {
			cid = cid || (s.Is("L", "ci") && s.Param(1) == "2125550000")
		}
		if !cid {
			t.Errorf("no caller id 2125550000 with the ring: %v", st.Signals)
		}
		e.offHook("aaln/1")
		e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool { return st.Answered && !st.NotificationState })
		lc, cc := e.conn("aaln/1"), e.conn(tch1)
		e.waitFor("send-receive on both", func() bool {
			return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn(tch1).Mode == mgcp.ModeSendRecv
		})
		e.waitFor("RTP both ways", func() bool { return lc.RTP.Received() > 10 && cc.RTP.Received() > 10 })
		if n := len(e.pbx.Received("INVITE")); n != 0 {
			t.Errorf("%d INVITEs at the PBX", n)
		}
		e.onHook("aaln/1")
		e.idleChannel(tch1, "MS")
		e.noConnections("aaln/1")
		for range 2 {
			if r := e.record(); !r.Answered || r.Direction != "local" {
				t.Errorf("record %+v", r)
			}
		}
	})
	t.Run("line busy", func(t *testing.T) {
		e := newEnv(t, envOptions{lines: 1, trunk: 1})
		ctx := context.Background()
		// The gateway gives dial tone by itself (the idle request's
		// embedded E: action, RFC 3435 §2.3.3), so mgsip still takes the
		// line for idle: the ring's CRCX is refused 401 (phone off hook).
		// The trunk hears busy, its connection is deleted, and the line
		// goes on dialling.
		e.offHook("aaln/1")
		e.waitSignal("aaln/1", "L/dl")
		if _, err := e.gw.Seize(ctx, tch1, "1001", "2125550000"); err != nil {
			t.Fatal(err)
		}
		e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
			return hasSignal(st, "MS/bz") && len(st.Connections) == 0
		})
		e.waitSignal("aaln/1", "L/dl")
		e.noConnections("aaln/1")
		if !strings.Contains(verbs(e.gw.Commands(), "aaln/1"), "CRCX") {
			t.Fatal("no ring CRCX on the line: not the case meant")
		}
		e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
		if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
			t.Fatal(err)
		}
		e.idleChannel(tch1, "MS")
		e.onHook("aaln/1")
	})
	t.Run("line in a call", func(t *testing.T) {
		// A line mgsip knows to be busy (talking to line 2) is not
		// offered the trunk's call: no CRCX on it, busy to the trunk.
		e := newEnv(t, envOptions{lines: 2, trunk: 1})
		ctx := context.Background()
		e.offHook("aaln/1")
		e.dial("aaln/1", "1002")
		e.waitSignal("aaln/2", "L/rg")
		e.offHook("aaln/2")
		e.waitFor("the lines talk", func() bool {
			return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn("aaln/2").Mode == mgcp.ModeSendRecv
		})
		before := verbs(e.gw.Commands(), "aaln/1")
		if _, err := e.gw.Seize(ctx, tch1, "1001", "2125550000"); err != nil {
			t.Fatal(err)
		}
		e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
			return hasSignal(st, "MS/bz") && len(st.Connections) == 0 && !st.NotificationState
		})
		if got := strings.TrimPrefix(verbs(e.gw.Commands(), "aaln/1"), before); strings.Contains(got, "CRCX") {
			t.Errorf("the busy line was offered the call: %s", got)
		}
		if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
			t.Fatal(err)
		}
		e.idleChannel(tch1, "MS")
		e.onHook("aaln/1")
		e.onHook("aaln/2")
		e.noConnections("aaln/1")
		e.noConnections("aaln/2")
	})
	t.Run("no such line", func(t *testing.T) {
		e := newEnv(t, envOptions{lines: 1, trunk: 1})
		ctx := context.Background()
		if _, err := e.gw.Seize(ctx, tch1, "1009", ""); err != nil {
			t.Fatal(err)
		}
		e.waitSignal(tch1, "MS/ro")
		e.waitFor("rel watched", func() bool { return !e.gw.InNotificationState(tch1) })
		if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
			t.Fatal(err)
		}
		e.idleChannel(tch1, "MS")
		if n := len(e.pbx.Received("INVITE")); n != 0 {
			t.Errorf("%d INVITEs at the PBX", n)
		}
	})
}

// The phone hangs up while the hunt is offering its call (the channel's
// CRCX held back): the channel, seized meanwhile, is released at once
// (rel, rlc) and nothing is left on either endpoint.
func TestLineToTrunkAbandoned(t *testing.T) {
	e := newEnv(t, envOptions{lines: 1, trunk: 1, trunkOut: "9"})
	e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbCRCX, Endpoint: tch1, Delay: 300 * time.Millisecond, Count: 1})
	e.offHook("aaln/1")
	e.dial("aaln/1", "9555")
	e.waitFor("the channel's CRCX", func() bool { return strings.Contains(verbs(e.gw.Commands(), tch1), "CRCX") })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("the channel seized and released", func() bool {
		return len(supSent(e.gw, tch1)) == 1 && len(casSent(e.gw, tch1, "rel")) == 1
	})
	e.idleChannel(tch1, "MS")
	for range 2 {
		if r := e.record(); r.Answered {
			t.Errorf("record %+v", r)
		}
	}
}

// A trunk group without a CAS package (signaling: none) has no seizure:
// its first free channel is connected at once, send-receive both ways,
// and hanging up deletes both connections; the channel gets no request.
func TestLineToTrunkWithoutSignaling(t *testing.T) {
	e := newEnv(t, envOptions{lines: 1, trunk: 2, trunkOut: "9", trunkNone: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "9555")
	e.waitFor("send-receive on both", func() bool {
		return e.conn("aaln/1").Mode == mgcp.ModeSendRecv && e.conn(tch1).Mode == mgcp.ModeSendRecv
	})
	lc, cc := e.conn("aaln/1"), e.conn(tch1)
	e.waitFor("RTP both ways", func() bool { return lc.RTP.Received() > 10 && cc.RTP.Received() > 10 })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.noConnections(tch1)
	if got := verbs(e.gw.Commands(), tch1); got != "AUEP CRCX MDCX DLCX" { // the audit at start, then the call
		t.Errorf("channel commands %s", got)
	}
	if n := len(e.gw.Connections(tch2)); n != 0 || verbs(e.gw.Commands(), tch2) != "AUEP" {
		t.Errorf("second channel used: %s", verbs(e.gw.Commands(), tch2))
	}
	for range 2 {
		if r := e.record(); !r.Answered {
			t.Errorf("record %+v", r)
		}
	}
}

// A gateway that refuses ani(...) in the sup signal (538) gets the
// seizure again without it, and the call goes on.
func TestLineToTrunkANIRefused(t *testing.T) {
	e := newEnv(t, envOptions{lines: 1, trunk: 1, trunkOut: "9"})
	e.gw.Inject(mgcptest.Injection{Verb: mgcp.VerbRQNT, Endpoint: tch1, Code: mgcp.CodeEventParameterError, Count: 1})
	lineOnTrunk(e, "9555", tch1, "9555")
	if got := supSent(e.gw, tch1); len(got) != 2 || got[0] != "MS/sup(addr(9555),ani(1001))" || got[1] != "MS/sup(addr(9555))" {
		t.Fatalf("sup sent: %v", got)
	}
	e.onHook("aaln/1")
	e.idleChannel(tch1, "MS")
	e.noConnections("aaln/1")
}
