package admin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
)

// ClientHeader marks a request as coming from a program, not a web page:
// a browser sends a custom header cross-origin only after a CORS preflight
// the API never approves. State-changing requests need it or a JSON body.
const ClientHeader = "X-Mgsip-Client"

// access is what a request may do.
type access int

const (
	accessNone access = iota
	accessRead        // GET and HEAD: /metrics and the lists
	accessFull
)

// auth guards /api and /metrics:
//
//   - a source that failed authentication too often gets 429 until its
//     bucket refills, whatever it sends (a correct token included);
//   - with no token configured, the Host header must name loopback or an
//     allowed host (a web page that rebinds its DNS name to 127.0.0.1
//     still sends its own name), except over a unix socket;
//   - with tokens, the bearer token decides between read and full access;
//     a failure is counted against the source and logged, sampled;
//   - a state-changing request needs a JSON body or ClientHeader, so that
//     a plain HTML form cannot POST to it (CSRF).
func (s *Server) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := sourceOf(r)
		if wait, locked := s.throttle.locked(src, time.Now()); locked {
			w.Header().Set("Retry-After", strconv.Itoa(wait))
			writeErr(w, http.StatusTooManyRequests, errors.New("too many failed authentications from this address; try again later"))
			return
		}
		level := accessFull
		if s.o.Token == "" {
			if !overUnix(r) && !s.hostAllowed(r.Host) {
				writeErr(w, http.StatusMisdirectedRequest, fmt.Errorf("host %q is not served here without a token (set admin.allowed_hosts or admin.token)", clip(r.Host, 64)))
				return
			}
		} else {
			level = s.check(r)
			if level == accessNone {
				s.throttle.fail(src, time.Now())
				s.logFailure(src, r)
				w.Header().Set("WWW-Authenticate", `Bearer realm="mgsip"`)
				writeErr(w, http.StatusUnauthorized, errors.New("a valid bearer token is required"))
				return
			}
		}
		reading := r.Method == http.MethodGet || r.Method == http.MethodHead
		if !reading {
			if level < accessFull {
				writeErr(w, http.StatusForbidden, errors.New("the read-only token may not change anything"))
				return
			}
			if !programmatic(r) {
				writeErr(w, http.StatusUnsupportedMediaType, fmt.Errorf("a %s needs Content-Type: application/json or an %s header", r.Method, ClientHeader))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		}
		h.ServeHTTP(w, r)
	})
}

// check compares the bearer token with both configured tokens in constant
// time (both comparisons always run).
func (s *Server) check(r *http.Request) access {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return accessNone
	}
	full := subtle.ConstantTimeCompare([]byte(got), []byte(s.o.Token)) == 1
	read := s.o.ReadOnlyToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.o.ReadOnlyToken)) == 1
	switch {
	case full:
		return accessFull
	case read:
		return accessRead
	}
	return accessNone
}

// logFailure logs a failed authentication, at most one line a second
// with the number left out since; never what was offered.
func (s *Server) logFailure(src string, r *http.Request) {
	n, ok := s.failLog.take(time.Now())
	if !ok {
		return
	}
	why := "no bearer token"
	if r.Header.Get("Authorization") != "" {
		why = "wrong token"
	}
	s.o.Log.WithFields(logrus.Fields{"source": src, "path": r.URL.Path, "reason": why, "suppressed": n}).
		Warn("admin API: authentication failed")
}

func (s *Server) hostAllowed(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(h); err == nil && ip.Unmap().IsLoopback() {
		return true
	}
	for _, a := range s.o.AllowedHosts {
		if strings.EqualFold(h, a) || strings.EqualFold(host, a) {
			return true
		}
	}
	return false
}

// programmatic: a JSON body or the client header, neither of which a
// plain HTML form can send.
func programmatic(r *http.Request) bool {
	if r.Header.Get(ClientHeader) != "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func overUnix(r *http.Request) bool {
	a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return a != nil && a.Network() == "unix"
}

// sourceOf is the address a request came from, without its port; every
// client of a unix socket is one source.
func sourceOf(r *http.Request) string {
	if overUnix(r) {
		return "unix"
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().String()
	}
	return r.RemoteAddr
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// throttle keeps a token bucket of failed authentications per source.
// The table is bounded: when full, sources whose bucket has refilled are
// forgotten; if none has, new sources share one bucket, so that a guesser
// spread over many addresses is slowed down as one.
type throttle struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	max     int
	sources map[string]*rate.Limiter
	shared  *rate.Limiter
}

func newThrottle(every rate.Limit, burst, max int) *throttle {
	return &throttle{every: every, burst: burst, max: max, sources: map[string]*rate.Limiter{},
		shared: rate.NewLimiter(every, burst)}
}

func (t *throttle) limiter(src string, now time.Time, create bool) *rate.Limiter {
	if l, ok := t.sources[src]; ok {
		return l
	}
	if !create {
		return nil
	}
	if len(t.sources) >= t.max {
		for k, l := range t.sources {
			if l.TokensAt(now) >= float64(t.burst) {
				delete(t.sources, k)
			}
		}
		if len(t.sources) >= t.max {
			return t.shared
		}
	}
	l := rate.NewLimiter(t.every, t.burst)
	t.sources[src] = l
	return l
}

// locked says whether src has no failure left, and how many seconds until
// it has one.
func (t *throttle) locked(src string, now time.Time) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.limiter(src, now, false)
	if l == nil && len(t.sources) >= t.max {
		l = t.shared
	}
	if l == nil {
		return 0, false
	}
	tok := l.TokensAt(now)
	if tok >= 1 {
		return 0, false
	}
	return max(1, int(math.Ceil((1-tok)/float64(t.every)))), true
}

func (t *throttle) fail(src string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limiter(src, now, true).AllowN(now, 1)
}

// sampler lets one event through per period and counts the rest.
type sampler struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// take reports whether to log now, and how many were left out before.
func (s *sampler) take(now time.Time) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() && now.Sub(s.last) < s.every {
		s.suppressed++
		return 0, false
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	return n, true
}
