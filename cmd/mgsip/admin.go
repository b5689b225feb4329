package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// The admin API: HTTP+JSON on loopback by default, every /api and
// /metrics request needing the bearer token when one is configured.
// docs/operations.md lists the endpoints.

type apiError struct {
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
	writeJSON(w, status, apiError{Error: err.Error()})
}

// gatewayView is a gateway as the API shows it.
type gatewayView struct {
	bridge.GatewayStatus
	State           string    `json:"mgcp_state,omitempty"`
	RTT             string    `json:"rtt,omitempty"`
	Retransmissions uint64    `json:"retransmissions"`
	Timeouts        uint64    `json:"timeouts"`
	LastHeard       time.Time `json:"last_heard,omitzero"`
	LastRSIP        time.Time `json:"last_rsip,omitzero"`
}

func (d *daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready, why := d.ready(); !ready {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", d.auth(promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{})))
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, d.auth(h)) }
	api("GET /api/v1/gateways", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.gatewayViews()) })
	api("GET /api/v1/lines", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.bridge.Lines()) })
	api("GET /api/v1/calls", func(w http.ResponseWriter, _ *http.Request) {
		calls := d.bridge.Calls()
		if calls == nil {
			calls = []bridge.CallStatus{}
		}
		writeJSON(w, http.StatusOK, calls)
	})
	api("GET /api/v1/peers", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.RLock()
		out := []peerView{}
		for _, p := range d.rules.Load().Peers {
			if v, ok := d.peerState[p.Name]; ok {
				out = append(out, v)
			} else {
				out = append(out, peerView{Name: p.Name, Address: net.JoinHostPort(p.Host, itoa(p.Port))})
			}
		}
		d.mu.RUnlock()
		writeJSON(w, http.StatusOK, out)
	})
	api("GET /api/v1/registrations", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]any{}
		for _, l := range d.bridge.Lines() {
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
		res, err := d.bridge.Audit(ctx, ep)
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
	action("POST /api/v1/reregister", "line", d.bridge.Reregister)
	action("POST /api/v1/rearm", "line", func(id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
		defer cancel()
		return d.bridge.Rearm(ctx, id)
	})
	action("POST /api/v1/hangup", "call", d.bridge.HangUp)
	action("POST /api/v1/gateways/drain", "gateway", func(g string) error { return d.bridge.SetGatewayDrain(g, true, false) })
	action("POST /api/v1/gateways/disable", "gateway", func(g string) error { return d.bridge.SetGatewayDrain(g, true, true) })
	action("POST /api/v1/gateways/enable", "gateway", func(g string) error { return d.bridge.SetGatewayDrain(g, false, false) })
	api("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.reload(r.Context()); err != nil {
			writeErr(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
	api("POST /api/v1/trace", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for proto, flag := range map[string]interface{ Store(bool) }{"mgcp": &d.tap.traceMGCP, "sip": &d.tap.traceSIP} {
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
		writeJSON(w, http.StatusOK, map[string]bool{"mgcp": d.tap.traceMGCP.Load(), "sip": d.tap.traceSIP.Load()})
	})
	return mux
}

// auth requires the bearer token when one is configured.
func (d *daemon) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := d.token; tok != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mgsip"`)
				writeErr(w, http.StatusUnauthorized, errors.New("a valid bearer token is required"))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (d *daemon) gatewayViews() []gatewayView {
	peers := map[string]mgcp.PeerInfo{}
	for _, p := range d.ca.Peers() {
		peers[p.Addr.String()] = p
	}
	var out []gatewayView
	for _, g := range d.bridge.Gateways() {
		v := gatewayView{GatewayStatus: g}
		if p, ok := peers[g.Address]; ok {
			v.State, v.Retransmissions, v.Timeouts, v.LastHeard = p.State.String(), p.Retransmissions, p.Timeouts, p.LastHeard
			if p.RTT > 0 {
				v.RTT = p.RTT.String()
			}
		}
		d.mu.RLock()
		v.LastRSIP = d.lastRSIP[g.Name]
		d.mu.RUnlock()
		out = append(out, v)
	}
	return out
}

// peerView is a SIP peer's reachability as the OPTIONS probes see it.
type peerView struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Up        bool      `json:"up"`
	Status    int       `json:"status,omitempty"`
	RTT       string    `json:"rtt,omitempty"`
	LastProbe time.Time `json:"last_probe,omitzero"`
}

// ready: not while draining, nor when no configured SIP peer answers.
func (d *daemon) ready() (bool, string) {
	if d.bridge.Draining() {
		return false, "draining"
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if len(d.peerState) == 0 {
		return true, ""
	}
	for _, p := range d.peerState {
		if p.Up {
			return true, ""
		}
	}
	return false, "no SIP peer answers OPTIONS"
}

// probePeers sends OPTIONS to every configured peer: each peer's
// options_interval when set, else every 30 s, and logs a peer going up or
// down.
func (d *daemon) probePeers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, p := range d.rules.Load().Peers {
			every := p.OptionsInterval
			if every <= 0 {
				every = 30 * time.Second
			}
			d.mu.RLock()
			prev, seen := d.peerState[p.Name]
			d.mu.RUnlock()
			if seen && time.Since(prev.LastProbe) < every {
				continue
			}
			addr := net.JoinHostPort(p.Host, itoa(p.Port))
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rtt, status, err := d.stack.Ping(pctx, addr, p.Transport)
			cancel()
			if ctx.Err() != nil {
				return
			}
			v := peerView{Name: p.Name, Address: addr, Up: err == nil, Status: status, LastProbe: time.Now()}
			if err == nil {
				v.RTT = rtt.Round(time.Microsecond).String()
			}
			if seen && prev.Up != v.Up {
				d.log.WithFields(logrus.Fields{"peer": p.Name, "address": addr, "up": v.Up}).Warn("SIP peer reachability changed")
			}
			d.bridge.SetPeerReachable(p.Name, v.Up)
			d.mu.Lock()
			if d.peerState == nil {
				d.peerState = map[string]peerView{}
			}
			d.peerState[p.Name] = v
			d.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
