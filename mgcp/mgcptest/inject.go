package mgcptest

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// Injection scripts the gateway's answer to matching commands, without
// touching the endpoint's state: an injected answer is all that happens.
type Injection struct {
	// Verb the command must have; "" matches every verb.
	Verb mgcp.Verb
	// Endpoint is the local name (e.g. "aaln/1") or the full name the
	// command must address, compared case-insensitively; "" matches all.
	Endpoint string
	// Mode the command's M: must have (e.g. sendrecv: the MDCX that
	// takes a call off hold); "" matches any, and none.
	Mode mgcp.ConnectionMode
	// Code is the return code to answer (with its standard commentary).
	Code mgcp.ReturnCode
	// Drop answers nothing: the command and every retransmission of its
	// transaction are discarded before the transaction layer sees them,
	// so the call agent ends with mgcp.ErrTimeout. The command is still
	// recorded in Commands.
	Drop bool
	// Delay holds the command this long before answering (with Code, or
	// with the built-in behaviour when Code is 0). The transaction layer
	// sends its provisional 100 meanwhile.
	Delay time.Duration
	// Count is how many transactions the injection applies to; 0 means
	// until ClearInjections.
	Count int
}

// Inject adds an injection. The first matching injection, in the order
// they were added, applies to a command.
func (g *Gateway) Inject(f Injection) {
	g.imu.Lock()
	defer g.imu.Unlock()
	g.injections = append(g.injections, &injection{Injection: f, left: f.Count})
	g.wire.refresh()
}

// ClearInjections removes every injection. Transactions already being
// dropped keep being dropped (their retransmissions must stay unanswered).
func (g *Gateway) ClearInjections() {
	g.imu.Lock()
	defer g.imu.Unlock()
	g.injections = nil
	g.wire.refresh()
}

type injection struct {
	Injection
	left int // transactions still to affect when Count > 0
}

func (f *injection) matches(cmd *mgcp.Command) bool {
	if f.Verb != "" && !strings.EqualFold(string(f.Verb), string(cmd.Verb)) {
		return false
	}
	if f.Mode != "" && !strings.EqualFold(string(f.Mode), string(cmd.Mode)) {
		return false
	}
	return f.Endpoint == "" || strings.EqualFold(f.Endpoint, cmd.Endpoint.Local) ||
		strings.EqualFold(f.Endpoint, cmd.Endpoint.String())
}

// take returns the first injection matching cmd with the given Drop
// flag, consuming one use of it.
func (g *Gateway) take(cmd *mgcp.Command, drop bool) (Injection, bool) {
	g.imu.Lock()
	defer g.imu.Unlock()
	for i, f := range g.injections {
		if f.Drop != drop || !f.matches(cmd) {
			continue
		}
		if f.Count > 0 {
			f.left--
			if f.left == 0 {
				g.injections = append(g.injections[:i:i], g.injections[i+1:]...)
				g.wire.refresh()
			}
		}
		return f.Injection, true
	}
	return Injection{}, false
}

// gwConn sits between the gateway's socket and its transaction layer. On
// reads it discards the commands a Drop injection names, with their
// retransmissions; on writes it tells waiters that the final response to
// a transaction went out, so that a notification that follows from a
// command (quarantined events processed against a new request) is sent
// after the command's response, as a gateway does.
type gwConn struct {
	net.PacketConn
	g *Gateway

	// filtering is set while a Drop injection exists or a dropped
	// transaction is remembered; reads parse datagrams only then.
	filtering atomic.Bool
	dropped   map[string]struct{} // "from txid" of dropped transactions; under g.imu

	waiting atomic.Int32
	wmu     sync.Mutex
	waits   map[uint32]chan struct{} // by transaction id
}

// refresh recomputes filtering; must hold g.imu.
func (c *gwConn) refresh() {
	on := len(c.dropped) > 0
	for _, f := range c.g.injections {
		on = on || f.Drop
	}
	c.filtering.Store(on)
}

