package mgcp

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The tests read SO_RCVBUF back themselves (not through socketBuffers) and
// compare it with what the kernel may grant: min(asked, net.core.rmem_max),
// reported doubled by Linux.

// sysctlInt reads an integer from /proc/sys (net/core/rmem_max, ...).
func sysctlInt(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// rawBuffers reads SO_RCVBUF and SO_SNDBUF as the kernel reports them
// (Linux: twice the granted size, socket(7)).
func rawBuffers(t *testing.T, c net.PacketConn) (rcv, snd int) {
	t.Helper()
	raw, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var e1, e2 error
	if err := raw.Control(func(fd uintptr) {
		rcv, e1 = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		snd, e2 = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil || e1 != nil || e2 != nil {
		t.Fatal(err, e1, e2)
	}
	return rcv, snd
}

func TestSetSocketBuffers(t *testing.T) {
	rmax, wmax := sysctlInt(t, "net/core/rmem_max"), sysctlInt(t, "net/core/wmem_max")
	for _, want := range []int{1 << 20, DefaultSocketBuffer} {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rcv, snd, err := SetSocketBuffers(c, want)
		if err != nil {
			t.Fatal(err)
		}
		rawR, rawS := rawBuffers(t, c)
		_ = c.Close()
		if rawR < min(want, rmax) || rawS < min(want, wmax) {
			t.Errorf("asked %d (rmem_max %d, wmem_max %d): SO_RCVBUF %d, SO_SNDBUF %d", want, rmax, wmax, rawR, rawS)
		}
		// What it returns is the kernel's figure in the caller's unit.
		if rcv != rawR/2 || snd != rawS/2 || rcv != min(want, rmax) || snd != min(want, wmax) {
			t.Errorf("asked %d (rmem_max %d, wmem_max %d): returned %d/%d, raw %d/%d", want, rmax, wmax, rcv, snd, rawR, rawS)
		}
	}
}

func TestSetSocketBuffersKernelDefault(t *testing.T) {
	fresh, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := SetSocketBuffers(c, 0); err != nil {
		t.Fatal(err)
	}
	fr, fs := rawBuffers(t, fresh)
	r, s := rawBuffers(t, c)
	if r != fr || s != fs {
		t.Errorf("n=0 changed the buffers: %d/%d, a fresh socket has %d/%d", r, s, fr, fs)
	}
}

func TestSetSocketBuffersNotUDP(t *testing.T) {
	if _, _, err := SetSocketBuffers(fakePacketConn{}, 1<<20); err == nil {
		t.Error("no error for a PacketConn that is not a UDP socket")
	}
}

type fakePacketConn struct{ net.PacketConn }

func TestListenSocketBuffer(t *testing.T) {
	rmax := sysctlInt(t, "net/core/rmem_max")
	for _, tc := range []struct {
		cfg  int
		want int
	}{{0, DefaultSocketBuffer}, {2 << 20, 2 << 20}} {
		ca, err := Listen(Config{ListenAddr: "127.0.0.1:0", SocketBuffer: tc.cfg})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := rawBuffers(t, ca.conn)
		_ = ca.Close()
		if got < min(tc.want, rmax) {
			t.Errorf("socket_buffer %d: SO_RCVBUF %d, want >= %d", tc.cfg, got, min(tc.want, rmax))
		}
	}
}
