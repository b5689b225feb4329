package mapping

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Rules is a compiled, immutable rule book. Lookups are safe for
// concurrent use and do not allocate.
type Rules struct {
	Peers      []*PeerRule
	Gateways   []*GatewayRule
	Lines      []*LineRule
	Trunks     []*TrunkRule
	HuntGroups []*HuntGroupRule
	DialPlans  []*DialPlanRule
	Rewriters  []*Rewriter
	Outbound   []*OutboundRouteRule
	Inbound    []*InboundRouteRule

	peerByName      map[string]*PeerRule
	gatewayByName   map[string]*GatewayRule
	gatewayByDomain map[string]*GatewayRule // lower-case domain
	lineByID        map[string]*LineRule
	lineByEndpoint  map[string]map[string]*LineRule // domain -> local name (lower case)
	lineBySIP       map[string]map[string]*LineRule // peer -> SIP user
	trunkByName     map[string]*TrunkRule
	trunkByEndpoint map[string]map[string]*TrunkRule // domain -> local name (lower case)
	huntByName      map[string]*HuntGroupRule
	dids            []*didPattern
	defaultPlan     *DialPlanRule
}

// PeerRule is a compiled Peer.
type PeerRule struct {
	Name            string
	Host            string
	Port            int
	Transport       string
	Registrar       string // host:port
	OutboundProxy   string
	Realm           string
	Auth            string // "digest" or "ip"
	Register        bool
	RegisterExpiry  time.Duration
	OptionsInterval time.Duration
	Addresses       []netip.Prefix // empty: resolve Host at run time
	Account         *Account
	ToSIP, ToMGCP   *Rewriter
	PRACK           string // "off", "supported" or "required"
}

// Quirks are the resolved behaviour switches of a gateway.
type Quirks struct {
	Profile          string // profile name
	ResponseAck      bool
	AuditConnection  bool
	WildcardAudit    bool
	EmbeddedRequests bool
	CallerID         bool
	Conference       bool // mixes the endpoint's connections in confrnce mode (three-way calling)
	RingbackSignal   string
	ProtocolProfile  string // e.g. "NCS 1.0"; "" for none
	Version          string
}

// GatewayRule is a compiled Gateway.
type GatewayRule struct {
	Name    string
	Domain  string
	Address string // IP or DNS name; "" when learned
	Learn   bool
	Port    int
	// SourcePort: commands from the gateway must come from this port (0: any).
	SourcePort int
	Codecs     []string
	Ptime      int
	Quirks     Quirks
	Keepalive  time.Duration
	DialPlan   *DialPlanRule
}

// FeatureSet is a line's resolved features.
type FeatureSet struct {
	CallWaiting, ThreeWay, Transfer, MWI, CallerID bool
	Hotline                                        string
	HotlineDelay                                   time.Duration
	DTMF                                           string // "rfc4733" or "info"
	ConferenceURI                                  string // the PBX conference for three-way calling ("": none)
}

// LineRule is one compiled line (templates expanded).
type LineRule struct {
	ID          string // "gateway/endpoint", e.g. "rgw1/aaln/3"
	Gateway     *GatewayRule
	Endpoint    string // local endpoint name
	User        string
	AuthUser    string
	Password    Secret
	DisplayName string
	Peer        *PeerRule
	DialPlan    *DialPlanRule
	Features    FeatureSet
	ToSIP       *Rewriter
	ToMGCP      *Rewriter
	Source      string // key path of the config entry, e.g. "lines[2]"
}

// EndpointName returns "local@domain".
func (l *LineRule) EndpointName() string { return l.Endpoint + "@" + l.Gateway.Domain }

// TrunkRule is a compiled trunk group.
type TrunkRule struct {
	Name      string
	Gateway   *GatewayRule
	Endpoints []string // expanded local names, in hunting order
	Hunting   string
	Peer      *PeerRule
	DIDs      []string
	CallerID  CallerID
	ToSIP     *Rewriter
	ToMGCP    *Rewriter
}

// HuntGroupRule is a compiled hunt group.
type HuntGroupRule struct {
	Name     string
	Lines    []*LineRule
	Strategy string
}

// DialPlanRule is a compiled dial plan.
type DialPlanRule struct {
	Name              string
	DigitMap          string
	Default           bool
	FirstDigitTimeout time.Duration
	InterDigitTimeout time.Duration
}

// OutboundRouteRule is a compiled outbound route.
type OutboundRouteRule struct {
	Name          string
	Peer          *PeerRule
	Trunk         *TrunkRule
	Local         bool
	LocalFallback bool
	m             matcher
}

// InboundRouteRule is a compiled inbound route.
type InboundRouteRule struct {
	Name      string
	Peer      *PeerRule // nil: any peer
	Line      *LineRule
	Trunk     *TrunkRule
	HuntGroup *HuntGroupRule
	m         matcher
}

// InboundTarget is where an inbound call goes: exactly one field is set.
type InboundTarget struct {
	Line      *LineRule
	Trunk     *TrunkRule
	HuntGroup *HuntGroupRule
}

