package mapping

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with a configuration, at a key path such as
// "lines[2].peer".
type Problem struct {
	Path   string
	Reason string
}

func (p Problem) String() string { return p.Path + ": " + p.Reason }

// Error lists every problem New found.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Options hands New what the mapping package must not import itself.
type Options struct {
	// CheckDigitMap compiles a digit map and returns its error (cmd passes
	// the mgcp digit-map compiler). Nil skips the check.
	CheckDigitMap func(string) error
	// LookupEnv resolves ${NAME} in secrets (default os.LookupEnv).
	LookupEnv func(string) (string, bool)
}

// BuiltinDigitMap is the dial plan of lines when the configuration has
// none: any digits, complete when the inter-digit timer expires.
const BuiltinDigitMap = "([0-9*#].T)"

// Defaults of the configuration; docs/configuration.md lists them.
const (
	DefaultSIPPort           = 5060
	DefaultSIPTLSPort        = 5061
	DefaultGatewayPort       = 2427
	DefaultPtime             = 20
	DefaultKeepalive         = 60 * time.Second
	DefaultRegisterExpiry    = 300 * time.Second
	DefaultFirstDigitTimeout = 16 * time.Second
	DefaultInterDigitTimeout = 4 * time.Second
)

// DefaultCodecs is the codec preference of gateways that set none.
var DefaultCodecs = []string{"PCMU", "PCMA"}

// builtinQuirks are the quirk profiles every configuration has.
var builtinQuirks = map[string]Quirks{
	"generic": {ResponseAck: true, AuditConnection: true, WildcardAudit: true, EmbeddedRequests: true, CallerID: true, Conference: true, RingbackSignal: "G/rt", Version: "1.0"},
	// PacketCable NCS embedded MTAs (cable modems with phone ports).
	"ncs": {ResponseAck: true, AuditConnection: false, WildcardAudit: true, EmbeddedRequests: true, CallerID: true, Conference: true, RingbackSignal: "L/rt", ProtocolProfile: "NCS 1.0", Version: "1.0"},
	// Cisco IOS voice gateways (VG2xx, ISR FXS ports).
	"cisco-ios": {ResponseAck: true, AuditConnection: true, WildcardAudit: true, EmbeddedRequests: true, CallerID: true, Conference: true, RingbackSignal: "G/rt", Version: "1.0"},
	// osmo-mgw 1.10: refuses K: (539), never answers AUCX.
	"osmo-mgw": {ResponseAck: false, AuditConnection: false, WildcardAudit: true, EmbeddedRequests: false, CallerID: false, RingbackSignal: "G/rt", Version: "1.0"},
}

type compiler struct {
	opts     Options
	problems []Problem
	r        *Rules
	rewrites map[string]*Rewriter
	plans    map[string]*DialPlanRule
	quirks   map[string]Quirks
}

func (c *compiler) bad(path, format string, a ...any) {
	c.problems = append(c.problems, Problem{Path: path, Reason: fmt.Sprintf(format, a...)})
}

