package sip

import (
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestFailedEvent: what a failed INVITE reports for a retry: a redirect's
// contacts split at the commas between contacts only (not inside a
// quoted display name or a URI in angle brackets) and ordered by q-value,
// highest first, ties in their order (RFC 3261 §8.1.3.4); the Min-SE of
// a 422, none when it is missing or unreadable (RFC 4028 §6).
func TestFailedEvent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		headers  [][2]string
		contacts []string
		minSE    time.Duration
	}{
		{"one contact", 302, [][2]string{{"Contact", "<sip:2001@198.51.100.7>"}}, []string{"<sip:2001@198.51.100.7>"}, 0},
		{"by q-value", 302, [][2]string{{"Contact", "<sip:a@h>;q=0.1, <sip:b@h>;q=0.9"}, {"Contact", "<sip:c@h>"}},
			[]string{"<sip:c@h>", "<sip:b@h>;q=0.9", "<sip:a@h>;q=0.1"}, 0},
		{"ties keep order", 301, [][2]string{{"Contact", "<sip:a@h>;q=0.5,<sip:b@h>;q=0.5"}}, []string{"<sip:a@h>;q=0.5", "<sip:b@h>;q=0.5"}, 0},
		{"bare URI with q", 302, [][2]string{{"Contact", "sip:a@h;q=0.2, sip:b@h"}}, []string{"sip:b@h", "sip:a@h;q=0.2"}, 0},
		{"comma in a display name", 302, [][2]string{{"Contact", `"Doe, John \"JD\"" <sip:a@h>;q=0.3, "Roe, Jane" <sip:b@h;x=1,2>`}},
			[]string{`"Roe, Jane" <sip:b@h;x=1,2>`, `"Doe, John \"JD\"" <sip:a@h>;q=0.3`}, 0},
		{"bad q is 1", 302, [][2]string{{"Contact", "<sip:a@h>;q=0.4, <sip:b@h>;q=high"}}, []string{"<sip:b@h>;q=high", "<sip:a@h>;q=0.4"}, 0},
		{"422 with Min-SE", 422, [][2]string{{"Min-SE", "3600;lr"}}, nil, time.Hour},
		{"422 without Min-SE", 422, nil, nil, 0},
		{"422 with a bad Min-SE", 422, [][2]string{{"Min-SE", "soon"}}, nil, 0},
		{"no contacts outside 3xx", 486, [][2]string{{"Contact", "<sip:a@h>"}}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sip.NewResponse(tc.status, "X")
			for _, h := range tc.headers {
				res.AppendHeader(sip.NewHeader(h[0], h[1]))
			}
			e := failed(res)
			if e.Kind != EventFailed || e.Status != tc.status {
				t.Fatalf("event %+v", e)
			}
			if !slices.Equal(e.Contacts, tc.contacts) {
				t.Errorf("contacts %q, want %q", e.Contacts, tc.contacts)
			}
			if e.MinSE != tc.minSE {
				t.Errorf("Min-SE %v, want %v", e.MinSE, tc.minSE)
			}
		})
	}
}
