package trace

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLadderJoins: piggybacked MGCP messages are split, a response is
// joined to its command (also from another port of the gateway), an
// answer to nothing is marked, and the MGCP call is joined to the SIP
// dialog that first carried the gateway's media address, not to a second
// dialog that passed the same SDP through.
func TestLadderJoins(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapStream(&buf)
	if err != nil {
		t.Fatal(err)
	}
	ca := netip.MustParseAddrPort("10.0.0.1:2727")
	gw := netip.MustParseAddrPort("10.0.0.2:2427")
	gw2 := netip.MustParseAddrPort("10.0.0.2:2428")
	me := netip.MustParseAddrPort("10.0.0.1:5060")
	pbx := netip.MustParseAddrPort("10.0.0.9:5060")
	at := time.Unix(1_800_000_000, 0)
	send := func(src, dst netip.AddrPort, s string) {
		at = at.Add(time.Millisecond)
		if err := w.WriteDatagram(at, src, dst, []byte(strings.ReplaceAll(s, "\n", "\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
	sdp := func(port string) string {
		return "\nv=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio " + port + " RTP/AVP 0\n"
	}
	send(ca, gw, "CRCX 10 aaln/1@gw MGCP 1.0\nC: AAA\nM: recvonly\n")
	send(gw2, ca, "200 10 OK\nI: 1\n"+sdp("4000")+".\n200 99 OK\n")
	send(me, pbx, "INVITE sip:2000@pbx SIP/2.0\nCall-ID: first\nContent-Type: application/sdp\n"+sdp("4000"))
	send(pbx, me, "INVITE sip:1002@me SIP/2.0\nCall-ID: second\nContent-Type: application/sdp\n"+sdp("4000"))
	var out bytes.Buffer
	if err := Ladder(&buf, &out, LadderOptions{}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"# MGCP call AAA = SIP Call-ID first\n", "200 10 OK  [CRCX aaln/1@gw, 1.0 ms]",
		"200 99 OK  [answers no command in the capture]", "INVITE sip:2000@pbx SIP/2.0  [MGCP call AAA]"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "1002@me SIP/2.0  [MGCP") {
		t.Errorf("the passed-through dialog was joined:\n%s", got)
	}
	if err := Ladder(strings.NewReader("not a capture"), &out, LadderOptions{}); err == nil {
		t.Error("junk read as a capture")
	}
}
