package mapping

import "time"

// Config is the rule part of mgsip's configuration file.
type Config struct {
	Peers      []Peer         `yaml:"peers"`
	Gateways   []Gateway      `yaml:"gateways"`
	Quirks     []QuirkProfile `yaml:"quirks"`
	Lines      []Line         `yaml:"lines"`
	Trunks     []Trunk        `yaml:"trunks"`
	HuntGroups []HuntGroup    `yaml:"hunt_groups"`
	DialPlans  []DialPlan     `yaml:"dial_plans"`
	Rewrites   []RewriteSet   `yaml:"rewrites"`
	Routes     Routes         `yaml:"routes"`
}

// Peer is a SIP destination: a PBX or a provider.
type Peer struct {
	Name string `yaml:"name"`
	// Host is the peer's IP address or DNS name.
	Host string `yaml:"host"`
	// Port defaults to 5060 (5061 for tls).
	Port int `yaml:"port"`
	// Transport is udp (default), tcp or tls.
	Transport string `yaml:"transport"`
	// Registrar is where REGISTER goes, host[:port]; default Host:Port.
	Registrar string `yaml:"registrar"`
	// OutboundProxy, host[:port], receives every request when set.
	OutboundProxy string `yaml:"outbound_proxy"`
	// Realm expected in challenges; empty accepts the peer's.
	Realm string `yaml:"realm"`
	// Auth is how the peer knows us: digest (default) or ip.
	Auth string `yaml:"auth"`
	// Register says whether accounts bound to this peer register
	// (default true with digest auth, false with ip auth).
	Register *bool `yaml:"register"`
	// RegisterExpiry is the Expires asked for (default 300s).
	RegisterExpiry time.Duration `yaml:"register_expiry"`
	// OptionsInterval sends OPTIONS keepalives when non-zero.
	OptionsInterval time.Duration `yaml:"options_interval"`
	// Addresses are the source IPs (or CIDRs) requests from this peer come
	// from; default: the addresses Host resolves to.
	Addresses []string `yaml:"addresses"`
	// Account is the trunk account used toward a provider (trunk groups
	// bound to this peer register and authenticate with it).
	Account *Account `yaml:"account"`
	// Rewrite names the rewrite sets applied for this peer.
	Rewrite RewriteRefs `yaml:"rewrite"`
	// PRACK is the use of reliable provisional responses (RFC 3262) with
	// this peer: off (default), supported or required.
	PRACK string `yaml:"prack"`
}

// Account is a SIP identity with credentials.
type Account struct {
	User     string `yaml:"user"`
	AuthUser string `yaml:"auth_user"`
	Password Secret `yaml:"password"`
}

// Gateway is an MGCP gateway.
type Gateway struct {
	Name string `yaml:"name"`
	// Domain is the part of its endpoint names after '@'.
	Domain string `yaml:"domain"`
	// Address is an IP address, a DNS name, or "learn" (take the source
	// address of the gateway's own RSIP/NTFY). Default: Domain.
	Address string `yaml:"address"`
	// Port is the gateway's MGCP port (default 2427).
	Port int `yaml:"port"`
	// SourcePort, when set, is the only UDP port the gateway's own
	// commands (RSIP, NTFY, DLCX) may come from; default: any port of
	// its address.
	SourcePort int `yaml:"source_port"`
	// Codecs in order of preference (default PCMU, PCMA).
	Codecs []string `yaml:"codecs"`
	// Ptime is the packetization period in ms (default 20).
	Ptime int `yaml:"ptime"`
	// Quirks names a quirk profile (default "generic").
	Quirks string `yaml:"quirks"`
	// Keepalive is how often an idle gateway is audited (default 60s).
	Keepalive time.Duration `yaml:"keepalive"`
	// DialPlan is the default dial plan of its lines.
	DialPlan string `yaml:"dial_plan"`
}

