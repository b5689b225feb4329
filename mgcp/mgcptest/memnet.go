// Package mgcptest provides test doubles for MGCP: a scriptable fake
// gateway, an in-memory packet network for tests under testing/synctest,
// and a PacketConn wrapper that drops, duplicates, delays or reorders
// datagrams.
package mgcptest

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// MemNet is an in-memory datagram network. Delivery is immediate and
// lossless unless a queue is full (then the datagram is dropped, as UDP
// would). Reads block on channels only, so tests can run inside a
// testing/synctest bubble with fake time.
type MemNet struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*MemConn
	next  uint16
}

// NewMemNet returns an empty network.
func NewMemNet() *MemNet { return &MemNet{conns: map[netip.AddrPort]*MemConn{}, next: 40000} }

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// MemConn is one endpoint of a MemNet. It implements net.PacketConn.
type MemConn struct {
	net    *MemNet
	addr   netip.AddrPort
	in     chan datagram
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
}

// Listen binds addr ("127.0.0.1:2427"; port 0 picks a free one).
func (n *MemNet) Listen(addr string) (*MemConn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ap.Port() == 0 {
		for {
			n.next++
			cand := netip.AddrPortFrom(ap.Addr(), n.next)
			if _, used := n.conns[cand]; !used {
				ap = cand
				break
			}
		}
	}
	if _, used := n.conns[ap]; used {
		return nil, errors.New("memnet: address in use: " + ap.String())
	}
	c := &MemConn{net: n, addr: ap, in: make(chan datagram, 4096), closed: make(chan struct{})}
	n.conns[ap] = c
	return c, nil
}

// MustListen is Listen that panics on error, for test setup.
func (n *MemNet) MustListen(addr string) *MemConn {
	c, err := n.Listen(addr)
	if err != nil {
		panic(err)
	}
	return c
}

// ReadFrom implements net.PacketConn.
func (c *MemConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case d := <-c.in:
		n := copy(b, d.b)
		return n, net.UDPAddrFromAddrPort(d.from), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo implements net.PacketConn.
func (c *MemConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return 0, err
	}
	c.net.mu.Lock()
	dst := c.net.conns[ap]
	c.net.mu.Unlock()
	if dst == nil {
		return len(b), nil // nobody listening: the datagram is lost
	}
	d := datagram{b: append([]byte(nil), b...), from: c.addr}
	select {
	case dst.in <- d:
	default: // receive queue full: dropped
	}
	return len(b), nil
}

// Close implements net.PacketConn.
func (c *MemConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
	})
	return nil
}

// LocalAddr implements net.PacketConn.
func (c *MemConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

// AddrPort returns the bound address.
func (c *MemConn) AddrPort() netip.AddrPort { return c.addr }

// SetDeadline implements net.PacketConn (read side only).
func (c *MemConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *MemConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes never block.
func (c *MemConn) SetWriteDeadline(time.Time) error { return nil }

// Network returns the network the connection belongs to.
func (c *MemConn) Network() *MemNet { return c.net }
