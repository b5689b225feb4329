// Package admin is mgsip's admin API: the HTTP+JSON server over the
// running daemon and the client the operator commands use.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/trace"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
)

// The admin API: HTTP+JSON on loopback (or a unix socket) by default,
// every /api and /metrics request passing the guards of auth.go.
// docs/operations.md lists the endpoints, docs/security.md the guards.

// Backend is what the API shows and acts on: the running daemon's parts.
type Backend struct {
	Bridge    *bridge.Bridge
	CallAgent *mgcp.CallAgent
	Metrics   prometheus.Gatherer
	Trace     *trace.Tapper
	// Reload re-reads the configuration (POST /api/v1/reload) and
	// returns what it did, sent as the answer's JSON.
	Reload func(context.Context) (any, error)
	// Peers reports the SIP peers as the OPTIONS probes see them.
	Peers func() []PeerView
	// Ready says whether the daemon takes calls, and if not why.
	Ready func() (bool, string)
	// LastRSIP is when a gateway last restarted (zero: never seen).
	LastRSIP func(gateway string) time.Time
	// CDRs returns up to limit call detail records that ended after
	// since and were recorded after the one numbered after (its Seq), and
	// a channel closed when the next one is recorded.
	CDRs func(since time.Time, after uint64, limit int) ([]bridge.CDR, <-chan struct{})
	// TraceFilter builds the wire trace's filter for some lines and
	// gateways (by id and name); an unknown one is an error.
	TraceFilter func(lines, gateways []string) (*trace.Filter, error)
	// SIPGate counts what the SIP stack's gate turned away, by action.
	SIPGate func() map[string]uint64
}

// Options configure the server. docs/security.md explains each guard.
type Options struct {
	// Token, when set, is required as a bearer token for /api and
	// /metrics; ReadOnlyToken, when set, may read (GET) but not act.
	Token, ReadOnlyToken string
	// AllowedHosts are Host header values accepted when there is no token,
	// besides the loopback names (localhost, 127.0.0.0/8, ::1).
	AllowedHosts []string
	// FailRate (per second) and FailBurst bound the failed authentications
	// of one source address; past them every request from it gets 429.
	// Zero: 1/s and 10.
	FailRate  float64
	FailBurst int
	// Pprof serves the runtime profiles under /debug/pprof/ (full access
	// only: a profile shows the process's inner workings).
	Pprof bool
	// Log receives the (rate-limited) failed-authentication lines.
	Log *logrus.Entry
}

// Server serves the admin API.
type Server struct {
	b        Backend
	o        Options
	throttle *throttle
	failLog  *sampler
}

// New returns the API server over b.
func New(b Backend, o Options) *Server {
	if o.FailRate <= 0 {
		o.FailRate = 1
	}
	if o.FailBurst <= 0 {
		o.FailBurst = 10
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = logrus.NewEntry(l)
	}
	return &Server{b: b, o: o, throttle: newThrottle(rate.Limit(o.FailRate), o.FailBurst, 4096),
		failLog: &sampler{every: time.Second}}
}

// APIError is the body of every non-2xx answer.
type APIError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, APIError{Error: plainError(err)})
}

