package sip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
)

// The gate sits between the sockets and sipgo: every datagram (and every
// message framed on a TCP or TLS connection) passes it before sipgo parses
// it, builds a server transaction or starts a goroutine. It
//
//   - drops everything from strangers (sources WithAccess refuses), or
//     answers their requests 403 itself, at most Limits.StrangerRate a
//     second per address, never an ACK;
//   - drops malformed ACKs, which sipgo would answer 400 (RFC 3261 §17:
//     an ACK is never answered);
//   - answers statelessly what RFC 3261 says to refuse before any
//     processing: a method that is not upper case (501 with Allow, §8.2.1;
//     sipgo's parser would take "invite" for INVITE), a SIP version other
//     than 2.0 (505, §8.2.2 and §21.5.6), a CSeq method that differs from
//     the request's (400, RFC 4475 §3.4.1), and a request sipgo could not
//     build a transaction for (400);
//   - applies the rate limits of Limits to configured peers: 503 with
//     Retry-After beyond them, never for ACK.
type gate struct {
	allow       func(netip.AddrPort) bool
	dropUnknown bool
	retryAfter  string
	allowHdr    func() string
	log         *logrus.Entry
	logLimit    *rate.Limiter // debug lines about dropped messages

	peers     *bucketTable[netip.Addr]
	strangers *bucketTable[netip.Addr]
	lines     *bucketTable[string]
	invites   recentSet // INVITE transactions admitted, so retransmissions pass
	// stray consumes a response that is a 2xx no dialog takes (stray.go).
	stray func(data []byte) bool

	stats gateStats
}

type gateStats struct {
	refused, dropped, limited, badAcks, rejected atomic.Uint64
	forbidden, strangerDropped                   atomic.Uint64
}

// Stats counts what the stack refused before sipgo saw it.
type Stats struct {
	// Refused is requests (or TCP/TLS connections) from sources that are
	// not configured peers, answered 403 or dropped.
	Refused uint64
	// Dropped is datagrams and messages dropped without an answer:
	// strangers' (with drop_unknown, their responses and ACKs, and those
	// over stranger_rate) and malformed ACKs.
	Dropped uint64
	// Limited is configured peers' requests over a rate limit, answered
	// 503 (a stranger over stranger_rate is dropped: StrangerDropped).
	Limited uint64
	// Forbidden is strangers' requests answered 403 and StrangerDropped
	// their messages given no answer; Refused is their sum (with the
	// connections closed at once).
	Forbidden, StrangerDropped uint64
	// BadAcks is malformed ACKs dropped (never answered).
	BadAcks uint64
	// OtherDropped is Dropped less the strangers' messages and the bad
	// ACKs: peers' messages that could not be parsed.
	OtherDropped uint64
	// Rejected is malformed requests answered statelessly (400, 501, 505).
	Rejected uint64
}

// Stats returns the stack's counters of refused, dropped and limited
// traffic (for metrics).
func (s *Stack) Stats() Stats {
	g := &s.gate.stats
	st := Stats{Refused: g.refused.Load() + s.refused.Load(), Dropped: g.dropped.Load(), Limited: g.limited.Load(),
		BadAcks: g.badAcks.Load(), Rejected: g.rejected.Load(), Forbidden: g.forbidden.Load(),
		StrangerDropped: g.strangerDropped.Load()}
	// The counters are read one by one while they move: never below 0.
	st.OtherDropped = st.Dropped - min(st.Dropped, st.StrangerDropped+st.BadAcks)
	return st
}

func newGate(cfg Config, allow func(netip.AddrPort) bool, allowHdr func() string, log *logrus.Entry) *gate {
	l := cfg.Limits
	return &gate{
		allow:       allow,
		dropUnknown: cfg.DropUnknown,
		retryAfter:  strconv.Itoa(int(l.RetryAfter / time.Second)),
		allowHdr:    allowHdr,
		log:         log,
		logLimit:    rate.NewLimiter(1, 5),
		peers:       newBucketTable[netip.Addr](l.PeerRate, l.PeerBurst, 4096),
		strangers:   newBucketTable[netip.Addr](l.StrangerRate, l.StrangerBurst, 4096),
		lines:       newBucketTable[string](l.LineInviteRate, l.LineInviteBurst, 65536),
		invites:     recentSet{max: 65536, ttl: 64 * sip.T1},
	}
}

// debugf logs a dropped message at debug level, at most once a second
// (with a burst of 5): a remote party must not be able to fill the log.
func (g *gate) debugf(src fmt.Stringer, format string, args ...any) {
	if g.log.Logger.IsLevelEnabled(logrus.DebugLevel) && g.logLimit.Allow() {
		g.log.WithField("source", src.String()).Debugf(format, args...)
	}
}