func at(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// New compiles cfg. It returns *Error listing every problem when the
// configuration is not usable.
func New(cfg Config, opts Options) (*Rules, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	c := &compiler{opts: opts, rewrites: map[string]*Rewriter{}, plans: map[string]*DialPlanRule{}, quirks: map[string]Quirks{}}
	c.r = &Rules{
		peerByName: map[string]*PeerRule{}, gatewayByName: map[string]*GatewayRule{}, gatewayByDomain: map[string]*GatewayRule{},
		lineByID: map[string]*LineRule{}, lineByEndpoint: map[string]map[string]*LineRule{}, lineBySIP: map[string]map[string]*LineRule{},
		trunkByName: map[string]*TrunkRule{}, trunkByEndpoint: map[string]map[string]*TrunkRule{}, huntByName: map[string]*HuntGroupRule{},
	}
	c.rewriteSets(cfg.Rewrites)
	c.dialPlans(cfg.DialPlans)
	c.quirkProfiles(cfg.Quirks)
	c.peers(cfg.Peers)
	c.gateways(cfg.Gateways)
	endpoints := map[string]string{} // lower-case endpoint name -> path of its owner
	c.lines(cfg.Lines, endpoints)
	c.trunks(cfg.Trunks, endpoints)
	c.huntGroups(cfg.HuntGroups)
	c.routes(cfg.Routes)
	if len(c.problems) > 0 {
		return nil, &Error{Problems: c.problems}
	}
	return c.r, nil
}

// name checks a name field: present, unique in seen, no spaces.
func (c *compiler) name(path, n string, seen map[string]bool) bool {
	switch {
	case n == "":
		c.bad(path+".name", "is required")
		return false
	case strings.ContainsAny(n, " \t/@"):
		c.bad(path+".name", "%q must not contain spaces, '/' or '@'", n)
		return false
	case seen[n]:
		c.bad(path+".name", "%q is used twice", n)
		return false
	}
	seen[n] = true
	return true
}

func (c *compiler) rewriteSets(sets []RewriteSet) {
	seen := map[string]bool{}
	for i, s := range sets {
		p := at("rewrites", i)
		if !c.name(p, s.Name, seen) {
			continue
		}
		rw := &Rewriter{Name: s.Name}
		if len(s.Rules) == 0 {
			c.bad(p+".rules", "needs at least one rule")
		}
		for j, rule := range s.Rules {
			rp := at(p+".rules", j)
			m, err := compileMatch(rule.NumberMatch)
			if err != nil {
				c.bad(rp, "%v", err)
				continue
			}
			rw.rules = append(rw.rules, rewriteRule{m: m, replace: rule.Replace, stop: rule.Stop})
		}
		c.rewrites[s.Name] = rw
		c.r.Rewriters = append(c.r.Rewriters, rw)
	}
}

func (c *compiler) rewriteRef(path, name string) *Rewriter {
	if name == "" {
		return nil
	}
	rw, ok := c.rewrites[name]
	if !ok {
		c.bad(path, "no rewrite set named %q %s", name, Hint(name, "rewrite sets", keysOf(c.rewrites)))
	}
	return rw
}

func (c *compiler) dialPlans(plans []DialPlan) {
	seen := map[string]bool{}
	for i, d := range plans {
		p := at("dial_plans", i)
		if !c.name(p, d.Name, seen) {
			continue
		}
		if d.DigitMap == "" {
			c.bad(p+".digit_map", "is required")
		} else if c.opts.CheckDigitMap != nil {
			if err := c.opts.CheckDigitMap(d.DigitMap); err != nil {
				c.bad(p+".digit_map", "%v", err)
			}
		}
		rule := &DialPlanRule{Name: d.Name, DigitMap: d.DigitMap, Default: d.Default,
			FirstDigitTimeout: orDuration(d.FirstDigitTimeout, DefaultFirstDigitTimeout),
			InterDigitTimeout: orDuration(d.InterDigitTimeout, DefaultInterDigitTimeout)}
		if d.FirstDigitTimeout < 0 {
			c.bad(p+".first_digit_timeout", "must not be negative")
		}
		if d.InterDigitTimeout < 0 {
			c.bad(p+".inter_digit_timeout", "must not be negative")
		}
		if d.Default {
			if c.r.defaultPlan != nil {
				c.bad(p+".default", "%q and %q are both marked default", c.r.defaultPlan.Name, d.Name)
			}
			c.r.defaultPlan = rule
		}
		c.plans[d.Name] = rule
		c.r.DialPlans = append(c.r.DialPlans, rule)
	}
	if c.r.defaultPlan == nil {
		if len(c.r.DialPlans) == 1 {
			c.r.defaultPlan = c.r.DialPlans[0]
		} else {
			c.r.defaultPlan = &DialPlanRule{Name: "builtin", DigitMap: BuiltinDigitMap, Default: true,
				FirstDigitTimeout: DefaultFirstDigitTimeout, InterDigitTimeout: DefaultInterDigitTimeout}
		}
	}
}

func (c *compiler) planRef(path, name string) *DialPlanRule {
	if name == "" {
		return nil
	}
	d, ok := c.plans[name]
	if !ok {
		c.bad(path, "no dial plan named %q %s", name, Hint(name, "dial plans", keysOf(c.plans)))
	}
	return d
}

func orDuration(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func orBool(v *bool, def bool) bool {
	if v == nil {
		return def
	}
	return *v
}

func (c *compiler) quirkProfiles(profiles []QuirkProfile) {
	for k, v := range builtinQuirks {
		v.Profile = k
		c.quirks[k] = v
	}
	seen := map[string]bool{}
	// Profiles may build on each other in any order: resolve until no
	// progress, then report what is left.
	pending := map[int]bool{}
	for i, q := range profiles {
		p := at("quirks", i)
		if !c.name(p, q.Name, seen) {
			continue
		}
		if _, builtin := builtinQuirks[q.Name]; builtin {
			c.bad(p+".name", "%q is a built-in profile; choose another name and set base: %s", q.Name, q.Name)
			continue
		}
		pending[i] = true
	}
	for progress := true; progress && len(pending) > 0; {
		progress = false
		for _, i := range sortedKeys(pending) {
			q := profiles[i]
			base := q.Base
			if base == "" {
				base = "generic"
			}
			b, ok := c.quirks[base]
			if !ok {
				continue
			}
			b.Profile = q.Name
			b.ResponseAck = orBool(q.ResponseAck, b.ResponseAck)
			b.AuditConnection = orBool(q.AuditConnection, b.AuditConnection)
			b.WildcardAudit = orBool(q.WildcardAudit, b.WildcardAudit)
			b.EmbeddedRequests = orBool(q.EmbeddedRequests, b.EmbeddedRequests)
			b.CallerID = orBool(q.CallerID, b.CallerID)
			b.Conference = orBool(q.Conference, b.Conference)
			if q.RingbackSignal != "" {
				b.RingbackSignal = q.RingbackSignal
			}
			if q.Profile != "" {
				b.ProtocolProfile = q.Profile
			}
			if q.Version != "" {
				if q.Version != "1.0" && q.Version != "0.1" {
					c.bad(at("quirks", i)+".version", "must be 1.0 or 0.1, not %q", q.Version)
				}
				b.Version = q.Version
			}
			c.quirks[q.Name] = b
			delete(pending, i)
			progress = true
		}
	}
	for _, i := range sortedKeys(pending) {
		c.bad(at("quirks", i)+".base", "no quirk profile named %q (or the bases form a loop)", profiles[i].Base)
	}
}

func sortedKeys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func (c *compiler) peers(peers []Peer) {
	seen := map[string]bool{}
	for i, pc := range peers {
		p := at("peers", i)
		if !c.name(p, pc.Name, seen) {
			continue
		}
		r := &PeerRule{Name: pc.Name, Host: pc.Host, Port: pc.Port, Transport: strings.ToLower(pc.Transport),
			OutboundProxy: pc.OutboundProxy, Realm: pc.Realm, Auth: strings.ToLower(pc.Auth),
			RegisterExpiry: orDuration(pc.RegisterExpiry, DefaultRegisterExpiry), OptionsInterval: pc.OptionsInterval}
		if r.Host == "" {
			c.bad(p+".host", "is required")
		} else if !validHost(r.Host) {
			c.bad(p+".host", "%q is not an IP address or a DNS name", r.Host)
		}
		switch r.Transport {
		case "":
			r.Transport = "udp"
		case "udp", "tcp", "tls":
		default:
			c.bad(p+".transport", "must be udp, tcp or tls, not %q", pc.Transport)
		}
		if r.Port == 0 {
			r.Port = DefaultSIPPort
			if r.Transport == "tls" {
				r.Port = DefaultSIPTLSPort
			}
		} else if r.Port < 1 || r.Port > 65535 {
			c.bad(p+".port", "%d is not a port number", r.Port)
		}
		switch r.Auth {
		case "":
			r.Auth = "digest"
		case "digest", "ip":
		default:
			c.bad(p+".auth", "must be digest or ip, not %q", pc.Auth)
		}
		switch r.PRACK = strings.ToLower(pc.PRACK); r.PRACK {
		case "":
			r.PRACK = "off"
		case "off", "supported", "required":
		default:
			c.bad(p+".prack", "must be off, supported or required, not %q", pc.PRACK)
		}
		r.Register = orBool(pc.Register, r.Auth == "digest")
		r.Registrar = pc.Registrar
		if r.Registrar == "" {
			r.Registrar = hostPort(r.Host, r.Port)
		}
		if pc.RegisterExpiry < 0 || (pc.RegisterExpiry > 0 && pc.RegisterExpiry < 60*time.Second) {
			c.bad(p+".register_expiry", "must be at least 60s")
		}
		if pc.OptionsInterval < 0 {
			c.bad(p+".options_interval", "must not be negative")
		}
		for j, a := range pc.Addresses {
			pfx, err := parsePrefix(a)
			if err != nil {
				c.bad(at(p+".addresses", j), "%v", err)
				continue
			}
			r.Addresses = append(r.Addresses, pfx)
		}
		if pc.Account != nil {
			acct := *pc.Account
			if acct.User == "" {
				c.bad(p+".account.user", "is required")
			}
			if acct.AuthUser == "" {
				acct.AuthUser = acct.User
			}
			pw, err := ExpandEnv(string(acct.Password), c.opts.LookupEnv)
			if err != nil {
				c.bad(p+".account.password", "%v", err)
			}
			acct.Password = Secret(pw)
			r.Account = &acct
		}
		r.ToSIP = c.rewriteRef(p+".rewrite.to_sip", pc.Rewrite.ToSIP)
		r.ToMGCP = c.rewriteRef(p+".rewrite.to_mgcp", pc.Rewrite.ToMGCP)
		c.r.peerByName[r.Name] = r
		c.r.Peers = append(c.r.Peers, r)
	}
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validHost accepts IP addresses and DNS names.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
		}
	}
	return true
}