// plainError is err's text without the Go package prefixes ("bridge: ")
// that mean nothing to an operator.
func plainError(err error) string {
	msg := err.Error()
	for _, p := range []string{"bridge: ", "mgcp: ", "sip: ", "mapping: ", "config: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

// GatewayView is a gateway as the API shows it.
type GatewayView struct {
	bridge.GatewayStatus
	State           string    `json:"mgcp_state,omitempty"`
	RTTMS           float64   `json:"rtt_ms,omitzero"`
	RTOMS           float64   `json:"rto_ms,omitzero"`
	Retransmissions uint64    `json:"retransmissions"`
	Timeouts        uint64    `json:"timeouts"`
	LastHeard       time.Time `json:"last_heard,omitzero"`
	LastRSIP        time.Time `json:"last_rsip,omitzero"`
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	d := s.b
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready, why := d.Ready(); !ready {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(d.Metrics, promhttp.HandlerOpts{})))
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.auth(h)) }
	if s.o.Pprof {
		s.pprofRoutes(mux)
	}
	api("GET /api/v1/gateways", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.gatewayViews()) })
	api("GET /api/v1/lines", func(w http.ResponseWriter, r *http.Request) {
		gw, state := r.URL.Query().Get("gateway"), r.URL.Query().Get("state")
		if gw != "" && !hasGateway(d.Bridge.Gateways(), gw) {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no gateway %q", gw))
			return
		}
		if state != "" && !slices.Contains(bridge.LineStates, strings.ToLower(state)) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("no line state %q (states: %s)", state, strings.Join(bridge.LineStates, ", ")))
			return
		}
		out := []bridge.LineStatus{}
		for _, l := range d.Bridge.Lines() {
			if (gw == "" || strings.EqualFold(l.Gateway, gw)) && (state == "" || strings.EqualFold(l.State, state)) {
				out = append(out, l)
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	api("GET /api/v1/stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.stats()) })
	api("GET /api/v1/trace", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.traceState()) })
	api("GET /api/v1/calls", func(w http.ResponseWriter, _ *http.Request) {
		calls := d.Bridge.Calls()
		if calls == nil {
			calls = []bridge.CallStatus{}
		}
		writeJSON(w, http.StatusOK, calls)
	})
	api("GET /api/v1/cdr", s.cdrs)
	api("GET /api/v1/peers", func(w http.ResponseWriter, _ *http.Request) {
		out := d.Peers()
		if out == nil {
			out = []PeerView{}
		}
		writeJSON(w, http.StatusOK, out)
	})
	api("GET /api/v1/registrations", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]any{}
		for _, l := range d.Bridge.Lines() {
			if l.Registration != nil {
				out[l.ID] = l.Registration
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	api("POST /api/v1/audit", func(w http.ResponseWriter, r *http.Request) {
		ep := r.URL.Query().Get("endpoint")
		ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
		defer cancel()
		res, err := d.Bridge.Audit(ctx, ep)
		var re *mgcp.ResponseError
		switch {
		case errors.Is(err, bridge.ErrNoSuchLine):
			writeErr(w, http.StatusNotFound, err)
		case errors.As(err, &re) && re.Response != nil:
			writeJSON(w, http.StatusOK, re.Response)
		case err != nil:
			writeErr(w, http.StatusGatewayTimeout, err)
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	action := func(pattern, param string, f func(string) error) {
		api(pattern, func(w http.ResponseWriter, r *http.Request) {
			v := r.URL.Query().Get(param)
			if v == "" {
				writeErr(w, http.StatusBadRequest, errors.New("missing ?"+param+"="))
				return
			}
			if err := f(v); err != nil {
				status := http.StatusConflict
				if errors.Is(err, bridge.ErrNoSuchLine) || errors.Is(err, bridge.ErrNoSuchCall) || errors.Is(err, bridge.ErrNoSuchGateway) {
					status = http.StatusNotFound
				}
				writeErr(w, status, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
	}
	action("POST /api/v1/reregister", "line", d.Bridge.Reregister)
	action("POST /api/v1/rearm", "line", func(id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
		defer cancel()
		return d.Bridge.Rearm(ctx, id)
	})
	action("POST /api/v1/hangup", "call", d.Bridge.HangUp)
	action("POST /api/v1/gateways/drain", "gateway", func(g string) error { return d.Bridge.SetGatewayDrain(g, true, false) })
	action("POST /api/v1/gateways/disable", "gateway", func(g string) error { return d.Bridge.SetGatewayDrain(g, true, true) })
	action("POST /api/v1/gateways/enable", "gateway", func(g string) error { return d.Bridge.SetGatewayDrain(g, false, false) })
	api("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		rep, err := d.Reload(r.Context())
		if err != nil {
			writeErr(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	api("POST /api/v1/trace", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lines, gws := splitList(q.Get("line")), splitList(q.Get("gateway"))
		switch {
		case q.Get("filter") == "none":
			d.Trace.Filter.Store(nil)
		case len(lines)+len(gws) > 0:
			if d.TraceFilter == nil {
				writeErr(w, http.StatusNotImplemented, errors.New("no trace filters here"))
				return
			}
			f, err := d.TraceFilter(lines, gws)
			if err != nil {
				writeErr(w, http.StatusNotFound, err)
				return
			}
			d.Trace.Filter.Store(f)
		}
		for proto, flag := range map[string]interface{ Store(bool) }{"mgcp": &d.Trace.TraceMGCP, "sip": &d.Trace.TraceSIP} {
			switch q.Get(proto) {
			case "on":
				flag.Store(true)
			case "off":
				flag.Store(false)
			case "":
			default:
				writeErr(w, http.StatusBadRequest, errors.New(proto+" must be on or off"))
				return
			}
		}
		writeJSON(w, http.StatusOK, s.traceState())
	})
	return mux
}

func (s *Server) gatewayViews() []GatewayView {
	d := s.b
	peers := map[string]mgcp.PeerInfo{}
	for _, p := range d.CallAgent.Peers() {
		peers[p.Addr.String()] = p
	}
	var out []GatewayView
	for _, g := range d.Bridge.Gateways() {
		v := GatewayView{GatewayStatus: g}
		if p, ok := peers[g.Address]; ok {
			v.State, v.Retransmissions, v.Timeouts, v.LastHeard = p.State.String(), p.Retransmissions, p.Timeouts, p.LastHeard.Truncate(time.Millisecond)
			v.RTTMS, v.RTOMS = millis(p.RTT), millis(p.RTO)
		}
		if d.LastRSIP != nil {
			v.LastRSIP = d.LastRSIP(g.Name).Truncate(time.Millisecond)
		}
		out = append(out, v)
	}
	return out
}

// PeerView is a SIP peer's reachability as the OPTIONS probes see it.
type PeerView struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Up        bool      `json:"up"`
	Status    int       `json:"status,omitempty"`
	RTTMS     float64   `json:"rtt_ms,omitzero"`
	LastProbe time.Time `json:"last_probe,omitzero"`
	// Unanswered counts the probes in a row that got no answer; the peer
	// is down once it reaches the daemon's threshold.
	Unanswered int `json:"unanswered_probes,omitempty"`
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// MaxCDRWait bounds the long poll of GET /api/v1/cdr?wait=.
const MaxCDRWait = 60 * time.Second

// cdrs serves GET /api/v1/cdr: the records that ended after ?since=
// (RFC 3339, default: all kept) and come after the record ?after= (its
// seq), at most ?limit= (default 1000, the newest); with ?wait= (a
// duration up to a minute) and nothing to send yet, the answer waits for
// the next record (mgsip cdr --follow).
func (s *Server) cdrs(w http.ResponseWriter, r *http.Request) {
	if s.b.CDRs == nil {
		writeJSON(w, http.StatusOK, []bridge.CDR{})
		return
	}
	q := r.URL.Query()
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeErr(w, http.StatusBadRequest, errors.New("since: not an RFC 3339 time (2026-12-01T10:00:00Z)"))
			return
		}
		since = t
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			writeErr(w, http.StatusBadRequest, errors.New("limit: a number from 1 to 100000"))
			return
		}
		limit = n
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeErr(w, http.StatusBadRequest, errors.New("after: the seq of the last record seen (a number)"))
			return
		}
		after = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxCDRWait {
			writeErr(w, http.StatusBadRequest, errors.New("wait: a duration up to 60s"))
			return
		}
		wait = d
	}
	out, next := s.b.CDRs(since, after, limit)
	if len(out) == 0 && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-next:
			out, _ = s.b.CDRs(since, after, limit)
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if out == nil {
		out = []bridge.CDR{}
	}
	writeJSON(w, http.StatusOK, out)
}

// Stats is GET /api/v1/stats: the counters an operator looks at first.
type Stats struct {
	CallsActive   int64             `json:"calls_active"`
	Lines         map[string]int    `json:"lines"`         // by state
	Registrations map[string]int    `json:"registrations"` // by state
	GatewaysUp    int               `json:"gateways_up"`
	GatewaysDown  int               `json:"gateways_down"`
	MGCP          MGCPStats         `json:"mgcp"`
	SIPGate       map[string]uint64 `json:"sip_gate,omitempty"`
}

// MGCPStats are the MGCP stack's counters since start.
type MGCPStats struct {
	CommandsSent      uint64 `json:"commands_sent"`
	Retransmissions   uint64 `json:"retransmissions"`
	Timeouts          uint64 `json:"timeouts"`
	ResponsesReceived uint64 `json:"responses_received"`
	CommandsReceived  uint64 `json:"commands_received"`
	Duplicates        uint64 `json:"duplicates"`
	ParseErrors       uint64 `json:"parse_errors"`
	Refused           uint64 `json:"refused"`
	ForeignCommands   uint64 `json:"foreign_commands"`
	UnknownRequestIDs uint64 `json:"unknown_request_ids"`
}

func (s *Server) stats() Stats {
	d := s.b
	st := Stats{CallsActive: d.Bridge.ActiveCalls(), Lines: map[string]int{}, Registrations: map[string]int{}}
	for _, l := range d.Bridge.Lines() {
		st.Lines[l.State]++
		if l.Registration != nil {
			st.Registrations[l.Registration.State]++
		}
	}
	for _, g := range d.Bridge.Gateways() {
		if g.Down {
			st.GatewaysDown++
		} else {
			st.GatewaysUp++
		}
	}
	m := d.CallAgent.Stats()
	st.MGCP = MGCPStats{CommandsSent: m.CommandsSent, Retransmissions: m.Retransmissions, Timeouts: m.Timeouts,
		ResponsesReceived: m.ResponsesReceived, CommandsReceived: m.CommandsReceived, Duplicates: m.Duplicates,
		ParseErrors: m.ParseErrors, Refused: m.Refused, ForeignCommands: d.Bridge.Refused(), UnknownRequestIDs: d.Bridge.UnknownRequests()}
	if d.SIPGate != nil {
		st.SIPGate = d.SIPGate()
	}
	return st
}

// TraceState is the wire trace's switches and filter.
type TraceState struct {
	MGCP     bool     `json:"mgcp"`
	SIP      bool     `json:"sip"`
	Lines    []string `json:"lines,omitempty"`    // only these lines' messages
	Gateways []string `json:"gateways,omitempty"` // only these gateways' endpoints
}

func (s *Server) traceState() TraceState {
	t := s.b.Trace
	st := TraceState{MGCP: t.TraceMGCP.Load(), SIP: t.TraceSIP.Load()}
	if f := t.Filter.Load(); f != nil {
		st.Lines, st.Gateways = f.Lines, f.Gateways
	}
	return st
}

// splitList splits a comma-separated query value.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func hasGateway(gws []bridge.GatewayStatus, name string) bool {
	for _, g := range gws {
		if strings.EqualFold(g.Name, name) {
			return true
		}
	}
	return false
}
