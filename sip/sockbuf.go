package sip

import (
	"fmt"
	"net"
)

// DefaultSocketBuffer is the receive and send buffer asked for each SIP
// UDP listener (4 MiB). The kernel's default (about 208 KiB on Linux)
// overflows under a burst of requests, and each lost request costs its
// sender Timer A (RFC 3261 §17.1.1.2: 500 ms) before it is retransmitted.
const DefaultSocketBuffer = 4 << 20

// The bounds Validate accepts for Config.SocketBuffer: at least one
// largest datagram, at most 1 GiB.
const (
	MinSocketBuffer = 65536
	MaxSocketBuffer = 1 << 30
)

// setSocketBuffers asks the kernel for n-byte receive and send buffers on
// a UDP socket and returns what it granted, in the unit n was (read back
// with getsockopt; Linux caps the request at net.core.rmem_max and
// wmem_max); -1 where the platform cannot tell. The same as
// mgcp.SetSocketBuffers: the dependency rule keeps the two packages apart.
func setSocketBuffers(c net.PacketConn, n int) (rcv, snd int, err error) {
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
