package mapping

import (
	"slices"
)

// Changes lists what differs between two rules of one line (the same
// gateway/endpoint), by the configuration keys that carry it: "user",
// "auth_user", "password", "display_name", "peer", "dial_plan",
// "features", "rewrite" and "gateway" (a setting of the line's gateway).
// Nil means the rules behave the same. A reload uses it to tell which
// lines take a new rule.
func (l *LineRule) Changes(o *LineRule) []string {
	var out []string
	add := func(key string, differ bool) {
		if differ {
			out = append(out, key)
		}
	}
	add("user", l.User != o.User)
	add("auth_user", l.AuthUser != o.AuthUser)
	add("password", l.Password != o.Password)
	add("display_name", l.DisplayName != o.DisplayName)
	add("peer", !samePeer(l.Peer, o.Peer))
	add("dial_plan", !samePlan(l.DialPlan, o.DialPlan))
	add("features", l.Features != o.Features)
	add("rewrite", !l.ToSIP.Equal(o.ToSIP) || !l.ToMGCP.Equal(o.ToMGCP))
	add("gateway", !sameGateway(l.Gateway, o.Gateway))
	return out
}

func samePeer(a, b *PeerRule) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.Host == b.Host && a.Port == b.Port && a.Transport == b.Transport &&
		a.Registrar == b.Registrar && a.OutboundProxy == b.OutboundProxy && a.Realm == b.Realm && a.Auth == b.Auth &&
		a.Register == b.Register && a.RegisterExpiry == b.RegisterExpiry && a.OptionsInterval == b.OptionsInterval &&
		slices.Equal(a.Addresses, b.Addresses) && sameAccount(a.Account, b.Account) &&
		a.ToSIP.Equal(b.ToSIP) && a.ToMGCP.Equal(b.ToMGCP) && a.PRACK == b.PRACK
}

func sameAccount(a, b *Account) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func samePlan(a, b *DialPlanRule) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameGateway(a, b *GatewayRule) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.Domain == b.Domain && a.Address == b.Address && a.Learn == b.Learn && a.Port == b.Port &&
		slices.Equal(a.Codecs, b.Codecs) && a.Ptime == b.Ptime && a.Quirks == b.Quirks && a.Keepalive == b.Keepalive &&
		samePlan(a.DialPlan, b.DialPlan)
}

// Equal reports whether two rewrite sets rewrite every number alike (the
// same rules in the same order); nil is the empty set.
func (rw *Rewriter) Equal(o *Rewriter) bool {
	if rw == nil || o == nil {
		return rw == o
	}
	if rw.Name != o.Name || len(rw.rules) != len(o.rules) {
		return false
	}
	for i, r := range rw.rules {
		p := o.rules[i]
		if r.replace != p.replace || r.stop != p.stop || r.m.exact != p.m.exact || r.m.prefix != p.m.prefix ||
			(r.m.re == nil) != (p.m.re == nil) || (r.m.re != nil && r.m.re.String() != p.m.re.String()) {
			return false
		}
	}
	return true
}

// Changes lists what differs between two rules of one trunk group.
func (t *TrunkRule) Changes(o *TrunkRule) []string {
	var out []string
	add := func(key string, differ bool) {
		if differ {
			out = append(out, key)
		}
	}
	add("gateway", !sameGateway(t.Gateway, o.Gateway))
	add("endpoints", !slices.Equal(t.Endpoints, o.Endpoints))
	add("hunting", t.Hunting != o.Hunting)
	add("peer", !samePeer(t.Peer, o.Peer))
	add("dids", !slices.Equal(t.DIDs, o.DIDs))
	add("caller_id", t.CallerID != o.CallerID)
	add("rewrite", !t.ToSIP.Equal(o.ToSIP) || !t.ToMGCP.Equal(o.ToMGCP))
	return out
}