// ReadFrom implements net.PacketConn.
func (c *gwConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.filtering.Load() || !c.drop(b[:n], from) {
			return n, from, err
		}
	}
}

// ReadFromUDPAddrPort implements mgcp.AddrPortConn: over a UDP socket the
// transaction layer reads without an address allocated per datagram.
func (c *gwConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	u, ok := c.PacketConn.(mgcp.AddrPortConn)
	if !ok {
		n, from, err := c.ReadFrom(b)
		if err != nil {
			return n, netip.AddrPort{}, err
		}
		return n, addrPortOf(from), nil
	}
	for {
		n, from, err := u.ReadFromUDPAddrPort(b)
		if err != nil || !c.filtering.Load() || !c.drop(b[:n], net.UDPAddrFromAddrPort(from)) {
			return n, from, err
		}
	}
}

// WriteToUDPAddrPort implements mgcp.AddrPortConn.
func (c *gwConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	u, ok := c.PacketConn.(mgcp.AddrPortConn)
	if !ok {
		return c.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	n, err := u.WriteToUDPAddrPort(b, to)
	c.wrote(b)
	return n, err
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// maxDropped bounds the memory of dropped transactions.
const maxDropped = 4096

// drop reports whether a received datagram is to be discarded.
func (c *gwConn) drop(b []byte, from net.Addr) bool {
	msgs, err := mgcp.ParseDatagram(b)
	if err != nil || len(msgs) == 0 {
		return false
	}
	cmd, ok := msgs[0].(*mgcp.Command)
	if !ok {
		return false
	}
	key := from.String() + " " + strconv.FormatUint(uint64(cmd.TransactionID), 10)
	c.g.imu.Lock()
	_, seen := c.dropped[key]
	c.g.imu.Unlock()
	if seen {
		return true // a retransmission of a dropped transaction
	}
	if _, ok := c.g.take(cmd, true); !ok {
		return false
	}
	c.g.imu.Lock()
	if c.dropped == nil || len(c.dropped) >= maxDropped {
		c.dropped = map[string]struct{}{}
	}
	c.dropped[key] = struct{}{}
	c.refresh()
	c.g.imu.Unlock()
	c.g.record(cmd)
	return true
}

// WriteTo implements net.PacketConn.
func (c *gwConn) WriteTo(b []byte, to net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, to)
	c.wrote(b)
	return n, err
}

// wrote tells the waiters of a final response that it went out.
func (c *gwConn) wrote(b []byte) {
	if c.waiting.Load() > 0 {
		if id, ok := finalResponseID(b); ok {
			c.wmu.Lock()
			if ch, ok := c.waits[id]; ok {
				close(ch)
				delete(c.waits, id)
				c.waiting.Add(-1)
			}
			c.wmu.Unlock()
		}
	}
}

// afterResponse returns a channel closed once the final response to the
// transaction id has been written.
func (c *gwConn) afterResponse(id uint32) <-chan struct{} {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.waits == nil {
		c.waits = map[uint32]chan struct{}{}
	}
	ch, ok := c.waits[id]
	if !ok {
		ch = make(chan struct{})
		c.waits[id] = ch
		c.waiting.Add(1)
	}
	return ch
}

// forget drops a waiter that will not be needed.
func (c *gwConn) forget(id uint32) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, ok := c.waits[id]; ok {
		delete(c.waits, id)
		c.waiting.Add(-1)
	}
}

// finalResponseID reads "code txid" from the first line of a datagram
// and reports the transaction id when it is a final response.
func finalResponseID(b []byte) (uint32, bool) {
	line := b
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		line = b[:i]
	}
	f := strings.Fields(string(line))
	if len(f) < 2 || len(f[0]) != 3 {
		return 0, false
	}
	code, err := strconv.Atoi(f[0])
	if err != nil || !mgcp.ReturnCode(code).IsFinal() {
		return 0, false
	}
	id, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(id), true
}
