package bridge_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestThreeWayAtPBXConference: a gateway that cannot mix (quirk profile
// conference: false) and a line with features.conference_uri 8000: the
// joining flash calls the conference (siptest answers with its own SDP),
// C's connection moves to it (one MDCX, send-receive), A and C are each
// REFERed to sip:8000@pbx.test and, after their final NOTIFY, hung up; A's
// held connection is deleted. Hanging up leaves the conference (BYE).
// When the conference refuses (503), C is dropped with the error tone and
// A resumed, as without a conference.
func TestThreeWayAtPBXConference(t *testing.T) {
	confSDP := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40800", 1)
	for _, refuse := range []bool{false, true} {
		var mu sync.Mutex
		var referTo []string
		e := newEnv(t, envOptions{noConfQ: true, realm: "pbx.test",
			features: mapping.Features{ConferenceURI: "8000"},
			uas: func(in siptest.Incoming) siptest.Script {
				if in.User == "8000" {
					if refuse {
						return siptest.Script{Status: 503}
					}
					return siptest.Script{SDP: []byte(confSDP)}
				}
				return siptest.Script{}
			},
			refer: func(in siptest.ReferIn) siptest.ReferScript {
				mu.Lock()
				referTo = append(referTo, in.ReferTo)
				mu.Unlock()
				return siptest.ReferScript{Notify: []int{100, 200}}
			}})
		e.offHook("aaln/1")
		e.dial("aaln/1", "2000")
		e.waitFor("A answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
		e.consult("2001")
		e.waitFor("A held, C answered", func() bool { return e.modes("aaln/1") == "inactive sendrecv" })
		e.flash("aaln/1")
		if refuse {
			e.waitFor("C dropped, A resumed", func() bool { return e.modes("aaln/1") == "sendrecv" && len(e.pbx.Received("BYE")) == 1 })
			if n := len(e.pbx.Received("REFER")); n != 0 {
				t.Errorf("%d REFERs without a conference", n)
			}
			e.onHook("aaln/1")
			e.noConnections("aaln/1")
			continue
		}
		e.waitFor("in the PBX conference", func() bool {
			cs := e.state("aaln/1").Connections
			return len(cs) == 1 && cs[0].Mode == mgcp.ModeSendRecv && strings.Contains(string(cs[0].RemoteSDP), "m=audio 40800")
		})
		e.waitFor("A and C REFERed and hung up", func() bool { return len(e.pbx.Received("BYE")) == 2 })
		mu.Lock()
		got := append([]string(nil), referTo...)
		mu.Unlock()
		if len(got) != 2 || !strings.Contains(got[0], "sip:8000@pbx.test") || !strings.Contains(got[1], "sip:8000@pbx.test") {
			t.Fatalf("REFERs to %q, want two to sip:8000@pbx.test", got)
		}
		for _, m := range e.pbx.Received("INVITE") {
			if strings.HasPrefix(m.StartLine(), "INVITE sip:8000@") && !strings.Contains(string(m.Data), "m=audio") {
				t.Errorf("conference INVITE without SDP")
			}
		}
		e.onHook("aaln/1")
		e.noConnections("aaln/1")
		e.waitFor("BYE of the conference call", func() bool { return len(e.pbx.Received("BYE")) == 3 })
	}
}
