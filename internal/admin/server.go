// Package admin is mgsip's admin API: the HTTP+JSON server over the
// running daemon and the client the operator commands use.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
	// Reload re-reads the configuration (POST /api/v1/reload).
	Reload func(context.Context) error
	// Peers reports the SIP peers as the OPTIONS probes see them.
	Peers func() []PeerView
	// Ready says whether the daemon takes calls, and if not why.
	Ready func() (bool, string)
	// LastRSIP is when a gateway last restarted (zero: never seen).
	LastRSIP func(gateway string) time.Time
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
	writeJSON(w, status, APIError{Error: err.Error()})
}

// GatewayView is a gateway as the API shows it.
type GatewayView struct {
	bridge.GatewayStatus
	State           string    `json:"mgcp_state,omitempty"`
	RTT             string    `json:"rtt,omitempty"`
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
	api("GET /api/v1/gateways", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.gatewayViews()) })
	api("GET /api/v1/lines", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.Bridge.Lines()) })
	api("GET /api/v1/calls", func(w http.ResponseWriter, _ *http.Request) {
		calls := d.Bridge.Calls()
		if calls == nil {
			calls = []bridge.CallStatus{}
		}
		writeJSON(w, http.StatusOK, calls)
	})
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
		if err := d.Reload(r.Context()); err != nil {
			writeErr(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
	api("POST /api/v1/trace", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
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
		writeJSON(w, http.StatusOK, map[string]bool{"mgcp": d.Trace.TraceMGCP.Load(), "sip": d.Trace.TraceSIP.Load()})
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
			v.State, v.Retransmissions, v.Timeouts, v.LastHeard = p.State.String(), p.Retransmissions, p.Timeouts, p.LastHeard
			if p.RTT > 0 {
				v.RTT = p.RTT.String()
			}
		}
		if d.LastRSIP != nil {
			v.LastRSIP = d.LastRSIP(g.Name)
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
	RTT       string    `json:"rtt,omitempty"`
	LastProbe time.Time `json:"last_probe,omitzero"`
}
