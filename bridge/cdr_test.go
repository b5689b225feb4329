package bridge_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestCDRFromRealCalls: the records of an outgoing call answered by the
// PBX, of an incoming call rejected busy, and of a local call carry what
// an operator bills and debugs with.
func TestCDRFromRealCalls(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	// Outgoing, answered, hung up by the phone.
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	conn := e.conn("aaln/1")
	time.Sleep(1100 * time.Millisecond) // talk for more than a second
	e.onHook("aaln/1")
	r := e.record()
	c := r.CDR()
	switch {
	case c.Direction != "outgoing" || c.Calling != "1001" || c.Called != "2000" || c.Dialled != "2000":
		t.Errorf("numbers: %+v", c)
	case c.Line != "gw/aaln/1" || c.Gateway != "gw" || c.Endpoint != "aaln/1@gw.test":
		t.Errorf("line: %+v", c)
	case c.SIPCallID == "" || c.MGCPCallID != conn.CallID || c.MGCPConnection != conn.ID:
		t.Errorf("ids: %+v (connection %s call %s)", c, conn.ID, conn.CallID)
	case !c.Answered || c.SIPStatus != 200 || c.Q850Cause != 16:
		t.Errorf("result: %+v", c)
	case c.Codec != "PCMU" || c.PtimeMS != 20:
		t.Errorf("codec: %q ptime %d", c.Codec, c.PtimeMS)
	case c.TalkMS < 1000 || c.BillableSeconds < 2 || c.SetupMS < 0 || c.DurationMS != c.SetupMS+c.TalkMS: // setup may take under 1 ms here
		t.Errorf("times: %+v", c)
	case c.RTP == nil || c.RTP.PacketsSent == nil || c.RTP.PacketsReceived == nil:
		t.Errorf("no RTP statistics: %+v", c.RTP)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"start":"20`, `"answer":"20`, `"end":"20`, `"duration_ms":`, `"billable_seconds":`,
		`"sip_call_id":`, `"mgcp_call_id":`, `"q850_cause":16`, `"codec":"PCMU"`, `"ptime_ms":20`, `"rtp":{`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("CDR JSON lacks %s: %s", key, b)
		}
	}
	var back bridge.CDR
	if err := json.Unmarshal(b, &back); err != nil || time.Time(back.End).Sub(r.End).Abs() >= time.Millisecond {
		t.Errorf("round trip: %v, end %v vs %v", err, time.Time(back.End), r.End)
	}
	if s := string(b); !strings.Contains(s, time.Time(c.Start).UTC().Format("2006-01-02T15:04:05.000Z")) {
		t.Errorf("start not in UTC with milliseconds: %s", s)
	}

	// Incoming to a line that is off hook: rejected 486, cause 17.
	e.offHook("aaln/2")
	e.waitSignal("aaln/2", "L/dl")
	oc, err := e.pbx.Call(context.Background(), "1002", "5551234", []byte(siptest.DefaultAnswerSDP))
	if oc == nil || oc.Status != 486 {
		t.Errorf("call to an off-hook line: %+v %v, want 486", oc, err)
	}
	e.onHook("aaln/2")
	e.waitSignalState("aaln/2", armed)
	select {
	case r := <-e.records:
		c := r.CDR()
		if c.Direction != "incoming" || c.Calling != "5551234" || c.Called != "1002" || c.SIPStatus != 486 || c.Q850Cause != 17 || c.Answered {
			t.Errorf("busy CDR: %+v", c)
		}
	case <-time.After(2 * time.Second):
		t.Error("no record for the call refused busy")
	}

	// Local call, not answered: the caller hangs up while it rings.
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitFor("ringing", func() bool { return hasSignal(e.state("aaln/2"), "L/rg") })
	e.onHook("aaln/1")
	e.waitSignalState("aaln/2", armed)
	for range 2 {
		c := e.record().CDR()
		if !c.Local || c.Answered || c.SIPCallID != "" {
			t.Errorf("local CDR: %+v", c)
		}
		if c.Line == "gw/aaln/2" && (c.Calling != "1001" || c.Called != "1002") {
			t.Errorf("called leg: %+v", c)
		}
	}
}

// TestCDRCauses: the Q.850 cause comes from our BYE's Reason, else normal
// clearing for an answered call, else RFC 3398's mapping of the status.
func TestCDRCauses(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		r    bridge.CallRecord
		want int
	}{
		{bridge.CallRecord{Answered: true, Answer: now, SIPStatus: 200}, 16},
		{bridge.CallRecord{Answered: true, Answer: now, ByeReason: `Q.850;cause=41;text="MGCP gateway restarted"`}, 41},
		{bridge.CallRecord{SIPStatus: 486}, 17},
		{bridge.CallRecord{SIPStatus: 404}, 1},
		{bridge.CallRecord{SIPStatus: 480}, 18},
		{bridge.CallRecord{SIPStatus: 487}, 16},
		{bridge.CallRecord{SIPStatus: 503}, 41},
		{bridge.CallRecord{SIPStatus: 499}, 21},
		{bridge.CallRecord{SIPStatus: 599}, 41},
		{bridge.CallRecord{MGCPCode: 502}, 41},
		{bridge.CallRecord{GatewayFailed: true}, 41},
		{bridge.CallRecord{SIPStatus: 408}, 102},
		{bridge.CallRecord{Direction: "local"}, 16},
	} {
		tc.r.Start, tc.r.End = now.Add(-time.Second), now
		if got := tc.r.CDR().Q850Cause; got != tc.want {
			t.Errorf("%+v: cause %d, want %d", tc.r, got, tc.want)
		}
	}
	c := bridge.CallRecord{Stats: []mgcp.ConnParam{{Name: "PS", Value: "10"}, {Name: "OR", Value: "1600"}, {Name: "JI", Value: "x"}, {Name: "LA", Value: "7"}}}.CDR()
	if c.RTP == nil || *c.RTP.PacketsSent != 10 || *c.RTP.OctetsReceived != 1600 || c.RTP.JitterMS != nil || *c.RTP.LatencyMS != 7 {
		t.Errorf("stats: %+v", c.RTP)
	}
	if c := (bridge.CallRecord{Answered: true, GatewaySDP: []byte("v=0\r\no=- A1 B2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0\r\na=ptime:30\r\n")}).CDR(); c.Codec != "PCMA" || c.PtimeMS != 30 {
		t.Errorf("codec from a static payload type: %q %d", c.Codec, c.PtimeMS)
	}
	// A dynamic payload type is named by its rtpmap, not by another
	// payload type's whose number starts the same (96 vs 9).
	dyn := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96 9 101\r\n" +
		"a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:96 opus/48000/2\r\n"
	if c := (bridge.CallRecord{Answered: true, AnswerSDP: []byte(dyn)}).CDR(); c.Codec != "opus" || c.PtimeMS != 0 {
		t.Errorf("codec from an rtpmap: %q %d", c.Codec, c.PtimeMS)
	}
	if c := (bridge.CallRecord{Answered: true, AnswerSDP: []byte(strings.Replace(dyn, "96 9 101", "9 96 101", 1))}).CDR(); c.Codec != "G722" {
		t.Errorf("codec from an rtpmap: %q", c.Codec)
	}
	if c := (bridge.CallRecord{GatewaySDP: []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")}).CDR(); c.Codec != "" {
		t.Errorf("an unanswered call has codec %q", c.Codec)
	}
}
