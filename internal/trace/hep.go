package trace

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"
)

// HEPv3 (the Homer Encapsulation Protocol, version 3): a header "HEP3"
// and a total length, then chunks of vendor id (0 = generic), type id,
// length (including the 6-byte chunk header) and value, all big endian.
// The generic chunk types used here are the ones Homer and Wireshark's
// HEP dissector read:
//
//	1 IP family (2 = IPv4, 10 = IPv6)   2 IP protocol (17 = UDP)
//	3/4 IPv4 source/destination         5/6 IPv6 source/destination
//	7/8 source/destination port         9/10 timestamp seconds/microseconds
//	11 protocol type (1 = SIP, 8 = MGCP) 12 capture node id
//	15 payload

// HEP protocol types.
const (
	HEPSIP  = 1
	HEPMGCP = 8
)

type hepPacket struct {
	Src, Dst netip.AddrPort
	Time     time.Time
	Proto    uint8
	NodeID   uint32
	Payload  []byte
}

func appendChunk(b []byte, typ uint16, val []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(6+len(val)))
	return append(b, val...)
}

func appendU8(b []byte, typ uint16, v uint8) []byte { return appendChunk(b, typ, []byte{v}) }

func appendU16(b []byte, typ uint16, v uint16) []byte {
	return appendChunk(b, typ, binary.BigEndian.AppendUint16(nil, v))
}

func appendU32(b []byte, typ uint16, v uint32) []byte {
	return appendChunk(b, typ, binary.BigEndian.AppendUint32(nil, v))
}

// errHEPTooBig: the payload does not fit a HEP chunk.
var errHEPTooBig = errors.New("hep: payload too large")

// encodeHEP appends the HEPv3 encoding of p to b.
func encodeHEP(b []byte, p hepPacket) ([]byte, error) {
	if len(p.Payload) > 65535-6-200 {
		return b, errHEPTooBig
	}
	start := len(b)
	b = append(b, 'H', 'E', 'P', '3', 0, 0)
	src, dst := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	if src.Is4() && dst.Is4() {
		b = appendU8(b, 1, 2)
		b = appendU8(b, 2, 17)
		s4, d4 := src.As4(), dst.As4()
		b = appendChunk(b, 3, s4[:])
		b = appendChunk(b, 4, d4[:])
	} else {
		b = appendU8(b, 1, 10)
		b = appendU8(b, 2, 17)
		s16, d16 := src.As16(), dst.As16()
		b = appendChunk(b, 5, s16[:])
		b = appendChunk(b, 6, d16[:])
	}
	b = appendU16(b, 7, p.Src.Port())
	b = appendU16(b, 8, p.Dst.Port())
	b = appendU32(b, 9, uint32(p.Time.Unix()))
	b = appendU32(b, 10, uint32(p.Time.Nanosecond()/1000))
	b = appendU8(b, 11, p.Proto)
	b = appendU32(b, 12, p.NodeID)
	b = appendChunk(b, 15, p.Payload)
	binary.BigEndian.PutUint16(b[start+4:], uint16(len(b)-start))
	return b, nil
}

// decodeHEP reads a HEPv3 packet (the inverse of encodeHEP, for tests and
// for checking what we send); unknown chunks are skipped.
func decodeHEP(b []byte) (hepPacket, error) {
	var p hepPacket
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		return p, errors.New("hep: not a HEPv3 packet")
	}
	total := int(binary.BigEndian.Uint16(b[4:]))
	if total < 6 || total > len(b) {
		return p, errors.New("hep: bad total length")
	}
	b = b[6:total]
	var srcIP, dstIP netip.Addr
	var sport, dport uint16
	var sec, usec uint32
	for len(b) > 0 {
		if len(b) < 6 {
			return p, errors.New("hep: truncated chunk header")
		}
		vendor := binary.BigEndian.Uint16(b)
		typ := binary.BigEndian.Uint16(b[2:])
		n := int(binary.BigEndian.Uint16(b[4:]))
		if n < 6 || n > len(b) {
			return p, errors.New("hep: bad chunk length")
		}
		v := b[6:n]
		b = b[n:]
		if vendor != 0 {
			continue // a vendor's own chunk
		}
		switch typ {
		case 3, 4:
			if len(v) != 4 {
				return p, errors.New("hep: bad IPv4 chunk")
			}
			a := netip.AddrFrom4([4]byte(v))
			if typ == 3 {
				srcIP = a
			} else {
				dstIP = a
			}
		case 5, 6:
			if len(v) != 16 {
				return p, errors.New("hep: bad IPv6 chunk")
			}
			a := netip.AddrFrom16([16]byte(v))
			if typ == 5 {
				srcIP = a
			} else {
				dstIP = a
			}
		case 7, 8:
			if len(v) != 2 {
				return p, errors.New("hep: bad port chunk")
			}
			if typ == 7 {
				sport = binary.BigEndian.Uint16(v)
			} else {
				dport = binary.BigEndian.Uint16(v)
			}
		case 9, 10, 12:
			if len(v) != 4 {
				return p, errors.New("hep: bad 32-bit chunk")
			}
			switch typ {
			case 9:
				sec = binary.BigEndian.Uint32(v)
			case 10:
				usec = binary.BigEndian.Uint32(v)
			default:
				p.NodeID = binary.BigEndian.Uint32(v)
			}
		case 11:
			if len(v) != 1 {
				return p, errors.New("hep: bad protocol chunk")
			}
			p.Proto = v[0]
		case 15:
			p.Payload = append([]byte(nil), v...)
		}
	}
	p.Src, p.Dst = netip.AddrPortFrom(srcIP, sport), netip.AddrPortFrom(dstIP, dport)
	p.Time = time.Unix(int64(sec), int64(usec)*1000)
	return p, nil
}

// HEPSender sends HEP packets to a collector over UDP, never blocking the
// caller (a datagram that cannot be sent is dropped and counted).
type HEPSender struct {
	conn   *net.UDPConn
	nodeID uint32
}

func NewHEPSender(collector string, nodeID uint32) (*HEPSender, error) {
	addr, err := net.ResolveUDPAddr("udp", collector)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, err
	}
	return &HEPSender{conn: c, nodeID: nodeID}, nil
}

func (h *HEPSender) Send(proto uint8, src, dst netip.AddrPort, at time.Time, payload []byte) error {
	b, err := encodeHEP(make([]byte, 0, 64+len(payload)), hepPacket{Src: src, Dst: dst, Time: at, Proto: proto, NodeID: h.nodeID, Payload: payload})
	if err != nil {
		return err
	}
	_, err = h.conn.Write(b)
	return err
}

func (h *HEPSender) Close() error { return h.conn.Close() }