func (c *compiler) gateways(gws []Gateway) {
	seen := map[string]bool{}
	for i, gc := range gws {
		p := at("gateways", i)
		if !c.name(p, gc.Name, seen) {
			continue
		}
		g := &GatewayRule{Name: gc.Name, Domain: gc.Domain, Port: gc.Port, SourcePort: gc.SourcePort, Codecs: gc.Codecs, Ptime: gc.Ptime,
			Keepalive: orDuration(gc.Keepalive, DefaultKeepalive)}
		switch {
		case g.Domain == "":
			c.bad(p+".domain", "is required")
		case !validDomain(g.Domain):
			c.bad(p+".domain", "%q is not a host name or [IP literal]", g.Domain)
		default:
			key := strings.ToLower(g.Domain)
			if other, dup := c.r.gatewayByDomain[key]; dup {
				c.bad(p+".domain", "%q is also the domain of gateway %q", g.Domain, other.Name)
			}
			c.r.gatewayByDomain[key] = g
		}
		switch addr := gc.Address; {
		case strings.EqualFold(addr, "learn"):
			g.Learn = true
		case addr == "":
			g.Address = strings.Trim(g.Domain, "[]")
		case validHost(addr):
			g.Address = addr
		default:
			c.bad(p+".address", "%q is not an IP address, a DNS name or \"learn\"", addr)
		}
		if g.Port == 0 {
			g.Port = DefaultGatewayPort
		} else if g.Port < 1 || g.Port > 65535 {
			c.bad(p+".port", "%d is not a port number", g.Port)
		}
		if g.SourcePort < 0 || g.SourcePort > 65535 {
			c.bad(p+".source_port", "%d is not a port number", g.SourcePort)
		} else if g.SourcePort != 0 && g.Learn {
			c.bad(p+".source_port", "cannot be checked for a gateway whose address is learnt")
		}
		if len(g.Codecs) == 0 {
			g.Codecs = DefaultCodecs
		}
		// Codec names are compared without case and take the usual
		// aliases; the rules keep the SDP spelling (RFC 3551 §6).
		g.Codecs = append([]string(nil), g.Codecs...)
		for j, codec := range g.Codecs {
			canon, ok := CanonicalCodec(codec)
			if !ok {
				c.bad(at(p+".codecs", j), "%q is not a codec mgsip knows %s", codec, Hint(codec, "codecs", KnownCodecs))
				continue
			}
			g.Codecs[j] = canon
		}
		if g.Ptime == 0 {
			g.Ptime = DefaultPtime
		} else if g.Ptime < 5 || g.Ptime > 200 {
			c.bad(p+".ptime", "%d ms is outside 5-200", g.Ptime)
		}
		if gc.Keepalive < 0 {
			c.bad(p+".keepalive", "must not be negative")
		}
		q := gc.Quirks
		if q == "" {
			q = "generic"
		}
		if qs, ok := c.quirks[q]; ok {
			g.Quirks = qs
		} else {
			c.bad(p+".quirks", "no quirk profile named %q %s", q, Hint(q, "quirk profiles", keysOf(c.quirks)))
		}
		g.DialPlan = c.planRef(p+".dial_plan", gc.DialPlan)
		c.r.gatewayByName[g.Name] = g
		c.r.Gateways = append(c.r.Gateways, g)
	}
}