// QuirkProfile is a named set of behaviour switches for real devices.
// Unset switches come from Base (default "generic").
type QuirkProfile struct {
	Name string `yaml:"name"`
	Base string `yaml:"base"`
	// ResponseAck: piggyback K: response acknowledgements (generic: true).
	ResponseAck *bool `yaml:"response_ack"`
	// AuditConnection: the gateway answers AUCX (generic: true).
	AuditConnection *bool `yaml:"audit_connection"`
	// WildcardAudit: the gateway lists endpoints for AUEP "*" (generic: true).
	WildcardAudit *bool `yaml:"wildcard_audit"`
	// EmbeddedRequests: the gateway supports E(...) actions (generic: true).
	EmbeddedRequests *bool `yaml:"embedded_requests"`
	// CallerID: send caller id with L/ci (generic: true).
	CallerID *bool `yaml:"caller_id"`
	// Conference: the gateway mixes an endpoint's connections in
	// confrnce mode, for three-way calling (generic, ncs, cisco-ios:
	// true; osmo-mgw: false).
	Conference *bool `yaml:"conference"`
	// RingbackSignal is the ringback tone signal (generic: G/rt; NCS: L/rt).
	RingbackSignal string `yaml:"ringback_signal"`
	// Profile is put after "MGCP 1.0" on commands, e.g. "NCS 1.0".
	Profile string `yaml:"profile"`
	// Version is the protocol version sent, "1.0" (generic) or "0.1".
	Version string `yaml:"version"`
}

// Line binds one MGCP endpoint (or a range, with templates) to a SIP
// account.
type Line struct {
	Gateway string `yaml:"gateway"`
	// Endpoint is a local endpoint name, or a template with one range:
	// "aaln/{1..24}". The other string fields may then use {n} (the
	// number from the range), {n+K} or {n-K}, and {i} (0-based index).
	Endpoint    string `yaml:"endpoint"`
	User        string `yaml:"user"`
	AuthUser    string `yaml:"auth_user"`
	Password    Secret `yaml:"password"`
	DisplayName string `yaml:"display_name"`
	// Peer defaults to the only peer when there is one.
	Peer string `yaml:"peer"`
	// DialPlan defaults to the gateway's, then to the default plan.
	DialPlan string      `yaml:"dial_plan"`
	Features Features    `yaml:"features"`
	Rewrite  RewriteRefs `yaml:"rewrite"`
}

// Features are per-line feature switches.
type Features struct {
	CallWaiting *bool `yaml:"call_waiting"` // default true
	ThreeWay    *bool `yaml:"three_way"`    // default true
	Transfer    *bool `yaml:"transfer"`     // default true
	MWI         *bool `yaml:"mwi"`          // default true
	CallerID    *bool `yaml:"caller_id"`    // default true
	// Hotline is dialed as soon as the line goes off hook (template
	// allowed); HotlineDelay makes it a warm line.
	Hotline      string        `yaml:"hotline"`
	HotlineDelay time.Duration `yaml:"hotline_delay"`
	// DTMF is how digits go to SIP during a call: rfc4733 (default, in
	// RTP) or info (SIP INFO).
	DTMF string `yaml:"dtmf"`
	// ConferenceURI is the number (routed like a dialled one) of an
	// ad-hoc conference at the PBX, used for three-way calling when the
	// gateway cannot mix (template allowed); empty: no fallback.
	ConferenceURI string `yaml:"conference_uri"`
}

// Trunk is a trunk group: channels of a trunk gateway that carry calls to
// and from one SIP peer.
type Trunk struct {
	Name    string `yaml:"name"`
	Gateway string `yaml:"gateway"`
	// Endpoints are channel names or templates, e.g. "ds/ds1-1/{1..24}".
	Endpoints []string `yaml:"endpoints"`
	// Hunting is linear (default), round-robin or least-recent.
	Hunting string `yaml:"hunting"`
	Peer    string `yaml:"peer"`
	// DIDs the trunk serves: exact numbers, ranges "15551230000-15551230099",
	// or regular expressions "/^1555123\d{4}$/".
	DIDs     []string    `yaml:"dids"`
	CallerID CallerID    `yaml:"caller_id"`
	Rewrite  RewriteRefs `yaml:"rewrite"`
}

