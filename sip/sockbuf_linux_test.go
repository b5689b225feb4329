package sip

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// rawRcvbuf reads SO_RCVBUF as the kernel reports it (Linux: twice the
// granted size, socket(7)), not through socketBuffers.
func rawRcvbuf(t *testing.T, c net.PacketConn) int {
	t.Helper()
	raw, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return n
}

func TestStackSocketBuffer(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Fatal(err)
	}
	rmax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kernelDefault := rawRcvbuf(t, fresh)
	_ = fresh.Close()
	for _, tc := range []struct {
		cfg, atLeast int
	}{{0, min(DefaultSocketBuffer, rmax)}, {1 << 20, min(1<<20, rmax)}, {-1, kernelDefault}} {
		s, err := NewStack(Config{SocketBuffer: tc.cfg, Listeners: []Listener{{Listen: "127.0.0.1:0"}, {Listen: "127.0.0.2:0"}}})
		if err != nil {
			t.Fatal(err)
		}
		for i, u := range s.udp {
			got := rawRcvbuf(t, u.(*packetGate).PacketConn)
			if got < tc.atLeast || (tc.cfg == -1 && got != kernelDefault) {
				t.Errorf("socket_buffer %d, listener %d: SO_RCVBUF %d, want >= %d", tc.cfg, i, got, tc.atLeast)
			}
		}
		_ = s.Close()
	}
}

// Asking more than net.core.rmem_max is granted only up to it and said
// once per listener at start.
func TestStackSocketBufferCappedIsLogged(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Fatal(err)
	}
	rmax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if rmax >= MaxSocketBuffer {
		t.Skipf("net.core.rmem_max %d allows the largest socket_buffer: nothing is capped", rmax)
	}
	logger, hook := test.NewNullLogger()
	s, err := NewStack(Config{SocketBuffer: MaxSocketBuffer, Listeners: []Listener{{Listen: "127.0.0.1:0"}}}, WithStackLogger(logrus.NewEntry(logger)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var warned int
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "sip.socket_buffer") {
			warned++
			if e.Data["asked"] != MaxSocketBuffer || e.Data["receive"] != rmax {
				t.Errorf("warning fields %v, want asked %d, receive %d", e.Data, MaxSocketBuffer, rmax)
			}
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings about the capped buffer, want 1", warned)
	}
}
