package bridge_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip/siptest"
)

// SDPs of the PBX conference (8000) and of C (2001), told apart from A's
// (siptest's default, port 40000) by their ports.
var (
	confSDP = strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40800", 1)
	cSDP    = strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
)

// pbxConfEnv is line 1 on a gateway that cannot mix (quirk profile
// conference: false) with features.conference_uri 8000 at a siptest PBX
// whose conference answers with confSDP (or refuses 503), and whose
// parties take REFERs as referScript says (nil: 100, 200). With
// legHangsUp the conference ends C's leg (BYE) a second after it began.
func pbxConfEnv(t *testing.T, refuse bool, referScript func(e *env, in siptest.ReferIn) siptest.ReferScript, legHangsUp ...bool) (*env, func() []string) {
	var mu sync.Mutex
	var referTo []string
	var e *env
	e = newEnv(t, envOptions{noConfQ: true, realm: "pbx.test",
		features: mapping.Features{ConferenceURI: "8000"},
		uas: func(in siptest.Incoming) siptest.Script {
			switch in.User {
			case "8000":
				if refuse {
					return siptest.Script{Status: 503}
				}
				if len(legHangsUp) > 0 && legHangsUp[0] && strings.Contains(string(in.SDP), "m=audio 40200 ") {
					return siptest.Script{SDP: []byte(confSDP), HangUpAfter: time.Second}
				}
				return siptest.Script{SDP: []byte(confSDP)}
			case "2001":
				return siptest.Script{SDP: []byte(cSDP)}
			}
			return siptest.Script{}
		},
		refer: func(in siptest.ReferIn) siptest.ReferScript {
			mu.Lock()
			referTo = append(referTo, in.CallID+" "+in.ReferTo)
			mu.Unlock()
			if referScript != nil {
				return referScript(e, in)
			}
			return siptest.ReferScript{Notify: []int{100, 200}}
		}})
	return e, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), referTo...)
	}
}