// unmatchedResponse is sipgo's hook for responses that match no client
// transaction (late retransmissions, or junk from a peer).
func (g *gate) unmatchedResponse(res *sip.Response) {
	g.debugf(stringer(res.Source()), "response %d matches no transaction", res.StatusCode)
}

type stringer string

func (s stringer) String() string { return string(s) }

// inspect decides about one message from src: pass it to sipgo, or not,
// and the stateless answer to send, if any (req is the parsed request it
// answers).
func (g *gate) inspect(data []byte, src netip.AddrPort) (pass bool, res *sip.Response, req *sip.Request) {
	if len(bytes.Trim(data, "\r\n\x00")) == 0 {
		return true, nil, nil // keep-alive: sipgo answers it
	}
	known := g.allow == nil || g.allow(src)
	line, _, _ := bytes.Cut(data, []byte("\n"))
	method, rest, _ := bytes.Cut(bytes.TrimRight(line, "\r"), []byte(" "))
	if bytes.HasPrefix(method, []byte("SIP/")) {
		// A response: sipgo matches it to a client transaction.
		if !known {
			g.stats.refused.Add(1)
			g.stats.dropped.Add(1)
			g.stats.strangerDropped.Add(1)
			return false, nil, nil
		}
		if g.stray != nil && g.stray(data) {
			return false, nil, nil
		}
		return true, nil, nil
	}
	ack := strings.EqualFold(string(method), "ACK")
	if !known {
		g.stats.refused.Add(1)
		switch {
		case ack || g.dropUnknown, !g.strangers.allow(src.Addr().Unmap()):
			// An ACK is never answered; drop_unknown answers nothing;
			// past stranger_rate the 403s stop.
			g.stats.dropped.Add(1)
			g.stats.strangerDropped.Add(1)
			return false, nil, nil
		}
		req := g.parse(data, src)
		if req == nil || req.IsAck() {
			g.stats.dropped.Add(1)
			g.stats.strangerDropped.Add(1)
			return false, nil, nil
		}
		g.stats.forbidden.Add(1)
		return false, sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil), req
	}
	req = g.parse(data, src)
	if ack {
		if req == nil || !wellFormedAck(req, method, rest) {
			g.stats.badAcks.Add(1)
			g.stats.dropped.Add(1)
			g.debugf(src, "malformed ACK dropped")
			return false, nil, nil
		}
		return true, nil, nil // never limited
	}
	if req == nil {
		// sipgo could not parse it either; it would log the datagram.
		g.stats.dropped.Add(1)
		g.debugf(src, "unparsable message dropped")
		return false, nil, nil
	}
	if res := g.limit(req, src); res != nil {
		return false, res, req
	}
	if res := checkFraming(req, method); res != nil {
		g.stats.rejected.Add(1)
		if res.StatusCode == sip.StatusNotImplemented {
			res.AppendHeader(sip.NewHeader("Allow", g.allowHdr()))
		}
		return false, res, req
	}
	return true, nil, nil
}

func (g *gate) parse(data []byte, src netip.AddrPort) *sip.Request {
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return nil
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return nil
	}
	req.SetSource(src.String())
	return req
}

// wellFormedAck: an ACK sipgo can match without answering anything
// (method spelled ACK, SIP/2.0, CSeq method ACK, a transaction key).
func wellFormedAck(req *sip.Request, method, rest []byte) bool {
	if string(method) != "ACK" || req.SipVersion != "SIP/2.0" {
		return false
	}
	if cseq := req.CSeq(); cseq == nil || cseq.MethodName != sip.ACK {
		return false
	}
	_, err := sip.ServerTxKeyMake(req)
	return err == nil
}

// checkFraming returns the stateless answer for a request that must not
// reach a transaction, or nil.
func checkFraming(req *sip.Request, method []byte) *sip.Response {
	if string(method) != strings.ToUpper(string(method)) {
		// Methods are case-sensitive (RFC 3261 §7.1): "invite" is a method
		// we do not know (§8.2.1, §21.5.2).
		return sip.NewResponseFromRequest(req, sip.StatusNotImplemented, "Not Implemented", nil)
	}
	if req.SipVersion != "SIP/2.0" {
		res := sip.NewResponseFromRequest(req, sip.StatusVersionNotSupported, "Version Not Supported", nil)
		res.SipVersion = "SIP/2.0"
		return res
	}
	cseq := req.CSeq()
	if cseq != nil && cseq.MethodName != req.Method {
		return sip.NewResponseFromRequest(req, sip.StatusBadRequest, "CSeq Method Mismatch", nil)
	}
	if _, err := sip.ServerTxKeyMake(req); err != nil {
		// sipgo would send the same 400; answering here keeps it from
		// building anything first.
		return sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Request", nil)
	}
	return nil
}

