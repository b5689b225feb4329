package main

import (
	"net"
	"testing"
)

// The benchmark's drop counters read the kernel's tables: a bound socket
// is found by its port, and the box-wide counter is there.
func TestUDPStats(t *testing.T) {
	if n := udpRcvbufErrors(); n < 0 {
		t.Fatalf("RcvbufErrors not read from /proc/net/snmp: %d", n)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	drops := udpSocketDrops(port)
	if d, ok := drops[port]; !ok || d != 0 {
		t.Fatalf("port %d: drops %v (found %v), want a fresh socket's 0", port, d, ok)
	}
	if got := udpSocketDrops(); len(got) != 0 {
		t.Errorf("no port asked, got %v", got)
	}
}
