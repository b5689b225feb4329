package trace

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
)

const sipInvite = "INVITE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-hep-1\r\n" +
	"From: <sip:1001@pbx.test>;tag=a1\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: hep-test-1@192.0.2.7\r\nCSeq: 1 INVITE\r\n" +
	"Contact: <sip:1001@192.0.2.7:5060>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"

// FuzzHEPRoundTrip: whatever is encoded decodes to the same packet.
func FuzzHEPRoundTrip(f *testing.F) {
	f.Add([]byte(sipInvite), []byte{192, 0, 2, 7}, []byte{198, 51, 100, 1}, uint16(5060), uint16(5080), uint8(1), int64(1700000000123456), "")
	f.Add([]byte("NTFY 1 aaln/1@gw MGCP 1.0\r\nO: L/hd\r\n"), []byte(net.ParseIP("2001:db8::1").To16()), []byte(net.ParseIP("2001:db8::2").To16()),
		uint16(2427), uint16(2727), uint8(6), int64(0), "call-1@pbx")
	f.Fuzz(func(t *testing.T, payload, src, dst []byte, sport, dport uint16, proto uint8, usec int64, corr string) {
		mk := func(b []byte) netip.Addr {
			if a, ok := netip.AddrFromSlice(b); ok {
				return a
			}
			return netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		sa, da := mk(src), mk(dst)
		if sa.Is4() != da.Is4() { // mixed families go out as IPv6
			sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
		}
		if usec < 0 {
			usec = -usec
		}
		usec %= 1 << 42
		p := hepPacket{Src: netip.AddrPortFrom(sa, sport), Dst: netip.AddrPortFrom(da, dport), Time: time.UnixMicro(usec),
			Proto: proto, NodeID: 2427, Payload: payload, Correlation: corr, NodeName: "node-" + corr, Password: "pw"}
		b, err := encodeHEP(nil, p)
		if err != nil {
			if len(payload)+2*len(corr) > 60000 {
				return
			}
			t.Fatal(err)
		}
		q, err := decodeHEP(b)
		if err != nil {
			t.Fatalf("decode of our own encoding: %v", err)
		}
		if q.Src.Addr().Unmap() != p.Src.Addr().Unmap() || q.Dst.Addr().Unmap() != p.Dst.Addr().Unmap() ||
			q.Src.Port() != sport || q.Dst.Port() != dport || q.Proto != proto || q.NodeID != 2427 ||
			!bytes.Equal(q.Payload, payload) || q.Correlation != corr || q.NodeName != "node-"+corr || q.Password != "pw" || q.Time.Unix() != p.Time.Unix() || q.Time.Nanosecond()/1000 != p.Time.Nanosecond()/1000 {
			t.Fatalf("round trip:\n%+v\n%+v", p, q)
		}
		// Truncations are refused, never a panic.
		for _, n := range []int{0, 3, 6, len(b) / 2, len(b) - 1} {
			if n < len(b) {
				_, _ = decodeHEP(b[:n])
			}
		}
	})
}

// TestHEPReadBySngrep sends a HEPv3-encoded SIP INVITE to sngrep, a real
// HEP (EEP) receiver, which writes what it decoded to a pcap; tshark then
// finds our INVITE there with the addresses and ports we encoded.
// (Wireshark 4.0 as packaged by Debian 12 has no HEP dissector.)
func TestHEPReadBySngrep(t *testing.T) {
	sngrep := testutil.RequireProgram(t, "sngrep")
	tshark := testutil.RequireProgram(t, "tshark")
	dir := t.TempDir()
	ip := testutil.LoopbackIP()
	listen := ip + ":9060"
	out := filepath.Join(dir, "sngrep.pcap")
	logf, err := os.Create(filepath.Join(dir, "sngrep.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(sngrep, "-N", "-q", "-F", "-L", "udp:"+listen, "-O", out)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	h, err := NewHEPSender(HEPOptions{Collector: listen, NodeID: 2427})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	defer h.Close()
	src, dst := netip.MustParseAddrPort("192.0.2.7:5060"), netip.MustParseAddrPort("198.51.100.1:5080")
	// sngrep binds a moment after it starts, and writes its pcap when it
	// exits: send for a second (a closed port makes the connected socket
	// report an error on a later write; ignore those), then stop it.
	for range 10 {
		_ = h.Send(HEPSIP, src, dst, time.Now(), []byte(sipInvite), "")
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	res, err := exec.Command("timeout", "20", tshark, "-r", out, "-Y", "sip.Method == \"INVITE\"", "-T", "fields",
		"-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport", "-e", "sip.Call-ID").Output()
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "sngrep.log"))
		t.Fatalf("tshark: %v\nsngrep: %s", err, b)
	}
	line, _, _ := strings.Cut(string(res), "\n")
	if f := strings.Split(line, "\t"); len(f) != 5 || f[0] != "192.0.2.7" || f[1] != "5060" || f[2] != "198.51.100.1" ||
		f[3] != "5080" || f[4] != "hep-test-1@192.0.2.7" {
		t.Fatalf("sngrep/tshark read %q", res)
	}
}