// CallerID says how the calling number is presented.
type CallerID struct {
	// Presentation is allowed (default) or restricted.
	Presentation string `yaml:"presentation"`
	// Number replaces the calling number when set.
	Number string `yaml:"number"`
	Name   string `yaml:"name"`
}

// HuntGroup is a set of lines an inbound call may ring.
type HuntGroup struct {
	Name string `yaml:"name"`
	// Lines are line ids, "gateway/endpoint" (e.g. "rgw1/aaln/3").
	Lines []string `yaml:"lines"`
	// Strategy is linear (default), round-robin or ring-all.
	Strategy string `yaml:"strategy"`
}

// DialPlan is a named digit map with its timers.
type DialPlan struct {
	Name     string `yaml:"name"`
	DigitMap string `yaml:"digit_map"`
	// Default marks the plan used by lines and gateways that name none.
	Default bool `yaml:"default"`
	// FirstDigitTimeout: off hook with no digit gives reorder (default 16s).
	FirstDigitTimeout time.Duration `yaml:"first_digit_timeout"`
	// InterDigitTimeout is the T timer of the digit map (default 4s).
	InterDigitTimeout time.Duration `yaml:"inter_digit_timeout"`
}

// RewriteSet is an ordered list of number rewriting rules.
type RewriteSet struct {
	Name  string        `yaml:"name"`
	Rules []RewriteRule `yaml:"rules"`
}

// RewriteRule matches a number and replaces it. Exactly one of Exact,
// Prefix and Regex is set. With Prefix, Replace takes the place of the
// prefix; with Regex, Replace may use $1, ${name}; with Exact, it replaces
// the whole number. Processing stops after a matching rule with Stop.
type RewriteRule struct {
	NumberMatch `yaml:",inline"`
	Replace     string `yaml:"replace"`
	Stop        bool   `yaml:"stop"`
}

// NumberMatch matches a number: at most one of the three is set; none
// matches any number.
type NumberMatch struct {
	Exact  string `yaml:"exact"`
	Prefix string `yaml:"prefix"`
	Regex  string `yaml:"regex"`
}

// RewriteRefs names the rewrite sets for each direction.
type RewriteRefs struct {
	// ToSIP applies to numbers going from MGCP to SIP (dialed and calling).
	ToSIP string `yaml:"to_sip"`
	// ToMGCP applies to numbers coming from SIP (called DID, caller id).
	ToMGCP string `yaml:"to_mgcp"`
}

// Routes say where calls go.
type Routes struct {
	Outbound []OutboundRoute `yaml:"outbound"`
	Inbound  []InboundRoute  `yaml:"inbound"`
}

// OutboundRoute sends dialed numbers matching Match to exactly one of
// Peer, Trunk, or Local (another mgsip line, found by its SIP user).
type OutboundRoute struct {
	Name  string      `yaml:"name"`
	Match NumberMatch `yaml:"match"`
	Peer  string      `yaml:"peer"`
	Trunk string      `yaml:"trunk"`
	Local bool        `yaml:"local"`
	// LocalFallback switches the call locally when the peer is
	// unreachable and the number is a local line (survivability).
	LocalFallback bool `yaml:"local_fallback"`
}

// InboundRoute sends SIP calls for a user or DID to exactly one of Line,
// Trunk or HuntGroup. Peer, when set, restricts the route to calls from
// that peer.
type InboundRoute struct {
	Name      string      `yaml:"name"`
	Peer      string      `yaml:"peer"`
	Match     NumberMatch `yaml:"match"`
	Line      string      `yaml:"line"`
	Trunk     string      `yaml:"trunk"`
	HuntGroup string      `yaml:"hunt_group"`
}
