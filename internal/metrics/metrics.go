// Package metrics holds mgsip's Prometheus metrics: counters fed by the
// tap and the bridge, and a collector that reads the running state when
// scraped. docs/operations.md lists them.
package metrics

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/buildinfo"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are mgsip's Prometheus metrics.
type Metrics struct {
	Registry     *prometheus.Registry
	messages     *prometheus.CounterVec
	msgCounters  sync.Map // msgKey -> prometheus.Counter: messages' children, found without hashing labels
	mgcpRTT      *prometheus.HistogramVec
	callSetups   *prometheus.CounterVec
	setupSeconds prometheus.Histogram
	callSeconds  prometheus.Histogram
	Reloads      *prometheus.CounterVec // by result: ok, rejected
	needsRestart *prometheus.GaugeVec
	sipMalformed prometheus.Counter
	answered     *prometheus.CounterVec
	regFailures  *prometheus.CounterVec
	started      prometheus.Gauge
	lastReload   prometheus.Gauge

	// GatewayName names the gateway at an address for the transaction
	// histogram's label ("" when none is known: the address is used).
	GatewayName func(netip.AddrPort) string
}

// New registers the metrics in a registry of their own.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgsip_messages_total",
		Help: "MGCP and SIP messages by protocol, direction (in, out) and type: verb or method of a command or request, code of a response."},
		[]string{"protocol", "direction", "type"})
	m.mgcpRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mgsip_mgcp_transaction_seconds",
		Help:    "Time from sending an MGCP command to its final response, retransmissions included, by gateway name.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"gateway"})
	m.callSetups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgsip_call_setups_total",
		Help: "Ended calls by direction and result: answered, busy, no_answer, cancelled, failed."}, []string{"direction", "result"})
	m.setupSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mgsip_call_setup_seconds",
		Help:    "Time from the start of a call (off hook dialled, or INVITE received) to its answer.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}})
	m.callSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mgsip_call_duration_seconds",
		Help:    "Talk time of answered calls.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600}})
	m.Reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgsip_config_reloads_total",
		Help: "Configuration reloads by result (ok, rejected)."}, []string{"result"})
	m.sipMalformed = prometheus.NewCounter(prometheus.CounterOpts{Name: "mgsip_sip_malformed_total",
		Help: "SIP datagrams received that do not start like a SIP message."})
	m.answered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgsip_calls_answered_total",
		Help: "Calls set up, counted when answered, by direction (outgoing, incoming, local)."}, []string{"direction"})
	m.regFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgsip_registration_failures_total",
		Help: "Failed REGISTER attempts by reason: the final SIP status (403, 503, ...) or no_answer."}, []string{"reason"})
	m.started = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgsip_start_time_seconds",
		Help: "When this mgsip process started (Unix time)."})
	m.started.SetToCurrentTime()
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgsip_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (start or reload; Unix time)."})
	m.lastReload.SetToCurrentTime()
	for _, d := range []string{"outgoing", "incoming", "local"} {
		m.answered.WithLabelValues(d) // present at 0 before the first call
	}
	m.regFailures.WithLabelValues("no_answer")
	m.Reloads.WithLabelValues("ok") // present at 0 before the first reload
	m.Reloads.WithLabelValues("rejected")
	m.Registry.MustRegister(m.answered, m.regFailures, m.started, m.lastReload)
	m.needsRestart = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mgsip_config_needs_restart",
		Help: "1 for each configuration key that changed since mgsip started and takes effect only at a restart."}, []string{"key"})
	bi := buildinfo.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mgsip_build_info",
		Help: "Always 1; the labels say which mgsip runs: version, revision (commit) and goversion."},
		[]string{"version", "revision", "goversion"})
	build.WithLabelValues(bi.Version, bi.Revision, bi.GoVersion).Set(1)
	m.Registry.MustRegister(build, m.needsRestart, m.messages, m.mgcpRTT, m.callSetups, m.setupSeconds, m.callSeconds, m.Reloads, m.sipMalformed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetNeedsRestart publishes the keys a reload could not apply.
func (m *Metrics) SetNeedsRestart(keys []string) {
	m.needsRestart.Reset()
	for _, k := range keys {
		m.needsRestart.WithLabelValues(k).Set(1)
	}
}

// Message counts one MGCP or SIP message (a trace.Tapper OnMessage).
func (m *Metrics) Message(proto, dir, typ string) {
	if proto == "sip" && dir == "in" && typ == "malformed" {
		m.sipMalformed.Inc()
	}
	k := msgKey{proto, dir, typ}
	c, ok := m.msgCounters.Load(k)
	if !ok {
		c, _ = m.msgCounters.LoadOrStore(k, m.messages.WithLabelValues(proto, dir, typ))
	}
	c.(prometheus.Counter).Inc()
}

// msgKey names one child of mgsip_messages_total.
type msgKey struct{ proto, dir, typ string }

// RoundTrip observes an MGCP transaction (an mgcp.WithRoundTripFunc).
func (m *Metrics) RoundTrip(peer netip.AddrPort, _ mgcp.Verb, _ mgcp.ReturnCode, rtt time.Duration) {
	name := ""
	if m.GatewayName != nil {
		name = m.GatewayName(peer)
	}
	if name == "" {
		name = peer.String()
	}
	m.mgcpRTT.WithLabelValues(name).Observe(rtt.Seconds())
}

// ReloadOK counts a successful reload and stamps its time.
func (m *Metrics) ReloadOK() {
	m.Reloads.WithLabelValues("ok").Inc()
	m.lastReload.SetToCurrentTime()
}

// Answered counts a call set up (a bridge.Config OnAnswer).
func (m *Metrics) Answered(direction string) { m.answered.WithLabelValues(direction).Inc() }

// RegistrationFailed counts failed REGISTER attempts: code is the SIP
// status, 0 when there was no answer (reason no_answer).
func (m *Metrics) RegistrationFailed(code, n int) {
	reason := "no_answer"
	if code != 0 {
		reason = strconv.Itoa(code)
	}
	m.regFailures.WithLabelValues(reason).Add(float64(n))
}

// callResult folds a call record's result into a few label values.
func callResult(r bridge.CallRecord) string {
	switch {
	case r.Answered:
		return "answered"
	case strings.HasPrefix(r.Result, "486") || strings.HasPrefix(r.Result, "600") || r.Result == "busy":
		return "busy"
	case r.Result == "no answer" || strings.HasPrefix(r.Result, "480") || strings.HasPrefix(r.Result, "408"):
		return "no_answer"
	case r.Result == "cancelled" || r.Result == "hung up":
		return "cancelled"
	}
	return "failed"
}

// Call counts a finished call (a bridge.Config OnCall).
func (m *Metrics) Call(r bridge.CallRecord) {
	m.callSetups.WithLabelValues(r.Direction, callResult(r)).Inc()
	if r.Answered {
		m.setupSeconds.Observe(r.Setup.Seconds())
		m.callSeconds.Observe(r.Duration.Seconds())
	}
}

// StateCollector reads the running state when scraped: the MGCP stack's
// counters, gateways, endpoints, registrations and calls.
type StateCollector struct {
	ca  *mgcp.CallAgent
	b   *bridge.Bridge
	sip *sip.Stack

	mgcpForeign, sipGate *prometheus.Desc

	// Peers, when set, reports each SIP peer's reachability (OPTIONS).
	Peers                      func() map[string]bool
	peerUp, gwRetrans, gwTimeo *prometheus.Desc

	mgcpRetrans, mgcpTimeouts, mgcpParseErrors, mgcpRefused *prometheus.Desc
	mgcpRespRetrans                                         *prometheus.Desc
	gatewaysUp, endpoints, registrations, callsActive       *prometheus.Desc

	// The transaction window (mgcp/window.go) and the registration pace
	// (sip/pace.go).
	gwWindow, gwOutstanding, gwQueued        *prometheus.Desc
	windowWaits, windowCuts, windowFull      *prometheus.Desc
	regRate, regCeiling, regOverload, regCut *prometheus.Desc
}

// NewStateCollector reads the state of ca, b and st when scraped.
func NewStateCollector(ca *mgcp.CallAgent, b *bridge.Bridge, st *sip.Stack) *StateCollector {
	return &StateCollector{ca: ca, b: b, sip: st,
		mgcpForeign:     prometheus.NewDesc("mgsip_mgcp_foreign_commands_total", "MGCP commands for a gateway's endpoints that came from another address (refused).", nil, nil),
		sipGate:         prometheus.NewDesc("mgsip_sip_gate_total", "SIP messages the stack turned away, by what it did (one action each): forbidden, stranger_dropped, limited, bad_ack, rejected, dropped.", []string{"action"}, nil),
		mgcpRetrans:     prometheus.NewDesc("mgsip_mgcp_retransmissions_total", "MGCP commands sent again for want of an answer.", nil, nil),
		mgcpRespRetrans: prometheus.NewDesc("mgsip_mgcp_response_retransmissions_total", "Our final MGCP responses sent again because the gateway did not acknowledge them (000, RFC 3435 §3.5.6).", nil, nil),
		mgcpTimeouts:    prometheus.NewDesc("mgsip_mgcp_timeouts_total", "MGCP transactions that ended without an answer.", nil, nil),
		mgcpParseErrors: prometheus.NewDesc("mgsip_mgcp_parse_errors_total", "MGCP datagrams received that did not parse.", nil, nil),
		mgcpRefused:     prometheus.NewDesc("mgsip_mgcp_refused_total", "MGCP datagrams dropped because their source is not a configured gateway.", nil, nil),
		gatewaysUp:      prometheus.NewDesc("mgsip_gateways_up", "Configured gateways answering (1) or marked down (0).", []string{"gateway"}, nil),
		endpoints:       prometheus.NewDesc("mgsip_endpoints", "Lines and trunk channels by state.", []string{"state"}, nil),
		registrations:   prometheus.NewDesc("mgsip_registrations", "Line registrations by state.", []string{"state"}, nil),
		callsActive:     prometheus.NewDesc("mgsip_calls_active", "Calls in progress.", nil, nil),
		peerUp:          prometheus.NewDesc("mgsip_sip_peer_up", "SIP peers answering OPTIONS (1) or not (0).", []string{"peer"}, nil),
		gwRetrans:       prometheus.NewDesc("mgsip_gateway_retransmissions_total", "MGCP commands sent again to a gateway for want of an answer, by gateway name.", []string{"gateway"}, nil),
		gwTimeo:         prometheus.NewDesc("mgsip_gateway_timeouts_total", "MGCP transactions to a gateway that ended without an answer, by gateway name.", []string{"gateway"}, nil),
		gwWindow:        prometheus.NewDesc("mgsip_gateway_window", "MGCP transactions that may be outstanding to a gateway now (its adaptive window).", []string{"gateway"}, nil),
		gwOutstanding:   prometheus.NewDesc("mgsip_gateway_outstanding", "MGCP transactions to a gateway sent and not yet answered.", []string{"gateway"}, nil),
		gwQueued:        prometheus.NewDesc("mgsip_gateway_queued", "MGCP commands to a gateway waiting for room in its window.", []string{"gateway"}, nil),
		windowWaits:     prometheus.NewDesc("mgsip_mgcp_window_waits_total", "MGCP commands that waited for room in their gateway's window.", nil, nil),
		windowCuts:      prometheus.NewDesc("mgsip_mgcp_window_decreases_total", "Times a gateway's window was cut for a retransmission or a timeout.", nil, nil),
		windowFull:      prometheus.NewDesc("mgsip_mgcp_window_queue_full_total", "MGCP commands refused because their gateway's window queue was full.", nil, nil),
		regRate:         prometheus.NewDesc("mgsip_registration_rate", "REGISTER exchanges per second the adaptive pace allows now.", nil, nil),
		regCeiling:      prometheus.NewDesc("mgsip_registration_rate_ceiling", "The pace's ceiling (sip.register_rate), REGISTER exchanges per second.", nil, nil),
		regOverload:     prometheus.NewDesc("mgsip_registration_overloaded_total", "REGISTER exchanges answered 503, 500 or 408, or not at all (each may slow the pace).", nil, nil),
		regCut:          prometheus.NewDesc("mgsip_registration_rate_cuts_total", "Times the registration pace was halved.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.mgcpRetrans, c.mgcpTimeouts, c.mgcpParseErrors, c.mgcpRefused, c.gatewaysUp, c.endpoints,
		c.registrations, c.callsActive, c.mgcpForeign, c.sipGate, c.peerUp, c.gwRetrans, c.gwTimeo, c.mgcpRespRetrans,
		c.gwWindow, c.gwOutstanding, c.gwQueued, c.windowWaits, c.windowCuts, c.windowFull,
		c.regRate, c.regCeiling, c.regOverload, c.regCut} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ca.Stats()
	ch <- prometheus.MustNewConstMetric(c.mgcpRetrans, prometheus.CounterValue, float64(st.Retransmissions))
	ch <- prometheus.MustNewConstMetric(c.mgcpTimeouts, prometheus.CounterValue, float64(st.Timeouts))
	ch <- prometheus.MustNewConstMetric(c.mgcpRespRetrans, prometheus.CounterValue, float64(st.ResponseRetransmissions))
	ch <- prometheus.MustNewConstMetric(c.mgcpParseErrors, prometheus.CounterValue, float64(st.ParseErrors))
	ch <- prometheus.MustNewConstMetric(c.mgcpRefused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(c.windowWaits, prometheus.CounterValue, float64(st.WindowWaits))
	ch <- prometheus.MustNewConstMetric(c.windowCuts, prometheus.CounterValue, float64(st.WindowDecreases))
	ch <- prometheus.MustNewConstMetric(c.windowFull, prometheus.CounterValue, float64(st.QueueFull))
	ch <- prometheus.MustNewConstMetric(c.mgcpForeign, prometheus.CounterValue, float64(c.b.Refused()))
	if c.sip != nil {
		g := c.sip.Stats()
		// One action per message (the counts do not overlap): strangers'
		// requests answered 403 or dropped, peers' requests answered 503
		// (limits) or statelessly (malformed), peers' malformed ACKs and
		// other unparsable messages dropped.
		for action, n := range map[string]uint64{"forbidden": g.Forbidden, "stranger_dropped": g.StrangerDropped,
			"limited": g.Limited, "bad_ack": g.BadAcks, "rejected": g.Rejected,
			"dropped": g.OtherDropped} {
			ch <- prometheus.MustNewConstMetric(c.sipGate, prometheus.CounterValue, float64(n), action)
		}
	}
	peers := map[string]mgcp.PeerInfo{}
	for _, p := range c.ca.Peers() {
		peers[p.Addr.String()] = p
	}
	for _, g := range c.b.Gateways() {
		up := 1.0
		if g.Down {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(c.gatewaysUp, prometheus.GaugeValue, up, g.Name)
		p := peers[g.Address]
		ch <- prometheus.MustNewConstMetric(c.gwRetrans, prometheus.CounterValue, float64(p.Retransmissions), g.Name)
		ch <- prometheus.MustNewConstMetric(c.gwTimeo, prometheus.CounterValue, float64(p.Timeouts), g.Name)
		w := p.Window
		if p.Addr == (netip.AddrPort{}) {
			w = c.ca.Config().WindowInitial // not talked to yet: what it will start with
		}
		ch <- prometheus.MustNewConstMetric(c.gwWindow, prometheus.GaugeValue, float64(w), g.Name)
		ch <- prometheus.MustNewConstMetric(c.gwOutstanding, prometheus.GaugeValue, float64(p.Outstanding), g.Name)
		ch <- prometheus.MustNewConstMetric(c.gwQueued, prometheus.GaugeValue, float64(p.Queued), g.Name)
	}
	if c.Peers != nil {
		for name, ok := range c.Peers() {
			up := 0.0
			if ok {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.peerUp, prometheus.GaugeValue, up, name)
		}
	}
	states := map[string]int{"idle": 0, "dialing": 0, "calling": 0, "ringing": 0, "connected": 0, "tone": 0}
	for _, l := range c.b.Lines() {
		states[l.State]++
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(c.endpoints, prometheus.GaugeValue, float64(n), s)
	}
	if regs := c.b.Registrations(); regs != nil {
		counts := regs.Counts()
		for _, s := range []sip.RegState{sip.RegPending, sip.RegRegistering, sip.RegRegistered, sip.RegRetrying, sip.RegFailed} {
			ch <- prometheus.MustNewConstMetric(c.registrations, prometheus.GaugeValue, float64(counts[s]), s.String())
		}
		pace := regs.Pacing()
		ch <- prometheus.MustNewConstMetric(c.regRate, prometheus.GaugeValue, pace.Rate)
		ch <- prometheus.MustNewConstMetric(c.regCeiling, prometheus.GaugeValue, pace.Ceiling)
		ch <- prometheus.MustNewConstMetric(c.regOverload, prometheus.CounterValue, float64(pace.Overloaded))
		ch <- prometheus.MustNewConstMetric(c.regCut, prometheus.CounterValue, float64(pace.Cuts))
	}
	ch <- prometheus.MustNewConstMetric(c.callsActive, prometheus.GaugeValue, float64(c.b.ActiveCalls()))
}

// ClusterState is what a cluster node reports when scraped (the daemon
// fills it from internal/cluster and its own counters; this package does
// not import the cluster).
type ClusterState struct {
	// Changes counts gateway ownership changes by reason (acquired,
	// resumed, released, lost, fenced).
	Changes map[string]uint64
	// Owned is the number of gateways this node commands now.
	Owned int
	// LeaseValid: the node's lease is held and its fencing deadline is
	// ahead, ValidFor before it.
	LeaseValid bool
	ValidFor   time.Duration
	Fences     uint64
	// Redirects: commands of gateways owned elsewhere answered 521;
	// FencedDrops: commands this node did not send because it does not
	// own the gateway (the socket's fence).
	Redirects, FencedDrops uint64
	// Call-state writes to etcd: accepted, refused (not the owner), failed.
	CallWrites, CallWritesRefused, CallWriteErrors uint64
}

// ClusterCollector exports a cluster node's state (docs/cluster.md).
type ClusterCollector struct {
	state                                              func() ClusterState
	changes, owned, valid, validFor, fences, redirects *prometheus.Desc
	dropped, callWrites                                *prometheus.Desc
}

// NewClusterCollector reads state when scraped.
func NewClusterCollector(state func() ClusterState) *ClusterCollector {
	return &ClusterCollector{state: state,
		changes:    prometheus.NewDesc("mgsip_cluster_ownership_changes_total", "Gateway ownership changes of this node, by change: acquired, resumed (kept across a fence), released (handed over), lost (owned elsewhere or lease expired), fenced (lease not renewed in time).", []string{"change"}, nil),
		owned:      prometheus.NewDesc("mgsip_cluster_gateways_owned", "Gateways this node commands now.", nil, nil),
		valid:      prometheus.NewDesc("mgsip_cluster_lease_valid", "1 while this node's lease is held and renewed in time (it may command its gateways), 0 when fenced or without a lease.", nil, nil),
		validFor:   prometheus.NewDesc("mgsip_cluster_lease_valid_seconds", "How long this node may still command its gateways without another lease renewal.", nil, nil),
		fences:     prometheus.NewDesc("mgsip_cluster_fence_events_total", "Times this node stopped commanding its gateways because its lease was not renewed in time or had expired.", nil, nil),
		redirects:  prometheus.NewDesc("mgsip_cluster_redirects_total", "Gateway commands answered 521 naming the gateway's owner (RFC 3435 §2.3.8).", nil, nil),
		dropped:    prometheus.NewDesc("mgsip_cluster_fenced_commands_total", "MGCP commands not sent because this node does not own the gateway (dropped at the socket's fence).", nil, nil),
		callWrites: prometheus.NewDesc("mgsip_cluster_call_state_writes_total", "Call-state writes to etcd, by result: ok, refused (not the owner: revision fencing), error.", []string{"result"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ClusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.changes, c.owned, c.valid, c.validFor, c.fences, c.redirects, c.dropped, c.callWrites} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ClusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state()
	for _, r := range []string{"acquired", "resumed", "released", "lost", "fenced"} {
		ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(st.Changes[r]), r)
	}
	valid := 0.0
	if st.LeaseValid {
		valid = 1
	}
	ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, float64(st.Owned))
	ch <- prometheus.MustNewConstMetric(c.valid, prometheus.GaugeValue, valid)
	ch <- prometheus.MustNewConstMetric(c.validFor, prometheus.GaugeValue, st.ValidFor.Seconds())
	ch <- prometheus.MustNewConstMetric(c.fences, prometheus.CounterValue, float64(st.Fences))
	ch <- prometheus.MustNewConstMetric(c.redirects, prometheus.CounterValue, float64(st.Redirects))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.FencedDrops))
	for r, n := range map[string]uint64{"ok": st.CallWrites, "refused": st.CallWritesRefused, "error": st.CallWriteErrors} {
		ch <- prometheus.MustNewConstMetric(c.callWrites, prometheus.CounterValue, float64(n), r)
	}
}
