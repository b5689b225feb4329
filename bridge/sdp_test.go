package bridge

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mgsip/mgsip/mgcp"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestSDPGolden translates every bridge/testdata/sdp/*.in and compares
// the result (SDP, codecs, direction, mode, or the error) with its .golden.
func TestSDPGolden(t *testing.T) {
	cases := []struct {
		in      string
		toSIP   bool
		allowed []string
		dir     Direction
	}{
		{"gw-to-sip", true, []string{"PCMA", "PCMU"}, SendRecv},
		{"gw-no-rtpmap", true, []string{"PCMU"}, RecvOnly},
		{"gw-ipv6", true, nil, SendRecv},
		{"sip-offer", false, []string{"PCMU", "PCMA", "G729"}, ""},
		{"sip-hold", false, []string{"PCMU"}, ""},
		{"sip-old-hold", false, []string{"PCMU"}, ""},
		{"sip-no-common", false, []string{"PCMU", "PCMA"}, ""},
		{"sip-port-zero", false, []string{"PCMU"}, ""},
		{"sip-garbage", false, []string{"PCMU"}, ""},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata/sdp", c.in+".in"))
			if err != nil {
				t.Fatal(err)
			}
			var tr Translated
			if c.toSIP {
				tr, err = ToSIP(in, &Origin{SessionID: 42, Version: 1}, c.allowed, c.dir)
			} else {
				tr, err = ToGateway(in, c.allowed)
			}
			var got string
			if err != nil {
				got = "error: " + err.Error() + "\n"
			} else {
				got = fmt.Sprintf("codecs: %s\ndirection: %s\nmode: %s\nptime: %d\n\n%s", strings.Join(tr.Codecs, ","), tr.Direction, tr.Mode, tr.Ptime, tr.SDP)
			}
			golden := filepath.Join("testdata/sdp", c.in+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestOriginVersion: the o= version grows only when the description
// changes (RFC 3264 §8).
func TestOriginVersion(t *testing.T) {
	in, _ := os.ReadFile("testdata/sdp/gw-to-sip.in")
	o := &Origin{SessionID: 7, Version: 1}
	a, _ := ToSIP(in, o, nil, SendRecv)
	b, _ := ToSIP(in, o, nil, SendRecv)
	if !bytes.Equal(a.SDP, b.SDP) || o.Version != 1 {
		t.Fatalf("unchanged description changed version: %d", o.Version)
	}
	c, _ := ToSIP(in, o, nil, SendOnly)
	if o.Version != 2 || !bytes.Contains(c.SDP, []byte("o=mgsip 7 2 ")) || !bytes.Contains(c.SDP, []byte("a=sendonly")) {
		t.Fatalf("hold: version %d\n%s", o.Version, c.SDP)
	}
}

func TestModeFor(t *testing.T) {
	for d, m := range map[Direction]mgcp.ConnectionMode{SendRecv: mgcp.ModeSendRecv, SendOnly: mgcp.ModeRecvOnly,
		RecvOnly: mgcp.ModeSendOnly, Inactive: mgcp.ModeInactive} {
		if got := ModeFor(d); got != m {
			t.Errorf("%s: %s, want %s", d, got, m)
		}
	}
}

func TestDistinctiveRing(t *testing.T) {
	for in, want := range map[string]string{
		"":                                     "",
		"<http://pbx/ring.wav>;info=ring2":     "L/r2",
		"<http://127.0.0.1>;info=Bellcore-dr3": "L/r3",
		"<urn:alert:service:call-waiting>":     "",
		"<sip:x>;info=r4":                      "L/r4",
		"info=ring9":                           "",
	} {
		if got := distinctiveRing(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestNaturalLess(t *testing.T) {
	in := []string{"gw/aaln/10", "gw/aaln/2", "gw/aaln/1", "gw/ds/ds1-1/10", "gw/ds/ds1-1/9", "a", "gw/aaln/02x"}
	sort.Slice(in, func(i, j int) bool { return NaturalLess(in[i], in[j]) })
	want := "a gw/aaln/1 gw/aaln/2 gw/aaln/02x gw/aaln/10 gw/ds/ds1-1/9 gw/ds/ds1-1/10"
	if got := strings.Join(in, " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
