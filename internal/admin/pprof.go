package admin

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"runtime"
)

// Sampling of the contention profiles while admin.pprof is on: one
// mutex contention event in 20, and blocking events of 10 µs and more
// (shorter ones sampled in proportion). Both cost little at that rate;
// they stay off otherwise, as the runtime's defaults have them.
const (
	pprofMutexFraction = 20
	pprofBlockRateNs   = 10_000
)

// pprofRoutes serves Go's runtime profiles under /debug/pprof/: the index,
// profile (CPU, ?seconds=N), heap, allocs, goroutine, mutex, block,
// threadcreate, trace. Behind auth like the API, and full access only: a
// profile shows the process's inner workings and a CPU profile or trace
// costs CPU while it runs.
func (s *Server) pprofRoutes(mux *http.ServeMux) {
	runtime.SetMutexProfileFraction(pprofMutexFraction)
	runtime.SetBlockProfileRate(pprofBlockRateNs)
	full := func(h http.Handler) http.Handler {
		return s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s.o.Token != "" && s.check(r) != accessFull {
				writeErr(w, http.StatusForbidden, errors.New("profiles need the full token"))
				return
			}
			h.ServeHTTP(w, r)
		}))
	}
	mux.Handle("GET /debug/pprof/", full(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/cmdline", full(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("GET /debug/pprof/profile", full(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", full(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", full(http.HandlerFunc(pprof.Trace)))
}
