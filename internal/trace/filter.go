package trace

import (
	"strings"
	"sync"
)

// Filter narrows the wire trace (the log; not the pcap or HEP outputs,
// which keep everything) to some lines or gateways: MGCP commands for
// their endpoints and the responses to them, SIP messages whose
// Request-URI, From or To user is one of their accounts.
type Filter struct {
	Endpoints map[string]bool // local@domain, lower case
	Domains   map[string]bool // a gateway's domain, lower case: all its endpoints
	Users     map[string]bool // SIP users of the lines
	// Lines and Gateways are the names the filter was made from (shown
	// by the API).
	Lines, Gateways []string

	mu  sync.Mutex
	txs map[string]bool // remote|txid of traced MGCP commands, for their responses
}

// maxFilterTxs bounds the remembered transactions (the oldest half goes).
const maxFilterTxs = 4096

// matchMGCP reports whether an MGCP message passes: a command for one of
// the filter's endpoints, or a response to one such command.
func (f *Filter) matchMGCP(remote string, b []byte) bool {
	first, _, _ := strings.Cut(string(b[:min(len(b), 256)]), "\n")
	fields := strings.Fields(first)
	if len(fields) < 2 {
		return false
	}
	key := remote + "|" + fields[1]
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(fields[0]) == 3 && fields[0][0] >= '0' && fields[0][0] <= '9' {
		return f.txs[key] // a response
	}
	if len(fields) < 3 {
		return false
	}
	ep := strings.ToLower(fields[2])
	_, domain, _ := strings.Cut(ep, "@")
	if !f.Endpoints[ep] && !f.Domains[domain] {
		return false
	}
	if f.txs == nil || len(f.txs) >= maxFilterTxs {
		f.txs = map[string]bool{}
	}
	f.txs[key] = true
	return true
}

// matchSIP reports whether a SIP message names one of the filter's users
// in its Request-URI, From or To.
func (f *Filter) matchSIP(b []byte) bool {
	head := string(b[:min(len(b), 4096)])
	if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
		head = head[:i]
	}
	lines := strings.Split(head, "\n")
	if len(lines) == 0 {
		return false
	}
	if f.hasUser(lines[0]) && !strings.HasPrefix(lines[0], "SIP/2.0") {
		return true
	}
	for _, l := range lines[1:] {
		name, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "from", "f", "to", "t":
			if f.hasUser(v) {
				return true
			}
		}
	}
	return false
}

// hasUser finds "sip:USER@" or "sips:USER@" with a filtered user.
func (f *Filter) hasUser(s string) bool {
	for {
		i := strings.Index(s, "sip")
		if i < 0 {
			return false
		}
		s = s[i+3:]
		s = strings.TrimPrefix(s, "s")
		if !strings.HasPrefix(s, ":") {
			continue
		}
		user, _, ok := strings.Cut(s[1:], "@")
		if ok && f.Users[user] {
			return true
		}
	}
}
