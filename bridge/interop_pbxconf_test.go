package bridge_test

import (
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/mgsip/mgsip/internal/testutil"
)

// media is the c= and m= lines of a request's SDP.
func media(q *sipgo.Request) string {
	var out []string
	for _, ln := range strings.Split(string(q.Body()), "\r\n") {
		if strings.HasPrefix(ln, "c=") || strings.HasPrefix(ln, "m=audio ") {
			out = append(out, ln)
		}
	}
	return strings.Join(out, " ")
}

// TestInteropKamailioPBXConferenceDrop: three-way calling at the PBX
// conference (a gateway that cannot mix, features.conference_uri 8000)
// through Kamailio: line 1 talks to A (3000, a SIPp that takes a REFER
// to the conference), flashes, talks to C (2001), flashes again. mgsip
// calls 8000 twice (the phone's call with the gateway's SDP, then C's leg
// with C's SDP), re-INVITEs C with the conference's answer, and REFERs A
// to sip:8000@pbx.example.net; all along Kamailio's route set. A flash
// then drops C: BYE to C and to its leg at the conference, while the
// phone's call to the conference stays (its connection too); hanging up
// ends it. The conference and C are two SIPps (uas_holdable) on their own
// addresses, so that whose description goes where can be told apart.
func TestInteropKamailioPBXConferenceDrop(t *testing.T) {
	conf := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_holdable.xml", "-m", "2")
	cParty := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_holdable.xml", "-m", "1")
	party := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_conference_party.xml", "-m", "1")
	r := newKamRig(t, kamOptions{uas: cParty.Addr, conference: "8000",
		routes: []testutil.KamailioRoute{{Prefix: "3", To: party.Addr}, {Prefix: "8", To: conf.Addr}}})
	r.call("3000")
	r.flash("aaln/1")
	r.dial("aaln/1", "2001")
	r.waitFor("A held, C answered", func() bool { return r.modes("aaln/1") == "inactive sendrecv" })
	r.flash("aaln/1")
	// A's REFER done: its dialog and held connection are gone; the
	// phone's only connection is the one in the conference.
	refers := r.sent("REFER", 1)
	if rt := refers[0].GetHeader("Refer-To"); rt == nil || rt.Value() != "<sip:8000@pbx.example.net>" {
		t.Fatalf("Refer-To %v", rt)
	}
	r.waitFor("in the conference", func() bool { return r.modes("aaln/1") == "sendrecv" && len(r.wire.sentMsgs("BYE")) == 1 })
	invs := r.sent("INVITE", 6) // A, A's hold, C, the phone's call to 8000, C's leg, C's re-INVITE
	byID := map[string][]*sipgo.Request{}
	var toConf []*sipgo.Request
	for _, q := range invs {
		id := q.CallID().Value()
		byID[id] = append(byID[id], q)
		if q.Recipient.User == "8000" {
			toConf = append(toConf, q)
		}
	}
	if len(toConf) != 2 {
		t.Fatalf("%d INVITEs to the conference, want 2", len(toConf))
	}
	phone, leg := toConf[0], toConf[1]
	var cInvs []*sipgo.Request
	for _, qs := range byID {
		if qs[0].Recipient.User == "2001" {
			cInvs = qs
		}
	}
	if len(cInvs) != 2 {
		t.Fatalf("C's dialog saw %d INVITEs, want the call and the move", len(cInvs))
	}
	// C's leg offers what C answered; C is given what the conference
	// answered.
	cIP, confIP := "c=IN IP4 "+hostOf(t, cParty.Addr), "c=IN IP4 "+hostOf(t, conf.Addr)
	if m := media(leg); !strings.Contains(m, cIP) || strings.Contains(media(phone), cIP) {
		t.Errorf("C's leg offers %q, the phone's call %q: want C's description (%s) on the leg only", m, media(phone), cIP)
	}
	if m := media(cInvs[1]); !strings.Contains(m, confIP) {
		t.Errorf("C re-INVITEd with %q, want the conference's answer (%s)", m, confIP)
	}
	// The drop.
	r.flash("aaln/1")
	byes := r.sent("BYE", 3)
	ended := map[string]bool{}
	for _, q := range byes {
		ended[q.CallID().Value()] = true
	}
	if !ended[leg.CallID().Value()] || !ended[cInvs[0].CallID().Value()] || ended[phone.CallID().Value()] {
		t.Fatalf("BYEs of %v: want C's and its leg's, not the phone's conference call", ended)
	}
	if m := r.modes("aaln/1"); m != "sendrecv" {
		t.Fatalf("the phone's connection after the drop: %q", m)
	}
	r.onHook("aaln/1")
	r.sent("BYE", 4)
	for _, p := range []*testutil.SIPp{party, cParty, conf} {
		p.WaitFor(t, 20*time.Second)
	}
	r.waitArmed("aaln/1")
	answered := 0
	for range 4 { // A, C, the phone's conference call, C's leg
		if c := r.record(); c.Answered {
			answered++
		}
	}
	if answered != 4 {
		t.Errorf("%d of 4 calls answered", answered)
	}
}

func hostOf(t *testing.T, addr string) string {
	h, _ := hostPort(t, addr)
	return h
}
