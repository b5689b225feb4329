// Package trace is mgsip's tap on the wire: it sees every MGCP and SIP
// datagram mgsip sends or receives (it wraps the UDP sockets) and feeds
// the wire trace in the log, the message counters, the pcap file and the
// HEP collector.
package trace

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

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
	hepErrors atomic.Uint64
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
// command/request, the code of a response.
func kind(proto string, b []byte) string {
	line := b
	if i := strings.IndexByte(string(b[:min(len(b), 128)]), '\n'); i >= 0 {
		line = b[:i]
	}
	f := strings.Fields(string(line[:min(len(line), 64)]))
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
		t.Log.WithFields(logrus.Fields{"protocol": proto, "direction": dir, "peer": remote.String()}).Info("\n" + string(b))
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