// callIDOf is the Call-ID of the PBX's first INVITE for user.
func callIDOf(e *env, user string) string {
	for _, m := range e.pbx.Received("INVITE") {
		if strings.HasPrefix(m.StartLine(), "INVITE sip:"+user+"@") {
			_, v, _ := strings.Cut(headerLine(m.Data, "Call-ID"), ":")
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// invitesOf returns the INVITEs (initial and re-INVITEs) of a dialog.
func invitesOf(e *env, callID string) []string {
	var out []string
	for _, m := range e.pbx.Received("INVITE") {
		if _, v, _ := strings.Cut(headerLine(m.Data, "Call-ID"), ":"); strings.TrimSpace(v) == callID {
			out = append(out, string(m.Data))
		}
	}
	return out
}

// byesOf counts the BYEs the PBX received in a dialog.
func byesOf(e *env, callID string) int {
	n := 0
	for _, m := range e.pbx.Received("BYE") {
		if _, v, _ := strings.Cut(headerLine(m.Data, "Call-ID"), ":"); strings.TrimSpace(v) == callID {
			n++
		}
	}
	return n
}

// inConference: line 1 talks to A (2000), consults C (2001) and flashes;
// waits for the phone's connection to be in the conference.
func inConference(e *env) {
	e.t.Helper()
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	e.consult("2001")
	e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
	e.flash("aaln/1")
}

// confLegs returns the Call-IDs of the two INVITEs to the conference:
// the phone's (with the gateway's SDP) and C's leg (with C's SDP).
func confLegs(e *env) (phone, leg string) {
	e.t.Helper()
	var ids []string
	e.waitFor("two calls to the conference", func() bool {
		ids = ids[:0]
		for _, m := range e.pbx.Received("INVITE") {
			if strings.HasPrefix(m.StartLine(), "INVITE sip:8000@") {
				_, v, _ := strings.Cut(headerLine(m.Data, "Call-ID"), ":")
				ids = append(ids, strings.TrimSpace(v))
			}
		}
		return len(ids) == 2
	})
	for _, id := range ids {
		inv := invitesOf(e, id)
		if strings.Contains(inv[0], "m=audio 40200 ") {
			leg = id
		} else {
			phone = id
		}
	}
	if phone == "" || leg == "" {
		e.t.Fatalf("conference INVITEs: want one with C's SDP (port 40200) and one with the gateway's: %q", ids)
	}
	return phone, leg
}

// TestThreeWayAtPBXConference: the joining flash calls the conference
// (siptest answers with its own SDP); C is moved there by third-party
// call control (a second INVITE to 8000 with C's SDP, whose answer C gets
// in a re-INVITE); the phone's connection with C moves to the conference
// (one MDCX, send-receive) and A is REFERed to sip:8000@pbx.test and,
// after its final NOTIFY, hung up with its held connection deleted.
// Then a flash drops C (BYE to C and to its conference leg) and the
// phone stays in the conference with A; or hanging up leaves the
// conference and hands C over to it (REFER), A being there. When the
// conference refuses (503), C is dropped with the error tone and A
// resumed, as without a conference.
func TestThreeWayAtPBXConference(t *testing.T) {
	for _, tc := range []string{"flash drops C", "hang up hands C over", "refused"} {
		t.Run(tc, func(t *testing.T) {
			e, refers := pbxConfEnv(t, tc == "refused", nil)
			inConference(e)
			a, c := callIDOf(e, "2000"), callIDOf(e, "2001")
			if tc == "refused" {
				e.waitFor("C dropped, A resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && byesOf(e, c) == 1 })
				if n := len(e.pbx.Received("REFER")); n != 0 {
					t.Errorf("%d REFERs without a conference", n)
				}
				// The error tone still plays (not stopped by the DLCX of C's
				// connection after the MDCX that resumed A with it).
				if st := e.state("aaln/1"); !hasSignal(st, "L/e") {
					t.Errorf("no error tone playing: %v", st.Signals)
				}
				e.onHook("aaln/1")
				e.noConnections("aaln/1")
				return
			}
			phone, leg := confLegs(e)
			e.waitFor("in the PBX conference", func() bool {
				cs := e.state("aaln/1").Connections
				return len(cs) == 1 && cs[0].Mode == mgcp.ModeSendRecv && strings.Contains(string(cs[0].RemoteSDP), "m=audio 40800")
			})
			// C was sent the conference's answer to its leg.
			if inv := invitesOf(e, c); len(inv) != 2 || !strings.Contains(inv[1], "m=audio 40800 ") || !strings.Contains(inv[1], "a=sendrecv") {
				t.Fatalf("C's INVITEs: %q", inv)
			}
			e.waitFor("A REFERed and hung up", func() bool { return byesOf(e, a) == 1 })
			if got := refers(); len(got) != 1 || !strings.HasPrefix(got[0], a+" ") || !strings.Contains(got[0], "sip:8000@pbx.test") {
				t.Fatalf("REFERs %q, want one to A naming sip:8000@pbx.test", got)
			}
			if byesOf(e, c) != 0 || byesOf(e, leg) != 0 {
				t.Fatal("C hung up although kept")
			}
			if tc == "flash drops C" {
				e.flash("aaln/1")
				e.waitFor("C and its leg hung up", func() bool { return byesOf(e, c) == 1 && byesOf(e, leg) == 1 })
				if cs := e.state("aaln/1").Connections; len(cs) != 1 || !strings.Contains(string(cs[0].RemoteSDP), "m=audio 40800") || byesOf(e, phone) != 0 {
					t.Fatalf("the phone left the conference: %+v", cs)
				}
				e.onHook("aaln/1")
				e.noConnections("aaln/1")
				e.waitFor("BYE of the phone's conference call", func() bool { return byesOf(e, phone) == 1 })
			} else {
				e.onHook("aaln/1")
				e.noConnections("aaln/1")
				e.waitFor("C handed over and hung up", func() bool {
					return byesOf(e, phone) == 1 && byesOf(e, leg) == 1 && byesOf(e, c) == 1
				})
				if got := refers(); len(got) != 2 || !strings.HasPrefix(got[1], c+" ") || !strings.Contains(got[1], "sip:8000@pbx.test") {
					t.Fatalf("REFERs %q, want the second to C naming sip:8000@pbx.test", got)
				}
			}
			for _, m := range e.pbx.Received("INVITE") {
				if strings.HasPrefix(m.StartLine(), "INVITE sip:8000@") && !strings.Contains(string(m.Data), "m=audio") {
					t.Errorf("conference INVITE without SDP")
				}
			}
		})
	}
}

// TestThreeWayAtPBXConferenceKeepsA: A refuses to join (its REFER's
// final NOTIFY is 486): A is kept, held, beside the phone's conference
// call instead of hung up. A flash then drops C (both of its dialogs),
// leaves the conference and resumes A (MDCX and re-INVITE send-receive).
func TestThreeWayAtPBXConferenceKeepsA(t *testing.T) {
	for _, how := range []string{"NOTIFY 486", "REFER 403"} {
		t.Run(how, func(t *testing.T) {
			e, _ := pbxConfEnv(t, false, func(e *env, in siptest.ReferIn) siptest.ReferScript {
				if how == "REFER 403" {
					return siptest.ReferScript{Status: 403}
				}
				return siptest.ReferScript{Notify: []int{100, 486}}
			})
			inConference(e)
			a, c := callIDOf(e, "2000"), callIDOf(e, "2001")
			phone, leg := confLegs(e)
			e.waitFor("in the conference with A held", func() bool {
				cs := e.state("aaln/1").Connections
				return len(cs) == 2 && e.modes("aaln/1") == "inactive sendrecv" && strings.Contains(string(cs[1].RemoteSDP), "m=audio 40800")
			})
			e.waitFor("A kept held", func() bool { return e.b.HeldNumber("aaln/1@gw.test") == "2000" })
			if byesOf(e, a) != 0 {
				t.Fatal("A hung up although its REFER failed")
			}
			e.flash("aaln/1")
			e.waitFor("C dropped, conference left, A resumed", func() bool {
				return byesOf(e, c) == 1 && byesOf(e, leg) == 1 && byesOf(e, phone) == 1 && e.modes("aaln/1") == "sendrecv"
			})
			if inv := invitesOf(e, a); !strings.Contains(inv[len(inv)-1], "a=sendrecv") {
				t.Errorf("A not resumed by re-INVITE: %q", inv[len(inv)-1])
			}
			e.onHook("aaln/1")
			e.noConnections("aaln/1")
			e.waitFor("A hung up", func() bool { return byesOf(e, a) == 1 })
		})
	}
}

// TestThreeWayAtPBXConferenceLegEnds: the conference ends C's leg (BYE):
// C is hung up and the phone stays in the conference with A.
func TestThreeWayAtPBXConferenceLegEnds(t *testing.T) {
	e, _ := pbxConfEnv(t, false, nil, true)
	inConference(e)
	a, c := callIDOf(e, "2000"), callIDOf(e, "2001")
	phone, leg := confLegs(e)
	e.waitFor("A REFERed and hung up", func() bool { return byesOf(e, a) == 1 })
	e.waitFor("C hung up after its leg ended", func() bool { return byesOf(e, c) == 1 })
	for _, m := range e.pbx.Sent("BYE") {
		if _, v, _ := strings.Cut(headerLine(m.Data, "Call-ID"), ":"); strings.TrimSpace(v) != leg {
			t.Errorf("the PBX sent a BYE outside C's leg: %s", m.StartLine())
		}
	}
	if cs := e.state("aaln/1").Connections; len(cs) != 1 || !strings.Contains(string(cs[0].RemoteSDP), "m=audio 40800") || byesOf(e, phone) != 0 {
		t.Fatalf("the phone left the conference: %+v", cs)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	e.waitFor("BYE of the phone's conference call", func() bool { return byesOf(e, phone) == 1 })
	if byesOf(e, leg) != 0 {
		t.Error("BYE sent for the leg the conference ended")
	}
}

// TestThreeWayAtPBXConferenceNoAnswer: a conference that never answers
// (it rings on) is given up after TransferTimeout (here 1 s), not after
// the 3-minute no-answer time: CANCEL, and the fallback of a gateway
// without mixing (C dropped with the error tone, A resumed).
func TestThreeWayAtPBXConferenceNoAnswer(t *testing.T) {
	e := newEnv(t, envOptions{noConfQ: true, realm: "pbx.test", transfer: time.Second,
		features: mapping.Features{ConferenceURI: "8000"},
		uas: func(in siptest.Incoming) siptest.Script {
			if in.User == "8000" {
				return siptest.Script{Ring: 30 * time.Second}
			}
			return siptest.Script{}
		}})
	inConference(e)
	c := callIDOf(e, "2001")
	e.waitFor("INVITE to the conference", func() bool { return callIDOf(e, "8000") != "" })
	e.waitFor("CANCEL of the conference call", func() bool { return len(e.pbx.Received("CANCEL")) == 1 })
	e.waitFor("C dropped, A resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && byesOf(e, c) == 1 })
	if st := e.state("aaln/1"); !hasSignal(st, "L/e") {
		t.Errorf("no error tone: %v", st.Signals)
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
}
