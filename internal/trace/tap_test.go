package trace

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
)

// TestPcapRotationReadByTshark writes SIP and MGCP messages over IPv4 and
// IPv6 into a pcap that rotates every few packets; every kept file opens
// in tshark with the messages dissected, and no more files than asked
// are kept.
func TestPcapRotationReadByTshark(t *testing.T) {
	tshark := testutil.RequireProgram(t, "tshark")
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.pcap")
	w, err := NewPcapWriter(path, 1500, 3)
	if err != nil {
		t.Fatal(err)
	}
	ca, gw := netip.MustParseAddrPort("192.0.2.1:2727"), netip.MustParseAddrPort("192.0.2.9:2427")
	us6, pbx6 := netip.MustParseAddrPort("[2001:db8::1]:5060"), netip.MustParseAddrPort("[2001:db8::2]:5060")
	for i := 1; i <= 20; i++ {
		w.Write(time.Now(), gw, ca, []byte(fmt.Sprintf("NTFY %d aaln/1@gw.test MGCP 1.0\r\nX: 1\r\nO: L/hd\r\n", i)))
		w.Write(time.Now(), us6, pbx6, []byte(fmt.Sprintf("OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK%d\r\n"+
			"From: <sip:mgsip@x>;tag=1\r\nTo: <sip:pbx>\r\nCall-ID: c%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", i, i)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	if len(files) != 3 {
		t.Fatalf("kept %v, want 3 files", files)
	}
	for _, f := range files {
		out, err := exec.Command("timeout", "20", tshark, "-r", f, "-d", "udp.port==2727,mgcp", "-o", "udp.check_checksum:TRUE",
			"-T", "fields", "-E", "separator=|", "-e", "frame.protocols", "-e", "udp.checksum.status").Output()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		lines := strings.Fields(string(out))
		if len(lines) == 0 {
			t.Fatalf("%s: empty", f)
		}
		for _, l := range lines {
			proto, status, _ := strings.Cut(l, "|")
			if !strings.HasSuffix(proto, ":mgcp") && !strings.HasSuffix(proto, ":sip") {
				t.Errorf("%s: packet dissected as %s", f, proto)
			}
			if status != "1" { // 1: good
				t.Errorf("%s: %s packet with UDP checksum status %q", f, proto, status)
			}
		}
		if fi, _ := os.Stat(f); fi.Size() > 1500+600 {
			t.Errorf("%s is %d bytes, past the limit", f, fi.Size())
		}
	}
	// sngrep opens it too: it reads the file and writes the SIP it
	// recognised to a pcap of its own (when it exits).
	sngrep := testutil.RequireProgram(t, "sngrep")
	out := filepath.Join(dir, "sngrep.pcap")
	cmd := exec.Command("timeout", "-s", "TERM", "3", sngrep, "-N", "-q", "-F", "-I", path, "-O", out)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	_ = cmd.Run() // ended by timeout's SIGTERM
	res, err := exec.Command("timeout", "20", tshark, "-r", out, "-Y", "sip.Method == \"OPTIONS\"", "-T", "fields", "-e", "sip.Call-ID").Output()
	if err != nil || len(strings.Fields(string(res))) == 0 {
		t.Fatalf("sngrep did not read the SIP messages of our pcap: %v %q", err, res)
	}
}
