package bridge_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestCallWaitingBehindLocalCall: line 1 talks to line 2 (switched
// locally, no SIP) when the PBX calls line 1: the waiting tone plays and
// a second, inactive connection waits. A flash holds the local call
// (inactive) and answers the SIP call; a second flash swaps back. When
// line 2 hangs up, the held SIP call is resumed; when the PBX hangs up
// too, the phone goes on hook and nothing is left.
func TestCallWaitingBehindLocalCall(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitFor("local call talking", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	local := e.conn("aaln/1").ID
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, err := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		res <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	modes := func() map[bool]mgcp.ConnectionMode { // by "is the local call's"
		m := map[bool]mgcp.ConnectionMode{}
		for _, c := range e.state("aaln/1").Connections {
			m[c.ID == local] = c.Mode
		}
		return m
	}
	if m := modes(); len(m) != 2 || m[true] != mgcp.ModeSendRecv || m[false] != mgcp.ModeInactive {
		t.Fatalf("while waiting: %v", m)
	}
	e.flash("aaln/1")
	sipCall := <-res
	if sipCall == nil || sipCall.Status != 200 {
		t.Fatalf("waiting call: %+v", sipCall)
	}
	e.waitFor("local held, SIP talking", func() bool {
		m := modes()
		return len(m) == 2 && m[true] == mgcp.ModeInactive && m[false] == mgcp.ModeSendRecv
	})
	e.flash("aaln/1")
	e.waitFor("swapped back", func() bool {
		m := modes()
		return len(m) == 2 && m[true] == mgcp.ModeSendRecv && m[false] == mgcp.ModeInactive
	})
	e.waitFor("hold re-INVITE at the PBX", func() bool {
		for _, m := range e.pbx.Received("INVITE") {
			if strings.Contains(string(m.Data), "a=sendonly") {
				return true
			}
		}
		return false
	})
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.waitFor("SIP call resumed", func() bool {
		m := modes()
		return len(m) == 1 && m[false] == mgcp.ModeSendRecv
	})
	if err := sipCall.HangUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitFor("SIP call gone", func() bool { return len(e.state("aaln/1").Connections) == 0 })
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
}

// TestHeldLocalCallHangsUp: the local call is the held one (the SIP call
// was answered with a flash) when line 2 hangs up: only the held
// connection goes, the SIP call talks on; hanging up line 1 then ends the
// SIP call (BYE at the PBX).
func TestHeldLocalCallHangsUp(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitSignal("aaln/2", "L/rg")
	e.offHook("aaln/2")
	e.waitFor("local call talking", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	local := e.conn("aaln/1").ID
	res := make(chan *siptest.OutCall, 1)
	go func() {
		c, _ := e.pbx.Call(context.Background(), "1001", "5550002", []byte(siptest.DefaultAnswerSDP))
		res <- c
	}()
	e.waitSignal("aaln/1", "L/wt")
	e.flash("aaln/1")
	if c := <-res; c == nil || c.Status != 200 {
		t.Fatalf("waiting call: %+v", c)
	}
	e.onHook("aaln/2")
	e.noConnections("aaln/2")
	e.waitFor("only the SIP call left, talking", func() bool {
		cs := e.state("aaln/1").Connections
		return len(cs) == 1 && cs[0].ID != local && cs[0].Mode == mgcp.ModeSendRecv
	})
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
}