// lookupFold indexes m by s in lower case without allocating.
func lookupFold[V any](m map[string]V, s string) (V, bool) {
	lower := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			lower = false
			break
		}
	}
	if lower {
		v, ok := m[s]
		return v, ok
	}
	var buf [128]byte
	var b []byte
	if len(s) <= len(buf) {
		b = buf[:len(s)]
	} else {
		b = make([]byte, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	v, ok := m[string(b)]
	return v, ok
}

// LineByEndpoint finds the line of an endpoint (case-insensitive).
func (r *Rules) LineByEndpoint(local, domain string) *LineRule {
	locals, ok := lookupFold(r.lineByEndpoint, domain)
	if !ok {
		return nil
	}
	l, _ := lookupFold(locals, local)
	return l
}

// LineBySIPUser finds the line registered as user at peer.
func (r *Rules) LineBySIPUser(peer, user string) *LineRule {
	return r.lineBySIP[peer][user]
}

// LineByID finds a line by its id, "gateway/endpoint".
func (r *Rules) LineByID(id string) *LineRule { return r.lineByID[id] }

// TrunkByEndpoint finds the trunk group a channel belongs to.
func (r *Rules) TrunkByEndpoint(local, domain string) *TrunkRule {
	locals, ok := lookupFold(r.trunkByEndpoint, domain)
	if !ok {
		return nil
	}
	t, _ := lookupFold(locals, local)
	return t
}

// Trunk finds a trunk group by name.
func (r *Rules) Trunk(name string) *TrunkRule { return r.trunkByName[name] }

// GatewayByDomain finds a gateway by the domain of its endpoint names.
func (r *Rules) GatewayByDomain(domain string) *GatewayRule {
	g, _ := lookupFold(r.gatewayByDomain, domain)
	return g
}

// Gateway finds a gateway by name.
func (r *Rules) Gateway(name string) *GatewayRule { return r.gatewayByName[name] }

// Peer finds a peer by name.
func (r *Rules) Peer(name string) *PeerRule { return r.peerByName[name] }

// HuntGroup finds a hunt group by name.
func (r *Rules) HuntGroup(name string) *HuntGroupRule { return r.huntByName[name] }

// DefaultDialPlan is the plan of lines and gateways that name none.
func (r *Rules) DefaultDialPlan() *DialPlanRule { return r.defaultPlan }

// RouteOutbound returns the first outbound route matching the dialed
// number, or nil.
func (r *Rules) RouteOutbound(number string) *OutboundRouteRule {
	for _, rt := range r.Outbound {
		if rt.m.match(number) {
			return rt
		}
	}
	return nil
}

// RouteInbound finds where a call from peer to user (a SIP user or a DID)
// goes: explicit inbound routes first, in order; then the line registered
// as that user at that peer; then a trunk whose DIDs include it.
func (r *Rules) RouteInbound(peer, user string) (InboundTarget, bool) {
	for _, rt := range r.Inbound {
		if rt.Peer != nil && rt.Peer.Name != peer {
			continue
		}
		if rt.m.match(user) {
			return InboundTarget{Line: rt.Line, Trunk: rt.Trunk, HuntGroup: rt.HuntGroup}, true
		}
	}
	if l := r.LineBySIPUser(peer, user); l != nil {
		return InboundTarget{Line: l}, true
	}
	for _, d := range r.dids {
		t := r.Trunks[d.trunkIdx]
		if (t.Peer == nil || t.Peer.Name == peer) && d.matches(user) {
			return InboundTarget{Trunk: t}, true
		}
	}
	return InboundTarget{}, false
}

// Summary counts what the rules hold.
type Summary struct {
	Peers, Gateways, Lines, Trunks, TrunkChannels, HuntGroups, DialPlans, Rewrites, Routes int
}

// Summary counts what the rules hold.
func (r *Rules) Summary() Summary {
	s := Summary{Peers: len(r.Peers), Gateways: len(r.Gateways), Lines: len(r.Lines), Trunks: len(r.Trunks),
		HuntGroups: len(r.HuntGroups), DialPlans: len(r.DialPlans), Rewrites: len(r.Rewriters),
		Routes: len(r.Outbound) + len(r.Inbound)}
	for _, t := range r.Trunks {
		s.TrunkChannels += len(t.Endpoints)
	}
	return s
}

// Holder keeps the current Rules for readers while a reload swaps in new
// ones atomically. Calls in progress keep the *Rules they started with.
type Holder struct{ p atomic.Pointer[Rules] }

// NewHolder returns a holder with r.
func NewHolder(r *Rules) *Holder {
	h := &Holder{}
	h.p.Store(r)
	return h
}

// Load returns the current rules.
func (h *Holder) Load() *Rules { return h.p.Load() }

// Swap installs r and returns the previous rules.
func (h *Holder) Swap(r *Rules) *Rules { return h.p.Swap(r) }
