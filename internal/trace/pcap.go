package trace

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// The pcap output: every datagram as an IPv4 or IPv6 UDP packet with
// valid checksums, link type RAW (101: packets start with the IP header,
// of either version). gopacket's pcapgo writes the file format and its
// layers build the headers (the UDP checksum over the pseudo-header of
// RFC 768 and RFC 8200 §8.1, mandatory over IPv6). This is mgsip's one
// pcap writer: mgcptest.WritePcap uses it too.

// pcapSnaplen is the snapshot length in the file header: a whole UDP
// datagram always fits.
const pcapSnaplen = 65535

// maxPcapPayload: a payload that does not fit one IPv6 packet with its
// headers is left out of the capture.
const maxPcapPayload = 65535 - 40 - 8

// encodePacket builds the IP and UDP headers and the payload of one
// datagram. Mixed families are written as IPv6 (IPv4-mapped).
func encodePacket(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	if len(payload) > maxPcapPayload {
		return nil, errors.New("pcap: payload too large")
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	var ip gopacket.SerializableLayer
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() && d.Is4() {
		s4, d4 := s.As4(), d.As4()
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP(s4[:]), DstIP: net.IP(d4[:])}
		if err := udp.SetNetworkLayerForChecksum(v4); err != nil {
			return nil, err
		}
		ip = v4
	} else {
		s16, d16 := s.As16(), d.As16()
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.IP(s16[:]), DstIP: net.IP(d16[:])}
		if err := udp.SetNetworkLayerForChecksum(v6); err != nil {
			return nil, err
		}
		ip = v6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// PcapStream writes datagrams to one io.Writer as a pcap file.
type PcapStream struct {
	w *pcapgo.Writer
	n int64 // bytes written, header included
}

// pcapHeaderSize is the size of the pcap file header.
const pcapHeaderSize = 24

// NewPcapStream writes the file header to w.
func NewPcapStream(w io.Writer) (*PcapStream, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(pcapSnaplen, layers.LinkTypeRaw); err != nil {
		return nil, err
	}
	return &PcapStream{w: pw, n: pcapHeaderSize}, nil
}

// WriteDatagram writes one UDP datagram captured at at.
func (s *PcapStream) WriteDatagram(at time.Time, src, dst netip.AddrPort, payload []byte) error {
	pkt, err := encodePacket(src, dst, payload)
	if err != nil {
		return err
	}
	ci := gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(pkt), Length: len(pkt)}
	if err := s.w.WritePacket(ci, pkt); err != nil {
		return err
	}
	s.n += 16 + int64(len(pkt))
	return nil
}

// PcapWriter writes datagrams to a pcap file that rotates: past maxBytes
// a new file starts, and the newest keep files are kept: path (being
// written), path.1 (the one before), ... path.(keep-1).
//
// An existing capture is never truncated. At start, a file left at path
// by the previous run (a crash under Restart=on-failure: the capture that
// shows why) is rotated to path.1 like any full file, and the new file is
// created exclusively. Appending to it instead would mix two runs and
// risk a record the crashed writer left half written.
type PcapWriter struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	s        *PcapStream
	err      error
}

// NewPcapWriter opens path, rotating a capture already there. keep is at
// least 2 (the file being written and the one before it).
func NewPcapWriter(path string, maxBytes int64, keep int) (*PcapWriter, error) {
	w := &PcapWriter{path: path, maxBytes: maxBytes, keep: max(keep, 2)}
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", path)
		}
		if err := w.shift(); err != nil {
			return nil, err
		}
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *PcapWriter) numbered(i int) string {
	if i == 0 {
		return w.path
	}
	return fmt.Sprintf("%s.%d", w.path, i)
}

// shift renames path.(keep-2) to path.(keep-1), ..., path to path.1; the
// oldest kept file is replaced by the one before it.
func (w *PcapWriter) shift() error {
	for i := w.keep - 2; i >= 0; i-- {
		err := os.Rename(w.numbered(i), w.numbered(i+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (w *PcapWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	s, err := NewPcapStream(f)
	if err != nil {
		_ = f.Close()
		return err
	}
	w.f, w.s = f, s
	return nil
}

func (w *PcapWriter) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.f = nil
	if err := w.shift(); err != nil {
		return err
	}
	return w.open()
}

// Write captures one datagram. Errors stop the capture (never the
// caller); Close reports the first.
func (w *PcapWriter) Write(at time.Time, src, dst netip.AddrPort, payload []byte) {
	if len(payload) > maxPcapPayload {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return
	}
	if w.s.n+16+48+int64(len(payload)) > w.maxBytes && w.s.n > pcapHeaderSize {
		if err := w.rotate(); err != nil {
			w.err, w.f = err, nil
			return
		}
	}
	if err := w.s.WriteDatagram(at, src, dst, payload); err != nil && w.err == nil {
		w.err = err
	}
}

// Close closes the file.
func (w *PcapWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	if w.err != nil {
		return w.err
	}
	return err
}
