package mgcptest

import (
	"encoding/binary"
	"io"
	"net/netip"
	"time"
)

// Packet is one UDP datagram for WritePcap.
type Packet struct {
	At       time.Time
	From, To netip.AddrPort // IPv4 addresses
	Payload  []byte
}

// WritePcap writes UDP/IPv4 datagrams as a classic pcap file (link type
// raw IPv4), so Wireshark and tshark can dissect what a test sent.
func WritePcap(w io.Writer, pkts []Packet) error {
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 228) // LINKTYPE_IPV4
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, p := range pkts {
		ip := make([]byte, 28+len(p.Payload))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		ip[8] = 64
		ip[9] = 17 // UDP
		src, dst := p.From.Addr().As4(), p.To.Addr().As4()
		copy(ip[12:], src[:])
		copy(ip[16:], dst[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
		binary.BigEndian.PutUint16(ip[20:], p.From.Port())
		binary.BigEndian.PutUint16(ip[22:], p.To.Port())
		binary.BigEndian.PutUint16(ip[24:], uint16(8+len(p.Payload)))
		copy(ip[28:], p.Payload)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(p.At.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(p.At.Nanosecond()/1000))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(ip)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(ip)))
		if _, err := w.Write(rec); err != nil {
			return err
		}
		if _, err := w.Write(ip); err != nil {
			return err
		}
	}
	return nil
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
