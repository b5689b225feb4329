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
// The generic chunk types written here, from the HEP3 specification's
// table (and as heplify and Homer read them):
//
//	0x0001 IP family (2 = IPv4, 10 = IPv6)   0x0002 IP protocol (17 UDP, 6 TCP)
//	0x0003/4 IPv4 source/destination         0x0005/6 IPv6 source/destination
//	0x0007/8 source/destination port         0x0009/a timestamp s / µs
//	0x000b protocol type (below)             0x000c capture agent (node) id
//	0x000e authentication key (password)     0x000f payload
//	0x0011 correlation id                    0x0013 node name
//
// Protocol types (chunk 0x000b): 1 SIP, 6 MGCP. (8 is M2UA: a collector
// files MGCP sent as 8 under SS7.)

// HEP protocol types.
const (
	HEPSIP  = 0x01
	HEPMGCP = 0x06
)

// HEP chunk types.
const (
	chunkIPFamily    = 0x0001
	chunkIPProto     = 0x0002
	chunkIPv4Src     = 0x0003
	chunkIPv4Dst     = 0x0004
	chunkIPv6Src     = 0x0005
	chunkIPv6Dst     = 0x0006
	chunkSrcPort     = 0x0007
	chunkDstPort     = 0x0008
	chunkTimeSec     = 0x0009
	chunkTimeUsec    = 0x000a
	chunkProtoType   = 0x000b
	chunkNodeID      = 0x000c
	chunkAuthKey     = 0x000e
	chunkPayload     = 0x000f
	chunkCorrelation = 0x0011
	chunkNodeName    = 0x0013
)

type hepPacket struct {
	Src, Dst    netip.AddrPort
	Time        time.Time
	Proto       uint8
	IPProto     uint8 // 17 (UDP) when zero
	NodeID      uint32
	Password    string // chunk 0x000e, left out when empty
	NodeName    string // chunk 0x0013, left out when empty
	Correlation string // chunk 0x0011, left out when empty
	Payload     []byte
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
	if len(p.Payload)+len(p.Password)+len(p.NodeName)+len(p.Correlation) > 65535-6-200 {
		return b, errHEPTooBig
	}
	ipProto := p.IPProto
	if ipProto == 0 {
		ipProto = 17
	}
	start := len(b)
	b = append(b, 'H', 'E', 'P', '3', 0, 0)
	src, dst := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	if src.Is4() && dst.Is4() {
		b = appendU8(b, chunkIPFamily, 2)
		b = appendU8(b, chunkIPProto, ipProto)
		s4, d4 := src.As4(), dst.As4()
		b = appendChunk(b, chunkIPv4Src, s4[:])
		b = appendChunk(b, chunkIPv4Dst, d4[:])
	} else {
		b = appendU8(b, chunkIPFamily, 10)
		b = appendU8(b, chunkIPProto, ipProto)
		s16, d16 := src.As16(), dst.As16()
		b = appendChunk(b, chunkIPv6Src, s16[:])
		b = appendChunk(b, chunkIPv6Dst, d16[:])
	}
	b = appendU16(b, chunkSrcPort, p.Src.Port())
	b = appendU16(b, chunkDstPort, p.Dst.Port())
	b = appendU32(b, chunkTimeSec, uint32(p.Time.Unix()))
	b = appendU32(b, chunkTimeUsec, uint32(p.Time.Nanosecond()/1000))
	b = appendU8(b, chunkProtoType, p.Proto)
	b = appendU32(b, chunkNodeID, p.NodeID)
	if p.Password != "" {
		b = appendChunk(b, chunkAuthKey, []byte(p.Password))
	}
	if p.Correlation != "" {
		b = appendChunk(b, chunkCorrelation, []byte(p.Correlation))
	}
	if p.NodeName != "" {
		b = appendChunk(b, chunkNodeName, []byte(p.NodeName))
	}
	b = appendChunk(b, chunkPayload, p.Payload)
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
		case 2:
			if len(v) != 1 {
				return p, errors.New("hep: bad IP protocol chunk")
			}
			p.IPProto = v[0]
		case 14:
			p.Password = string(v)
		case 17:
			p.Correlation = string(v)
		case 19:
			p.NodeName = string(v)
		case 15:
			p.Payload = append([]byte(nil), v...)
		}
	}
	p.Src, p.Dst = netip.AddrPortFrom(srcIP, sport), netip.AddrPortFrom(dstIP, dport)
	p.Time = time.Unix(int64(sec), int64(usec)*1000)
	return p, nil
}

// HEPOptions configure a HEP sender.
type HEPOptions struct {
	// Collector is the collector's host:port (HEPv3 over UDP).
	Collector string
	// NodeID (chunk 0x000c), NodeName (0x0013) and Password (0x000e,
	// the collector's capture password) identify this mgsip.
	NodeID   uint32
	NodeName string
	Password string
}

// HEPSender sends HEP packets to a collector over UDP, never blocking the
// caller (a datagram that cannot be sent is dropped and counted).
type HEPSender struct {
	conn *net.UDPConn
	o    HEPOptions
}

// NewHEPSender opens a UDP socket to the collector.
func NewHEPSender(o HEPOptions) (*HEPSender, error) {
	addr, err := net.ResolveUDPAddr("udp", o.Collector)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, err
	}
	return &HEPSender{conn: c, o: o}, nil
}

// Send sends one captured message; correlation, if not empty, is the
// SIP Call-ID the message belongs to (chunk 0x0011).
func (h *HEPSender) Send(proto uint8, src, dst netip.AddrPort, at time.Time, payload []byte, correlation string) error {
	b, err := encodeHEP(make([]byte, 0, 96+len(payload)+len(correlation)), hepPacket{Src: src, Dst: dst, Time: at, Proto: proto,
		NodeID: h.o.NodeID, NodeName: h.o.NodeName, Password: h.o.Password, Correlation: correlation, Payload: payload})
	if err != nil {
		return err
	}
	_, err = h.conn.Write(b)
	return err
}

// Close closes the socket.
func (h *HEPSender) Close() error { return h.conn.Close() }
