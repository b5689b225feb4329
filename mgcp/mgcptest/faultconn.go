package mgcptest

import (
	"net"
	"sync"
	"time"
)

// Fault says what happens to one outgoing datagram.
type Fault struct {
	Drop      bool          // lose it
	Duplicate bool          // send it twice
	Delay     time.Duration // send it after this long (later datagrams may overtake it)
	Hold      bool          // keep it until the next datagram has been sent (reordering)
}

// FaultConn wraps a PacketConn and applies a Fault to each datagram
// written. Reads pass through.
type FaultConn struct {
	net.PacketConn
	// Decide is called for every datagram written; nil means no fault.
	Decide func(b []byte, to net.Addr) Fault

	mu   sync.Mutex
	held []heldDatagram
	wg   sync.WaitGroup
}

type heldDatagram struct {
	b  []byte
	to net.Addr
}

// NewFaultConn wraps c.
func NewFaultConn(c net.PacketConn, decide func(b []byte, to net.Addr) Fault) *FaultConn {
	return &FaultConn{PacketConn: c, Decide: decide}
}

// WriteTo applies the fault for the datagram.
func (f *FaultConn) WriteTo(b []byte, to net.Addr) (int, error) {
	var fault Fault
	if f.Decide != nil {
		fault = f.Decide(b, to)
	}
	if fault.Drop {
		return len(b), nil
	}
	cp := append([]byte(nil), b...)
	if fault.Hold {
		f.mu.Lock()
		f.held = append(f.held, heldDatagram{cp, to})
		f.mu.Unlock()
		return len(b), nil
	}
	if fault.Delay > 0 {
		f.wg.Add(1)
		time.AfterFunc(fault.Delay, func() {
			defer f.wg.Done()
			_, _ = f.PacketConn.WriteTo(cp, to)
		})
		return len(b), nil
	}
	n, err := f.PacketConn.WriteTo(cp, to)
	if fault.Duplicate {
		_, _ = f.PacketConn.WriteTo(cp, to)
	}
	f.mu.Lock()
	held := f.held
	f.held = nil
	f.mu.Unlock()
	for _, h := range held {
		_, _ = f.PacketConn.WriteTo(h.b, h.to)
	}
	return n, err
}

// Close waits for delayed datagrams and closes the connection.
func (f *FaultConn) Close() error {
	err := f.PacketConn.Close()
	f.wg.Wait()
	return err
}
