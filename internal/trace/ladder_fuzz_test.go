package trace

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"
)

// FuzzLadder: any datagrams in a capture, and any bytes as a capture, are
// read without a panic.
func FuzzLadder(f *testing.F) {
	f.Add([]byte("CRCX 1 aaln/1@gw MGCP 1.0\r\nC: A\r\n"), []byte("200 1 OK\r\n\r\nv=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n"))
	f.Add([]byte("INVITE sip:1@x SIP/2.0\r\nCall-ID: c\r\n\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n"), []byte("SIP/2.0 200 OK\r\ni: c\r\n"))
	f.Add([]byte("NTFY 2 aaln/1@gw MGCP 1.0\n.\n200 3\n.\n"), []byte("\xd4\xc3\xb2\xa1"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var buf bytes.Buffer
		w, err := NewPcapStream(&buf)
		if err != nil {
			t.Fatal(err)
		}
		x, y := netip.MustParseAddrPort("10.0.0.1:2727"), netip.MustParseAddrPort("[::2]:2427")
		_ = w.WriteDatagram(time.Unix(1, 0), x, y, a)
		_ = w.WriteDatagram(time.Unix(2, 0), y, x, b)
		_ = Ladder(bytes.NewReader(buf.Bytes()), io.Discard, LadderOptions{})
		_ = Ladder(bytes.NewReader(buf.Bytes()), io.Discard, LadderOptions{Call: string(a[:min(len(a), 8)])})
		_ = Ladder(bytes.NewReader(a), io.Discard, LadderOptions{}) // bytes as a capture
	})
}

// FuzzTraceFilter: the wire trace's filter reads datagrams from anyone.
func FuzzTraceFilter(f *testing.F) {
	f.Add([]byte("CRCX 1 aaln/1@gw MGCP 1.0\r\n"))
	f.Add([]byte("INVITE sip:1001@x SIP/2.0\r\nFrom: <sip:1001@y>\r\n\r\n"))
	f.Add([]byte("sipsipsips:sip:@"))
	flt := &Filter{Endpoints: map[string]bool{"aaln/1@gw": true}, Domains: map[string]bool{"gw": true}, Users: map[string]bool{"1001": true}}
	f.Fuzz(func(t *testing.T, b []byte) {
		flt.matchMGCP("gw:2427", b)
		flt.matchSIP(b)
	})
}