func validDomain(d string) bool {
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		_, err := netip.ParseAddr(d[1 : len(d)-1])
		return err == nil
	}
	return validHost(d)
}

// validLocalName checks a concrete local endpoint name (RFC 3435 §2.1.2).
func validLocalName(s string) bool {
	if s == "" {
		return false
	}
	for _, term := range strings.Split(s, "/") {
		if term == "" || term == "*" || term == "$" {
			return false
		}
		for i := 0; i < len(term); i++ {
			if ch := term[i]; ch <= ' ' || ch >= 0x7f || ch == '@' || ch == '*' || ch == '$' {
				return false
			}
		}
	}
	return true
}

func validSIPUser(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("@:;<>\"/?", ch) >= 0 {
			return false
		}
	}
	return true
}

func (c *compiler) gatewayRef(path, name string) *GatewayRule {
	if name == "" {
		c.bad(path, "is required")
		return nil
	}
	g, ok := c.r.gatewayByName[name]
	if !ok {
		c.bad(path, "no gateway named %q %s", name, Hint(name, "gateways", keysOf(c.r.gatewayByName)))
	}
	return g
}

func (c *compiler) peerRef(path, name string) *PeerRule {
	if name == "" {
		if len(c.r.Peers) == 1 {
			return c.r.Peers[0]
		}
		c.bad(path, "is required when there is not exactly one peer")
		return nil
	}
	pr, ok := c.r.peerByName[name]
	if !ok {
		c.bad(path, "no peer named %q %s", name, Hint(name, "peers", keysOf(c.r.peerByName)))
	}
	return pr
}

