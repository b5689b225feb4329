package trace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// readPcap returns the packets of a capture file, failing on a bad one.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Fatalf("%s: link type %v", path, r.LinkType())
	}
	var out [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", path, len(out), err)
		}
		out = append(out, data)
	}
}

// udpChecksum computes the UDP checksum of a raw IP packet by RFC 768 and,
// for IPv6, the pseudo-header of RFC 8200 §8.1, without gopacket: a sum
// over the packet as written that is 0xffff when its checksum is right.
func udpChecksum(t *testing.T, pkt []byte) uint16 {
	t.Helper()
	var pseudo []byte
	var udp []byte
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		udp = pkt[ihl:]
		pseudo = append(append([]byte{}, pkt[12:20]...), 0, 17)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(udp)))
	case 6:
		if pkt[6] != 17 {
			t.Fatalf("next header %d", pkt[6])
		}
		udp = pkt[40:]
		pseudo = append([]byte{}, pkt[8:40]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(udp)))
		pseudo = append(pseudo, 0, 0, 0, 17)
	default:
		t.Fatalf("IP version %d", pkt[0]>>4)
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Fatalf("UDP length %d, have %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	if binary.BigEndian.Uint16(udp[6:]) == 0 {
		t.Fatal("no UDP checksum")
	}
	var sum uint32
	data := append(pseudo, udp...)
	if len(data)%2 == 1 {
		data = append(data, 0)
	}
	for i := 0; i < len(data); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(data[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestPcapChecksums: IPv4 and IPv6 datagrams (odd and even lengths, mixed
// families) carry UDP checksums that verify.
func TestPcapChecksums(t *testing.T) {
	var buf bytes.Buffer
	s, err := NewPcapStream(&buf)
	if err != nil {
		t.Fatal(err)
	}
	pairs := [][2]string{{"192.0.2.1:2727", "192.0.2.9:2427"}, {"[2001:db8::1]:5060", "[2001:db8::2]:5080"},
		{"192.0.2.1:5060", "[2001:db8::2]:5060"}, {"[::1]:1", "[::1]:65535"}}
	n := 0
	for _, p := range pairs {
		for _, payload := range []string{"", "x", "NTFY 1 aaln/1@gw MGCP 1.0\r\n", "OPTIONS sip:a SIP/2.0\r\n\r\n!"} {
			if err := s.WriteDatagram(time.Unix(1700000000, 5000), netip.MustParseAddrPort(p[0]), netip.MustParseAddrPort(p[1]), []byte(payload)); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	path := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	pkts := readPcap(t, path)
	if len(pkts) != n {
		t.Fatalf("%d packets, want %d", len(pkts), n)
	}
	for i, pkt := range pkts {
		if sum := udpChecksum(t, pkt); sum != 0xffff {
			t.Errorf("packet %d (IPv%d): checksum sum 0x%04x", i, pkt[0]>>4, sum)
		}
	}
	if s.n != int64(buf.Len()) {
		t.Errorf("counted %d bytes, wrote %d", s.n, buf.Len())
	}
}

// TestPcapRotationAcrossRestart: a restart never truncates the capture of
// the run before (it becomes .1, byte for byte); rotation by size keeps
// the newest keep files, each a valid capture; nothing beyond keep stays.
func TestPcapRotationAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.pcap")
	a, b := netip.MustParseAddrPort("192.0.2.1:2727"), netip.MustParseAddrPort("192.0.2.9:2427")
	msg := func(run, i int) []byte {
		return []byte(fmt.Sprintf("NTFY %d aaln/1@gw MGCP 1.0\r\nX: run%d\r\n", i, run))
	}

	// Run 1 writes three packets and "crashes" (the file is left as is).
	w, err := NewPcapWriter(path, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		w.Write(time.Now(), b, a, msg(1, i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	run1, _ := os.ReadFile(path)

	// Run 2 starts: run 1's capture is kept whole as .1.
	w, err = NewPcapWriter(path, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(time.Now(), b, a, msg(2, 0))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path + ".1"); !bytes.Equal(got, run1) {
		t.Fatalf("run 1's capture changed across the restart (%d bytes, had %d)", len(got), len(run1))
	}
	if pkts := readPcap(t, path); len(pkts) != 1 {
		t.Fatalf("run 2 wrote %d packets", len(pkts))
	}

	// Run 3, with a small size limit: rotates by size while running.
	w, err = NewPcapWriter(path, 400, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		w.Write(time.Now(), b, a, msg(3, i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	if len(files) != 3 {
		t.Fatalf("files %v, want 3", files)
	}
	total := 0
	for _, f := range files {
		pkts := readPcap(t, f)
		if len(pkts) == 0 {
			t.Errorf("%s holds no packet", f)
		}
		if fi, _ := os.Stat(f); fi.Size() > 400 {
			t.Errorf("%s is %d bytes, past the limit", f, fi.Size())
		}
		total += len(pkts)
	}
	// The newest packets are kept: run 3's last one is in the live file.
	last := readPcap(t, path)
	if !bytes.Contains(last[len(last)-1], msg(3, 19)) {
		t.Error("the last packet is not in the live file")
	}
	t.Logf("%d packets kept in %d files", total, len(files))

	// A path that is not a regular file is refused, not replaced.
	if _, err := NewPcapWriter(dir, 1<<20, 3); err == nil {
		t.Error("a directory was taken as the capture")
	}
}

// TestPcapNeverTruncates: whatever is at the path (a capture, or a file
// somebody pointed trace.pcap at by mistake) is moved aside, not cut.
func TestPcapNeverTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "important.txt")
	if err := os.WriteFile(path, []byte("not a capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := NewPcapWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if b, _ := os.ReadFile(path + ".1"); string(b) != "not a capture" {
		t.Fatalf(".1 holds %q", b)
	}
}
