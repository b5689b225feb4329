package mgcp

import (
	"errors"
	"net/netip"
	"strings"
)

// EndpointName is an endpoint identifier "local-name@domain"
// (RFC 3435 §2.1.1, §3.2.1.3), e.g. aaln/1@rgw.example.net,
// ds/ds1-1/$@[192.0.2.7]. The local name is a hierarchy of terms separated
// by "/"; a term may be the wildcard "*" (all of) or "$" (any of).
// Comparison is case-insensitive; the parsed text is kept as written.
type EndpointName struct {
	Local  string `json:"local,omitempty"`
	Domain string `json:"domain,omitempty"`
}

// ErrBadEndpoint is wrapped by ParseEndpointName errors.
var ErrBadEndpoint = errors.New("bad endpoint name")

// ParseEndpointName parses and checks "local@domain".
func ParseEndpointName(s string) (EndpointName, error) {
	e, reason := splitEndpoint(s)
	if reason != "" {
		return EndpointName{}, &endpointError{name: s, reason: reason}
	}
	return e, nil
}

type endpointError struct{ name, reason string }

func (e *endpointError) Error() string { return "bad endpoint name " + quote(e.name) + ": " + e.reason }
func (e *endpointError) Unwrap() error { return ErrBadEndpoint }

func quote(s string) string { return "\"" + s + "\"" }

// splitEndpoint returns the name or a reason why it is malformed.
func splitEndpoint(s string) (EndpointName, string) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return EndpointName{}, "missing '@domain'"
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return EndpointName{}, "empty local name"
	}
	if domain == "" {
		return EndpointName{}, "empty domain"
	}
	// Local name terms (RFC 3435 §2.1.2): non-empty, printable, no '@';
	// a wildcard stands for a whole term.
	start := 0
	for i := 0; i <= len(local); i++ {
		if i < len(local) && local[i] != '/' {
			c := local[i]
			if c <= ' ' || c >= 0x7f || c == '@' {
				return EndpointName{}, "invalid character in local name"
			}
			continue
		}
		term := local[start:i]
		if term == "" {
			return EndpointName{}, "empty term in local name"
		}
		if len(term) > 1 && strings.ContainsAny(term, "*$") {
			return EndpointName{}, "wildcard must be a whole term"
		}
		start = i + 1
	}
	if domain[0] == '[' {
		if domain[len(domain)-1] != ']' {
			return EndpointName{}, "unterminated IP literal in domain"
		}
		if _, err := netip.ParseAddr(domain[1 : len(domain)-1]); err != nil {
			return EndpointName{}, "invalid IP literal in domain"
		}
		return EndpointName{Local: local, Domain: domain}, ""
	}
	for i := 0; i < len(domain); i++ {
		c := domain[i]
		if !(isAlnum(c) || c == '-' || c == '.' || c == '_') {
			return EndpointName{}, "invalid character in domain"
		}
	}
	return EndpointName{Local: local, Domain: domain}, ""
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// String returns "local@domain".
func (e EndpointName) String() string {
	if e.Local == "" && e.Domain == "" {
		return ""
	}
	return e.Local + "@" + e.Domain
}

// AppendTo appends "local@domain" to b.
func (e EndpointName) AppendTo(b []byte) []byte {
	b = append(b, e.Local...)
	b = append(b, '@')
	return append(b, e.Domain...)
}

// IsZero reports an empty name.
func (e EndpointName) IsZero() bool { return e.Local == "" && e.Domain == "" }

// Terms splits the local name into its terms.
func (e EndpointName) Terms() []string { return strings.Split(e.Local, "/") }

// Wildcard returns '*' or '$' if a term of the local name is a wildcard,
// and 0 otherwise. "*" wins if both appear.
func (e EndpointName) Wildcard() byte {
	var w byte
	for rest := e.Local; ; {
		t, more, found := strings.Cut(rest, "/")
		switch t {
		case "*":
			return '*'
		case "$":
			w = '$'
		}
		if !found {
			return w
		}
		rest = more
	}
}

// IsWildcard reports whether the name contains a wildcard term.
func (e EndpointName) IsWildcard() bool { return e.Wildcard() != 0 }

// Equal compares two names case-insensitively.
func (e EndpointName) Equal(o EndpointName) bool {
	return equalFold(e.Local, o.Local) && equalFold(e.Domain, o.Domain)
}

// Key returns the name in lower case, for use as a map key.
func (e EndpointName) Key() string { return toLower(e.String()) }

// Matches reports whether the concrete name n is selected by e, which may
// contain wildcard terms. A wildcard term matches one term; a "*" as the
// last term also matches any number of further terms (so "*@gw" selects
// every endpoint of gw).
func (e EndpointName) Matches(n EndpointName) bool {
	if !equalFold(e.Domain, n.Domain) {
		return false
	}
	pt, nt := e.Terms(), n.Terms()
	for i, p := range pt {
		if i >= len(nt) {
			return false
		}
		if p == "*" && i == len(pt)-1 {
			return true
		}
		if p == "*" || p == "$" {
			continue
		}
		if !equalFold(p, nt[i]) {
			return false
		}
	}
	return len(pt) == len(nt)
}