// claim records that path owns an endpoint, reporting a second owner.
func (c *compiler) claim(endpoints map[string]string, g *GatewayRule, local, path string) bool {
	key := strings.ToLower(local) + "@" + strings.ToLower(g.Domain)
	if other, dup := endpoints[key]; dup {
		c.bad(path, "endpoint %s@%s is already bound by %s", local, g.Domain, other)
		return false
	}
	endpoints[key] = path
	return true
}

func (c *compiler) lines(lines []Line, endpoints map[string]string) {
	for i, lc := range lines {
		p := at("lines", i)
		before := len(c.problems)
		g := c.gatewayRef(p+".gateway", lc.Gateway)
		peer := c.peerRef(p+".peer", lc.Peer)
		plan := c.planRef(p+".dial_plan", lc.DialPlan)
		toSIP := c.rewriteRef(p+".rewrite.to_sip", lc.Rewrite.ToSIP)
		toMGCP := c.rewriteRef(p+".rewrite.to_mgcp", lc.Rewrite.ToMGCP)
		tmpl, err := parseRange(lc.Endpoint)
		switch {
		case lc.Endpoint == "":
			c.bad(p+".endpoint", "is required")
		case err != nil:
			c.bad(p+".endpoint", "%v", err)
		}
		if lc.User == "" {
			c.bad(p+".user", "is required")
		}
		dtmf := strings.ToLower(lc.Features.DTMF)
		switch dtmf {
		case "":
			dtmf = "rfc4733"
		case "rfc4733", "info":
		default:
			c.bad(p+".features.dtmf", "must be rfc4733 or info, not %q", lc.Features.DTMF)
		}
		if lc.Features.HotlineDelay < 0 {
			c.bad(p+".features.hotline_delay", "must not be negative")
		}
		// Every secret the entry's lines miss is listed in one problem, and
		// also when the entry has other problems: check-config must name
		// every unset variable in one run.
		missing := c.missingEnv(string(lc.Password), tmpl, err == nil && lc.Endpoint != "")
		if len(missing.Names) > 0 {
			c.bad(p+".password", "%v", missing)
		}
		if len(c.problems) > before || g == nil {
			continue // expanding a broken entry would only repeat its problems
		}
		if plan == nil {
			plan = g.DialPlan
		}
		if plan == nil {
			plan = c.r.defaultPlan
		}
		for k := 0; k < tmpl.count(); k++ {
			local, n := tmpl.at(k)
			field := func(key, v string) string {
				out, err := expand(v, n, k, tmpl.has)
				if err != nil {
					c.bad(p+"."+key, "%v", err)
				}
				return out
			}
			l := &LineRule{Gateway: g, Endpoint: local, Peer: peer, DialPlan: plan, ToSIP: toSIP, ToMGCP: toMGCP, Source: p,
				User: field("user", lc.User), AuthUser: field("auth_user", lc.AuthUser), DisplayName: field("display_name", lc.DisplayName),
				Features: FeatureSet{
					CallWaiting: orBool(lc.Features.CallWaiting, true), ThreeWay: orBool(lc.Features.ThreeWay, true),
					Transfer: orBool(lc.Features.Transfer, true), MWI: orBool(lc.Features.MWI, true),
					CallerID: orBool(lc.Features.CallerID, true), Hotline: field("features.hotline", lc.Features.Hotline),
					HotlineDelay: lc.Features.HotlineDelay, DTMF: dtmf,
					ConferenceURI: field("features.conference_uri", lc.Features.ConferenceURI),
				}}
			if u := l.Features.ConferenceURI; strings.ContainsAny(u, " \t@:;<>") {
				c.bad(p+".features.conference_uri", "must be a number or user to call at the line's route, not %q", u)
			}
			pw := field("password", string(lc.Password))
			if len(c.problems) > before {
				break
			}
			if pw, err = ExpandEnv(pw, c.opts.LookupEnv); err != nil {
				if _, ok := err.(*MissingEnvError); ok {
					continue // listed above
				}
				c.bad(p+".password", "%v", err)
				break
			}
			l.Password = Secret(pw)
			if l.AuthUser == "" {
				l.AuthUser = l.User
			}
			if !validLocalName(local) {
				c.bad(p+".endpoint", "%q is not a concrete local endpoint name", local)
				break
			}
			if !validSIPUser(l.User) {
				c.bad(p+".user", "%q is not a valid SIP user name", l.User)
				break
			}
			if peer != nil && peer.Auth == "digest" && l.Password == "" {
				c.bad(p+".password", "is required: peer %q uses digest authentication", peer.Name)
				break
			}
			if !c.claim(endpoints, g, local, p) {
				break
			}
			l.ID = g.Name + "/" + local
			if peer != nil {
				users := c.r.lineBySIP[peer.Name]
				if users == nil {
					users = map[string]*LineRule{}
					c.r.lineBySIP[peer.Name] = users
				}
				if other, dup := users[l.User]; dup {
					c.bad(p+".user", "SIP user %q at peer %q is already line %s (%s)", l.User, peer.Name, other.ID, other.Source)
					break
				}
				users[l.User] = l
			}
			c.r.lineByID[l.ID] = l
			dom := strings.ToLower(g.Domain)
			if c.r.lineByEndpoint[dom] == nil {
				c.r.lineByEndpoint[dom] = map[string]*LineRule{}
			}
			c.r.lineByEndpoint[dom][strings.ToLower(local)] = l
			c.r.Lines = append(c.r.Lines, l)
		}
	}
}

