// Package trace is mgsip's tap on the wire: it sees every MGCP and SIP
// datagram mgsip sends or receives (it wraps the UDP sockets) and feeds
// the wire trace in the log, the message counters, the pcap file and the
// HEP collector.
package trace

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// Tapper observes the datagrams of the sockets it wraps.
type Tapper struct {
	Log       *logrus.Entry
	TraceMGCP atomic.Bool
	TraceSIP  atomic.Bool
	// OnMessage, if set, counts each message by protocol, direction
	// (in, out) and kind (verb, method or response code).
	OnMessage func(proto, dir, kind string)
	Pcap      *PcapWriter
	HEP       *HEPSender
	// Correlate, if set, gives MGCP messages sent to HEP the SIP Call-ID
	// of their call.
	Correlate *MGCPCorrelator
	// Filter, when set, narrows the wire trace to some lines (Filter).
	Filter    atomic.Pointer[Filter]
	hepErrors atomic.Uint64
}

// Stream is the tap for proto's stream messages (sip.WithStreamTap): each
// message is traced, counted and captured like a datagram (in the pcap, as
// a UDP packet between the same addresses: the capture keeps messages, not
// TCP segments).
func (t *Tapper) Stream(proto string) func(out bool, local, remote net.Addr, msg []byte) {
	return func(out bool, local, remote net.Addr, msg []byte) { t.observe(proto, out, local, remote, msg) }
}

// Conn passes every datagram read or written to Observe (out: we sent
// it) before it goes on.
type Conn struct {
	net.PacketConn
	Observe func(out bool, local, remote net.Addr, b []byte)
}

// Wrap returns a wrapper for proto's ("mgcp" or "sip") sockets.
func (t *Tapper) Wrap(proto string) func(net.PacketConn) net.PacketConn {
	return func(c net.PacketConn) net.PacketConn {
		return &Conn{PacketConn: c, Observe: func(out bool, local, remote net.Addr, b []byte) {
			t.observe(proto, out, local, remote, b)
		}}
	}
}

func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if n > 0 && addr != nil {
		c.Observe(false, c.LocalAddr(), addr, b[:n])
	}
	return n, addr, err
}

func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.Observe(true, c.LocalAddr(), addr, b)
	return c.PacketConn.WriteTo(b, addr)
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// kind names a message by its first line: the verb or method of a
// command/request, the code of a response. It runs for every datagram, so
// the usual names come from a table without allocating; anything else
// (and any first line with non-ASCII bytes) takes kindSlow.
func kind(proto string, b []byte) string {
	line := b[:min(len(b), 128)]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = line[:min(len(line), 64)]
	for _, c := range line {
		if c >= utf8.RuneSelf {
			return kindSlow(proto, line)
		}
	}
	f0, rest := field(line)
	f1, _ := field(rest)
	if len(f1) == 0 {
		return "malformed"
	}
	tok := f0
	if proto == "sip" && string(f0) == "SIP/2.0" {
		tok = f1 // the status code, as sent
	} else if proto == "mgcp" && len(f0) == 3 && f0[0] >= '0' && f0[0] <= '9' {
		tok = f0 // a response code
	}
	if k, ok := knownKinds[string(tok)]; ok {
		return k
	}
	return kindSlow(proto, line)
}

// field returns the first run of ASCII non-space bytes of b and what
// follows it (the white space of strings.Fields, for ASCII).
func field(b []byte) (tok, rest []byte) {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n' }
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

// knownKinds are the names kind returns without allocating: the SIP
// methods and MGCP verbs (upper case, as sent by nearly everyone) and the
// usual status and return codes.
var knownKinds = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "NOTIFY", "SUBSCRIBE", "REFER",
		"PRACK", "UPDATE", "MESSAGE", "PUBLISH",
		"CRCX", "MDCX", "DLCX", "RQNT", "NTFY", "AUEP", "AUCX", "RSIP", "EPCF",
		"100", "180", "181", "182", "183", "200", "202", "250", "400", "401", "403", "404", "407", "408",
		"480", "481", "482", "486", "487", "488", "491", "500", "501", "502", "503", "504", "510", "600", "603",
		"000", "201", "501", "502", "510", "515", "524", "540",
	} {
		m[k] = k
	}
	return m
}()

// kindSlow is kind for any first line.
func kindSlow(proto string, line []byte) string {
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return "malformed"
	}
	if proto == "sip" {
		if f[0] == "SIP/2.0" {
			return f[1]
		}
		return strings.ToUpper(f[0])
	}
	if len(f[0]) == 3 && f[0][0] >= '0' && f[0][0] <= '9' {
		return f[0]
	}
	return strings.ToUpper(f[0])
}

func (t *Tapper) observe(proto string, out bool, local, remote net.Addr, b []byte) {
	dir := "in"
	if out {
		dir = "out"
	}
	if t.OnMessage != nil {
		t.OnMessage(proto, dir, kind(proto, b))
	}
	if (proto == "mgcp" && t.TraceMGCP.Load()) || (proto == "sip" && t.TraceSIP.Load()) {
		f := t.Filter.Load()
		if f == nil || proto == "mgcp" && f.matchMGCP(remote.String(), b) || proto == "sip" && f.matchSIP(b) {
			t.Log.WithFields(logrus.Fields{"protocol": proto, "direction": dir, "peer": remote.String(), "message": string(b)}).
				Info("wire")
		}
	}
	if t.Pcap == nil && t.HEP == nil {
		return
	}
	src, dst := addrPort(remote), addrPort(local)
	if out {
		src, dst = dst, src
	}
	now := time.Now()
	if t.Pcap != nil {
		t.Pcap.Write(now, src, dst, b)
	}
	if t.HEP != nil {
		p, corr := uint8(HEPSIP), ""
		if proto == "mgcp" {
			p = HEPMGCP
			corr = t.Correlate.Correlate(addrPort(remote), out, b, now)
		}
		if err := t.HEP.Send(p, src, dst, now, b, corr); err != nil {
			t.hepErrors.Add(1)
		}
	}
}
