package mgcp

import (
	"fmt"
	"net"
)

// DefaultSocketBuffer is the receive and send buffer asked for the call
// agent's UDP socket (4 MiB). The kernel's default (about 208 KiB on
// Linux) holds a few hundred datagrams: a burst of NTFYs from many lines
// overflows it, and each lost command costs the gateway a retransmission
// timer (RFC 3435 §3.5.3), hundreds of milliseconds of setup delay.
const DefaultSocketBuffer = 4 << 20

// The bounds Validate accepts for Config.SocketBuffer: at least one
// largest datagram, at most 1 GiB.
const (
	MinSocketBuffer = 65536
	MaxSocketBuffer = 1 << 30
)

// SetSocketBuffers asks the kernel for n-byte receive and send buffers on
// a UDP socket (n <= 0 leaves the kernel's defaults). It returns the
// buffer sizes the kernel granted, read back with getsockopt and given in
// the unit n was (Linux reports twice the usable size and caps the request
// at net.core.rmem_max / wmem_max); -1 where the platform cannot tell.
func SetSocketBuffers(c net.PacketConn, n int) (rcv, snd int, err error) {
	u, ok := c.(*net.UDPConn)
	if !ok {
		return -1, -1, fmt.Errorf("socket buffer: %T is not a UDP socket", c)
	}
	if n > 0 {
		if err := u.SetReadBuffer(n); err != nil {
			return -1, -1, fmt.Errorf("socket buffer: receive: %w", err)
		}
		if err := u.SetWriteBuffer(n); err != nil {
			return -1, -1, fmt.Errorf("socket buffer: send: %w", err)
		}
	}
	return socketBuffers(u)
}