// missingEnv lists the unset ${NAME} variables of a line entry's password
// over every line of its range (tmplOK: tmpl was parsed; otherwise only a
// password without range placeholders is looked at).
func (c *compiler) missingEnv(pw string, tmpl rangeTemplate, tmplOK bool) *MissingEnvError {
	missing := &MissingEnvError{}
	if !strings.Contains(pw, "${") {
		return missing
	}
	if !tmplOK {
		tmpl = rangeTemplate{}
	}
	for k := 0; k < tmpl.count(); k++ {
		_, n := tmpl.at(k)
		v, err := expand(pw, n, k, tmpl.has)
		if err != nil {
			return missing // the placeholder problem is reported elsewhere
		}
		if _, err := ExpandEnv(v, c.opts.LookupEnv); err != nil {
			if me, ok := err.(*MissingEnvError); ok {
				missing.add(me.Names...)
			}
		}
	}
	return missing
}

func (c *compiler) trunks(trunks []Trunk, endpoints map[string]string) {
	seen := map[string]bool{}
	var dids []*didPattern
	for i, tc := range trunks {
		p := at("trunks", i)
		if !c.name(p, tc.Name, seen) {
			continue
		}
		t := &TrunkRule{Name: tc.Name, Hunting: strings.ToLower(tc.Hunting), DIDs: tc.DIDs, CallerID: tc.CallerID}
		t.Gateway = c.gatewayRef(p+".gateway", tc.Gateway)
		t.Peer = c.peerRef(p+".peer", tc.Peer)
		t.ToSIP = c.rewriteRef(p+".rewrite.to_sip", tc.Rewrite.ToSIP)
		t.ToMGCP = c.rewriteRef(p+".rewrite.to_mgcp", tc.Rewrite.ToMGCP)
		switch t.Hunting {
		case "":
			t.Hunting = "linear"
		case "linear", "round-robin", "least-recent":
		default:
			c.bad(p+".hunting", "must be linear, round-robin or least-recent, not %q", tc.Hunting)
		}
		switch strings.ToLower(t.CallerID.Presentation) {
		case "":
			t.CallerID.Presentation = "allowed"
		case "allowed", "restricted":
			t.CallerID.Presentation = strings.ToLower(t.CallerID.Presentation)
		default:
			c.bad(p+".caller_id.presentation", "must be allowed or restricted, not %q", tc.CallerID.Presentation)
		}
		if len(tc.Endpoints) == 0 {
			c.bad(p+".endpoints", "needs at least one channel")
		}
		for j, e := range tc.Endpoints {
			ep := at(p+".endpoints", j)
			tmpl, err := parseRange(e)
			if err != nil {
				c.bad(ep, "%v", err)
				continue
			}
			for k := 0; k < tmpl.count(); k++ {
				local, _ := tmpl.at(k)
				if !validLocalName(local) {
					c.bad(ep, "%q is not a concrete local endpoint name", local)
					break
				}
				if t.Gateway == nil || !c.claim(endpoints, t.Gateway, local, ep) {
					continue
				}
				t.Endpoints = append(t.Endpoints, local)
				dom := strings.ToLower(t.Gateway.Domain)
				if c.r.trunkByEndpoint[dom] == nil {
					c.r.trunkByEndpoint[dom] = map[string]*TrunkRule{}
				}
				c.r.trunkByEndpoint[dom][strings.ToLower(local)] = t
			}
		}
		for j, d := range tc.DIDs {
			dp, err := parseDID(d)
			if err != nil {
				c.bad(at(p+".dids", j), "%v", err)
				continue
			}
			dp.path, dp.trunkIdx = at(p+".dids", j), len(c.r.Trunks)
			for _, o := range dids {
				if dp.overlaps(o) {
					c.bad(dp.path, "DID %s overlaps %s (%s)", d, o.src, o.path)
				}
			}
			dids = append(dids, &dp)
		}
		c.r.trunkByName[t.Name] = t
		c.r.Trunks = append(c.r.Trunks, t)
	}
	c.r.dids = dids
}

