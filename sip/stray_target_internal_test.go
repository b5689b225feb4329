package sip

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// A stray 2xx's Contact is the remote target of its ACK and BYE only when
// it is a SIP URI reachable the way the INVITE went; anything else (tel:,
// "*", sips: over UDP, no host) falls back to the INVITE's own target, so
// that the far end cannot make us look up names of its choosing.
func TestRemoteTarget(t *testing.T) {
	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "2000", Host: "127.0.0.1", Port: 5060})
	inv.SetTransport("UDP")
	for _, tc := range []struct {
		name    string
		contact *sip.Uri
		want    string
	}{
		{"no contact", nil, "127.0.0.1"},
		{"sip", &sip.Uri{Scheme: "sip", User: "f", Host: "127.0.0.9", Port: 5070}, "127.0.0.9"},
		{"tel", &sip.Uri{Scheme: "tel", Host: "+123"}, "127.0.0.1"},
		{"star", &sip.Uri{Wildcard: true}, "127.0.0.1"},
		{"sips over udp", &sip.Uri{Scheme: "sips", User: "x", Host: "127.0.0.8"}, "127.0.0.1"},
		{"no host", &sip.Uri{Scheme: "sip", User: "x"}, "127.0.0.1"},
	} {
		res := sip.NewResponseFromRequest(inv, 200, "OK", nil)
		if tc.contact != nil {
			res.AppendHeader(&sip.ContactHeader{Address: *tc.contact})
		}
		if got := remoteTarget(inv, res); got.Host != tc.want {
			t.Errorf("%s: target %s, want host %s", tc.name, got.String(), tc.want)
		}
	}
	tlsInv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sips", User: "2000", Host: "127.0.0.1", Port: 5061})
	tlsInv.SetTransport("TLS")
	res := sip.NewResponseFromRequest(tlsInv, 200, "OK", nil)
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sips", User: "x", Host: "127.0.0.8"}})
	if got := remoteTarget(tlsInv, res); got.Host != "127.0.0.8" {
		t.Errorf("sips over TLS: target %s, want the Contact", got.String())
	}
}
