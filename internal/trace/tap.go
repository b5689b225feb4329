// Package trace is mgsip's tap on the wire: it sees every MGCP and SIP
// datagram mgsip sends or receives (it wraps the UDP sockets) and feeds
// the wire trace in the log, the message counters, the pcap file and the
// HEP collector.
package trace

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
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
		p := uint8(HEPSIP)
		if proto == "mgcp" {
			p = HEPMGCP
		}
		if err := t.HEP.Send(p, src, dst, now, b); err != nil {
			t.hepErrors.Add(1)
		}
	}
}

// PcapWriter writes datagrams as IPv4/IPv6 UDP packets in a pcap file
// (LINKTYPE_RAW), starting a new file when one reaches maxBytes and
// keeping the newest keep files: path, path.1, ... path.(keep-1).
type PcapWriter struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
	err      error
}

func NewPcapWriter(path string, maxBytes int64, keep int) (*PcapWriter, error) {
	w := &PcapWriter{path: path, maxBytes: maxBytes, keep: max(keep, 1)}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *PcapWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	// Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen,
	// LINKTYPE_RAW (101): packets start with the IP header.
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 101)
	if _, err := f.Write(hdr); err != nil {
		_ = f.Close()
		return err
	}
	w.f, w.size = f, int64(len(hdr))
	return nil
}

func (w *PcapWriter) rotate() error {
	_ = w.f.Close()
	for i := w.keep - 1; i >= 1; i-- {
		from := w.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", w.path, i-1)
		}
		_ = os.Rename(from, fmt.Sprintf("%s.%d", w.path, i))
	}
	if w.keep == 1 {
		_ = os.Remove(w.path)
	}
	return w.open()
}

// ipUDP builds the IP and UDP headers and payload of one datagram.
func ipUDP(src, dst netip.AddrPort, payload []byte) []byte {
	udpLen := 8 + len(payload)
	var b []byte
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() && d.Is4() {
		b = make([]byte, 20, 20+udpLen)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(20+udpLen))
		b[8], b[9] = 64, 17
		s4, d4 := s.As4(), d.As4()
		copy(b[12:], s4[:])
		copy(b[16:], d4[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	} else {
		b = make([]byte, 40, 40+udpLen)
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(udpLen))
		b[6], b[7] = 17, 64
		s16, d16 := s.As16(), d.As16()
		copy(b[8:], s16[:])
		copy(b[24:], d16[:])
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
	b = append(b, 0, 0) // no UDP checksum (allowed for IPv4; Wireshark does not insist)
	return append(b, payload...)
}

func (w *PcapWriter) Write(at time.Time, src, dst netip.AddrPort, payload []byte) {
	if len(payload) > 65000 {
		return
	}
	pkt := ipUDP(src, dst, payload)
	rec := make([]byte, 16, 16+len(pkt))
	binary.LittleEndian.PutUint32(rec[0:], uint32(at.Unix()))
	binary.LittleEndian.PutUint32(rec[4:], uint32(at.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(pkt)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(pkt)))
	rec = append(rec, pkt...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return
	}
	if w.size+int64(len(rec)) > w.maxBytes && w.size > 24 {
		if w.err = w.rotate(); w.err != nil {
			w.f = nil
			return
		}
	}
	n, err := w.f.Write(rec)
	w.size += int64(n)
	if err != nil {
		w.err = err
	}
}

func (w *PcapWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	return err
}
