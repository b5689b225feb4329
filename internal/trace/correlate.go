package trace

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// MGCPCorrelator finds the SIP Call-ID an MGCP message belongs to, for the
// HEP correlation chunk (0x0011) by which Homer shows the MGCP side of a
// call with its SIP side. A command belongs to the call in progress on its
// endpoint (Lookup asks the bridge); a response belongs to the command it
// answers (same peer address, transaction id, opposite direction), which
// it carries no endpoint to tell. Messages of a line before its SIP dialog
// exists (off-hook, dial tone, digits of an outgoing call) have no Call-ID
// yet and go without.
type MGCPCorrelator struct {
	// Lookup returns the SIP Call-ID of the call on an endpoint
	// ("aaln/1@gw.example"), or "".
	Lookup func(endpoint string) string

	mu        sync.Mutex
	cur, prev map[txKey]string
	rotated   time.Time
}

type txKey struct {
	peer netip.Addr
	tx   string
	out  bool // the command went out (we sent it)
}

// Transactions are remembered for at least this long (RFC 3435 §3.5: a
// transaction is over well within T-hist, 30 s by default), at most twice.
const correlationKeep = 32 * time.Second

// maxCorrelations bounds the table; past it the older half is dropped.
const maxCorrelations = 1 << 16

// Correlate returns the SIP Call-ID of one MGCP datagram (its first
// message), out when mgsip sent it, peer being the gateway.
func (c *MGCPCorrelator) Correlate(peer netip.AddrPort, out bool, msg []byte, now time.Time) string {
	if c == nil || c.Lookup == nil {
		return ""
	}
	first := msg
	if i := bytes.IndexByte(msg, '\n'); i >= 0 {
		first = msg[:i]
	}
	f := strings.Fields(string(first[:min(len(first), 256)]))
	if len(f) < 2 {
		return ""
	}
	addr := peer.Addr().Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || now.Sub(c.rotated) > correlationKeep || len(c.cur) >= maxCorrelations {
		c.prev, c.cur, c.rotated = c.cur, map[txKey]string{}, now
	}
	if isResponseCode(f[0]) {
		k := txKey{peer: addr, tx: f[1], out: !out}
		if id, ok := c.cur[k]; ok {
			return id
		}
		return c.prev[k]
	}
	if len(f) < 3 {
		return ""
	}
	id := c.Lookup(f[2])
	if id != "" {
		c.cur[txKey{peer: addr, tx: f[1], out: out}] = id
	}
	return id
}

func isResponseCode(s string) bool {
	return len(s) == 3 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'
}