func (c *compiler) huntGroups(groups []HuntGroup) {
	seen := map[string]bool{}
	for i, hc := range groups {
		p := at("hunt_groups", i)
		if !c.name(p, hc.Name, seen) {
			continue
		}
		h := &HuntGroupRule{Name: hc.Name, Strategy: strings.ToLower(hc.Strategy)}
		switch h.Strategy {
		case "":
			h.Strategy = "linear"
		case "linear", "round-robin", "ring-all":
		default:
			c.bad(p+".strategy", "must be linear, round-robin or ring-all, not %q", hc.Strategy)
		}
		if len(hc.Lines) == 0 {
			c.bad(p+".lines", "needs at least one line")
		}
		for j, id := range hc.Lines {
			l := c.r.lineByID[id]
			if l == nil {
				c.bad(at(p+".lines", j), "no line %q (line ids are gateway/endpoint) %s", id, Hint(id, "lines", keysOf(c.r.lineByID)))
				continue
			}
			h.Lines = append(h.Lines, l)
		}
		c.r.huntByName[h.Name] = h
		c.r.HuntGroups = append(c.r.HuntGroups, h)
	}
}

func (c *compiler) routes(rt Routes) {
	for i, o := range rt.Outbound {
		p := at("routes.outbound", i)
		m, err := compileMatch(o.Match)
		if err != nil {
			c.bad(p+".match", "%v", err)
		}
		r := &OutboundRouteRule{Name: o.Name, Local: o.Local, LocalFallback: o.LocalFallback, m: m}
		targets := 0
		if o.Peer != "" {
			targets++
			r.Peer = c.peerRef(p+".peer", o.Peer)
		}
		if o.Trunk != "" {
			targets++
			if r.Trunk = c.r.trunkByName[o.Trunk]; r.Trunk == nil {
				c.bad(p+".trunk", "no trunk group named %q %s", o.Trunk, Hint(o.Trunk, "trunk groups", keysOf(c.r.trunkByName)))
			}
		}
		if o.Local {
			targets++
		}
		if targets != 1 {
			c.bad(p, "needs exactly one of peer, trunk and local")
		}
		if o.LocalFallback && o.Peer == "" {
			c.bad(p+".local_fallback", "only applies to routes to a peer")
		}
		c.r.Outbound = append(c.r.Outbound, r)
	}
	for i, in := range rt.Inbound {
		p := at("routes.inbound", i)
		m, err := compileMatch(in.Match)
		if err != nil {
			c.bad(p+".match", "%v", err)
		}
		r := &InboundRouteRule{Name: in.Name, m: m}
		if in.Peer != "" {
			r.Peer = c.peerRef(p+".peer", in.Peer)
		}
		targets := 0
		if in.Line != "" {
			targets++
			if r.Line = c.r.lineByID[in.Line]; r.Line == nil {
				c.bad(p+".line", "no line %q (line ids are gateway/endpoint) %s", in.Line, Hint(in.Line, "lines", keysOf(c.r.lineByID)))
			}
		}
		if in.Trunk != "" {
			targets++
			if r.Trunk = c.r.trunkByName[in.Trunk]; r.Trunk == nil {
				c.bad(p+".trunk", "no trunk group named %q %s", in.Trunk, Hint(in.Trunk, "trunk groups", keysOf(c.r.trunkByName)))
			}
		}
		if in.HuntGroup != "" {
			targets++
			if r.HuntGroup = c.r.huntByName[in.HuntGroup]; r.HuntGroup == nil {
				c.bad(p+".hunt_group", "no hunt group named %q %s", in.HuntGroup, Hint(in.HuntGroup, "hunt groups", keysOf(c.r.huntByName)))
			}
		}
		if targets != 1 {
			c.bad(p, "needs exactly one of line, trunk and hunt_group")
		}
		c.r.Inbound = append(c.r.Inbound, r)
	}
}