// limit applies the configured peers' limits; it returns the 503, or nil.
func (g *gate) limit(req *sip.Request, src netip.AddrPort) *sip.Response {
	var branch string
	if req.Method == sip.INVITE {
		if to := req.To(); to != nil && !to.Params.Has("tag") {
			if via := req.Via(); via != nil {
				branch, _ = via.Params.Get("branch")
				branch += "|" + via.Host + "|" + strconv.Itoa(via.Port)
			}
			now := time.Now()
			if g.invites.has(branch, now) {
				return nil // a retransmission of an INVITE let in
			}
			if !g.lines.allow(strings.ToLower(req.Recipient.User)) {
				return g.busy(req, src, "line")
			}
			if !g.peers.allow(src.Addr().Unmap()) {
				return g.busy(req, src, "peer")
			}
			g.invites.add(branch, now)
			return nil
		}
	}
	if !g.peers.allow(src.Addr().Unmap()) {
		return g.busy(req, src, "peer")
	}
	return nil
}

func (g *gate) busy(req *sip.Request, src netip.AddrPort, which string) *sip.Response {
	g.stats.limited.Add(1)
	g.debugf(src, "%s rate limit: %s answered 503", which, req.Method)
	res := sip.NewResponseFromRequest(req, sip.StatusServiceUnavailable, "Service Unavailable", nil)
	res.AppendHeader(sip.NewHeader("Retry-After", g.retryAfter))
	return res
}

// bucketTable holds one token bucket per key, at most max of them; when it
// is full (swept of idle buckets at most once a second), new keys share
// one bucket. A nil table allows everything (the limit is off).
type bucketTable[K comparable] struct {
	mu        sync.Mutex
	limit     rate.Limit
	burst     int
	max       int
	m         map[K]*rate.Limiter
	overflow  *rate.Limiter
	lastSweep time.Time
}

func newBucketTable[K comparable](r float64, burst, max int) *bucketTable[K] {
	if r < 0 {
		return nil
	}
	return &bucketTable[K]{limit: rate.Limit(r), burst: burst, max: max, m: map[K]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Limit(r), burst)}
}

func (t *bucketTable[K]) allow(k K) bool {
	if t == nil {
		return true
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.m[k]
	if l == nil {
		if len(t.m) >= t.max && now.Sub(t.lastSweep) >= time.Second {
			t.lastSweep = now
			for key, b := range t.m {
				if b.TokensAt(now) >= float64(t.burst) {
					delete(t.m, key)
				}
			}
		}
		if len(t.m) >= t.max {
			return t.overflow.AllowN(now, 1)
		}
		l = rate.NewLimiter(t.limit, t.burst)
		t.m[k] = l
	}
	return l.AllowN(now, 1)
}

// recentSet remembers keys for ttl (at most max of them; when full and
// nothing has expired it starts again empty).
type recentSet struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	m   map[string]time.Time
}

func (r *recentSet) has(k string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.m[k]
	return ok && now.Before(t)
}

func (r *recentSet) add(k string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]time.Time{}
	}
	if len(r.m) >= r.max {
		for key, t := range r.m {
			if !now.Before(t) {
				delete(r.m, key)
			}
		}
		if len(r.m) >= r.max {
			clear(r.m)
		}
	}
	r.m[k] = now.Add(r.ttl)
}

// replyAddr is where a stateless answer to req goes over UDP, as sipgo
// sends its own: the source address with the Via port, or the source
// port with rport (RFC 3261 §18.2.2, RFC 3581 §4).
func replyAddr(req *sip.Request, src netip.AddrPort) netip.AddrPort {
	via := req.Via()
	if via == nil {
		return src
	}
	if v, ok := via.Params.Get("rport"); ok && v == "" {
		return src
	}
	port := via.Port
	if port <= 0 || port > 65535 {
		port = 5060
	}
	return netip.AddrPortFrom(src.Addr(), uint16(port))
}

// packetGate is a UDP listener socket seen through the gate.
type packetGate struct {
	net.PacketConn
	g *gate
}

func (c *packetGate) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		src := addrPortOf(addr)
		pass, res, req := c.g.inspect(p[:n], src)
		if res != nil {
			to := replyAddr(req, src)
			_, _ = c.PacketConn.WriteTo([]byte(res.String()), net.UDPAddrFromAddrPort(to))
		}
		if pass {
			return n, addr, nil
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
