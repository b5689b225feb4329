package mgcptest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/pion/sdp/v3"
)

// Real media for a fake gateway (GatewayConfig.RTP): each connection
// binds a UDP socket, sends 20 ms RTP packets (PCMU silence, RFC 3551) to
// the address of its remote SDP while its mode sends, and counts what it
// sends and receives, so a test or demo proves the media path.

// RTPStats counts a connection's RTP packets.
type RTPStats struct {
	sent, received atomic.Uint64
}

// Sent is the number of RTP packets sent.
func (s *RTPStats) Sent() uint64 { return s.sent.Load() }

// Received is the number of valid RTP packets received.
func (s *RTPStats) Received() uint64 { return s.received.Load() }

type rtpStream struct {
	stats RTPStats
	conn  net.PacketConn
	done  chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	remote netip.AddrPort
	send   bool
}

func newRTPStream(ip netip.Addr) (*rtpStream, error) {
	conn, err := net.ListenPacket("udp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return nil, err
	}
	s := &rtpStream{conn: conn, done: make(chan struct{})}
	s.wg.Add(2)
	go s.receive()
	go s.transmit()
	return s, nil
}

func (s *rtpStream) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *rtpStream) receive() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if n >= 12 && buf[0]>>6 == 2 {
			s.stats.received.Add(1)
		}
	}
}

func (s *rtpStream) transmit() {
	defer s.wg.Done()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	ssrc := uint32(time.Now().UnixNano())
	var seq uint16
	var ts uint32
	pkt := make([]byte, 12+160)
	for i := 12; i < len(pkt); i++ {
		pkt[i] = 0xff // PCMU silence
	}
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		to, send := s.remote, s.send
		s.mu.Unlock()
		if !send || !to.IsValid() || to.Port() == 0 {
			continue
		}
		seq++
		ts += 160
		pkt[0], pkt[1] = 0x80, 0 // version 2, payload type 0
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		binary.BigEndian.PutUint32(pkt[8:], ssrc)
		if _, err := s.conn.WriteTo(pkt, net.UDPAddrFromAddrPort(to)); err == nil {
			s.stats.sent.Add(1)
		}
	}
}

// update applies a connection's mode and remote SDP.
func (s *rtpStream) update(mode mgcp.ConnectionMode, remote []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(remote) > 0 {
		if ap, err := mediaAddr(remote); err == nil {
			s.remote = ap
		}
	}
	s.send = mode == mgcp.ModeSendRecv || mode == mgcp.ModeSendOnly || mode == mgcp.ModeConfrnce
}

func (s *rtpStream) close() {
	close(s.done)
	_ = s.conn.Close()
	s.wg.Wait()
}

// mediaAddr reads the address and port of the first audio stream.
func mediaAddr(b []byte) (netip.AddrPort, error) {
	var d sdp.SessionDescription
	if err := d.Unmarshal(b); err != nil {
		return netip.AddrPort{}, err
	}
	for _, md := range d.MediaDescriptions {
		if md.MediaName.Media != "audio" {
			continue
		}
		c := md.ConnectionInformation
		if c == nil {
			c = d.ConnectionInformation
		}
		if c == nil || c.Address == nil {
			return netip.AddrPort{}, fmt.Errorf("mgcptest: no c= line")
		}
		ip, err := netip.ParseAddr(c.Address.Address)
		if err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("mgcptest: no audio stream")
}
