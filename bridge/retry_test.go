package bridge_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mgsip/mgsip/sip/siptest"
)

// invitesTo returns the INVITEs the PBX received for user.
func (e *env) invitesTo(user string) []string {
	var out []string
	for _, m := range e.pbx.Received("INVITE") {
		if strings.HasPrefix(m.StartLine(), "INVITE sip:"+user+"@") {
			out = append(out, string(m.Data))
		}
	}
	return out
}

// TestOutgoingRedirectOrder: a 302 listing several contacts is followed
// to the one with the highest q-value (RFC 3261 §8.1.3.4), through the
// line's own SIP peer over the peer's transport whatever the contact's
// host and transport say.
func TestOutgoingRedirectOrder(t *testing.T) {
	e := newEnv(t, envOptions{uas: func(in siptest.Incoming) siptest.Script {
		if in.User == "2302" {
			return siptest.Script{Status: 302, Headers: map[string]string{
				"Contact": "<sip:2001@198.51.100.7;transport=tcp>;q=0.2, <sip:2002@203.0.113.9:5080;transport=tls>;q=0.8"}}
		}
		return siptest.Script{}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2302")
	e.waitFor("answered", func() bool { return e.modes("aaln/1") == "sendrecv" })
	if got := e.invitesTo("2002"); len(got) != 1 {
		t.Fatalf("%d INVITEs to the contact with q=0.8, want 1", len(got))
	}
	if got := e.invitesTo("2001"); len(got) != 0 {
		t.Errorf("%d INVITEs to the contact with q=0.2", len(got))
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if r := e.record(); !r.Answered || r.Number != "2002" {
		t.Errorf("record %+v, want an answered call to 2002", r)
	}
}

// TestOutgoing422: RFC 4028 §7.4 on 422 (Session Interval Too Small).
// A proxy's 422 and then the UAS's, each with a larger Min-SE, are both
// followed, the INVITE asking for the larger interval each time; a 422
// repeating the Min-SE already asked for, or one without Min-SE (RFC 4028
// §6 requires it), ends the call: the phone hears reorder, the record
// keeps the 422.
func TestOutgoing422(t *testing.T) {
	var tries atomic.Int32
	e := newEnv(t, envOptions{uas: func(in siptest.Incoming) siptest.Script {
		switch in.User {
		case "2422": // two minimums on the way
			switch tries.Add(1) {
			case 1:
				return siptest.Script{Status: 422, Headers: map[string]string{"Min-SE": "3600"}}
			case 2:
				return siptest.Script{Status: 422, Headers: map[string]string{"Min-SE": "7200"}}
			}
		case "2423": // never satisfied
			return siptest.Script{Status: 422, Headers: map[string]string{"Min-SE": "3600"}}
		case "2424":
			return siptest.Script{Status: 422}
		}
		return siptest.Script{}
	}})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2422")
	e.waitFor("answered after two 422s", func() bool { return e.modes("aaln/1") == "sendrecv" })
	got := e.invitesTo("2422")
	if len(got) != 3 || !strings.Contains(got[1], "Session-Expires: 3600") || !strings.Contains(got[2], "Session-Expires: 7200") ||
		!strings.Contains(got[2], "Min-SE: 7200") {
		t.Fatalf("INVITEs for two 422s: %d\n%s", len(got), strings.Join(got, "\n----\n"))
	}
	e.onHook("aaln/1")
	e.noConnections("aaln/1")
	if r := e.record(); !r.Answered || r.Number != "2422" {
		t.Errorf("record %+v", r)
	}

	for _, number := range []string{"2423", "2424"} {
		e.offHook("aaln/1")
		e.dial("aaln/1", number)
		e.waitSignal("aaln/1", "L/ro")
		e.noConnections("aaln/1")
		want := 2 // the first 422, then the same Min-SE again
		if number == "2424" {
			want = 1 // nothing to retry with
		}
		if got := e.invitesTo(number); len(got) != want {
			t.Errorf("%s: %d INVITEs, want %d", number, len(got), want)
		}
		if r := e.record(); r.Answered || !strings.HasPrefix(r.Result, "422") {
			t.Errorf("%s: record %+v", number, r)
		}
		e.onHook("aaln/1")
	}
}
