package admin

import (
	"strings"
	"testing"
)

// TestPprof: the profiles are not served unless admin.pprof is on; when it
// is, only the full token gets them (the read-only token and no token are
// refused), and with no token configured the loopback guard applies.
func TestPprof(t *testing.T) {
	off := newTestServer(t, Options{Token: fullToken})
	if w := off.do(req{path: "/debug/pprof/heap", token: fullToken}); w.Code != 404 {
		t.Errorf("pprof off: %d %s, want 404", w.Code, w.Body)
	}
	on := newTestServer(t, Options{Token: fullToken, ReadOnlyToken: readToken, Pprof: true})
	for _, tt := range []struct {
		name string
		r    req
		want int
	}{
		{"no token", req{path: "/debug/pprof/heap"}, 401},
		{"read-only token", req{path: "/debug/pprof/heap", token: readToken}, 403},
		{"read-only token, index", req{path: "/debug/pprof/", token: readToken}, 403},
		{"full token, heap", req{path: "/debug/pprof/heap?debug=1", token: fullToken}, 200},
		{"full token, mutex", req{path: "/debug/pprof/mutex?debug=1", token: fullToken}, 200},
		{"full token, index", req{path: "/debug/pprof/", token: fullToken}, 200},
		{"not a GET", req{method: "POST", path: "/debug/pprof/heap", token: fullToken, ctype: "application/json"}, 405},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := on.do(tt.r)
			if w.Code != tt.want {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tt.want)
			}
			if tt.want == 200 && strings.Contains(tt.r.path, "heap") && !strings.Contains(w.Body.String(), "heap profile") {
				t.Errorf("not a heap profile: %.200s", w.Body)
			}
		})
	}
	open := newTestServer(t, Options{Pprof: true})
	if w := open.do(req{path: "/debug/pprof/heap", host: "evil.example:8080"}); w.Code != 421 {
		t.Errorf("no token, foreign Host: %d, want 421", w.Code)
	}
	if w := open.do(req{path: "/debug/pprof/heap?debug=1"}); w.Code != 200 {
		t.Errorf("no token, loopback: %d, want 200", w.Code)
	}
}
