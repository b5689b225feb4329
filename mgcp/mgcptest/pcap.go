package mgcptest

import (
	"io"
	"net/netip"
	"time"

	"github.com/mgsip/mgsip/internal/trace"
)

// Packet is one UDP datagram for WritePcap.
type Packet struct {
	At       time.Time
	From, To netip.AddrPort
	Payload  []byte
}

// WritePcap writes UDP datagrams as a pcap file, so Wireshark and tshark
// can dissect what a test sent. It is the daemon's pcap writer
// (internal/trace): one format, link type RAW, valid checksums, IPv4 and
// IPv6.
func WritePcap(w io.Writer, pkts []Packet) error {
	s, err := trace.NewPcapStream(w)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		if err := s.WriteDatagram(p.At, p.From, p.To, p.Payload); err != nil {
			return err
		}
	}
	return nil
}
