package trace

import "testing"

func TestFilter(t *testing.T) {
	f := &Filter{Endpoints: map[string]bool{"aaln/1@gw": true}, Domains: map[string]bool{"tgw": true}, Users: map[string]bool{"1001": true}}
	for _, tc := range []struct {
		proto, remote, msg string
		want               bool
	}{
		{"mgcp", "gw:2427", "CRCX 10 aaln/1@GW MGCP 1.0\r\nC: 1\r\n", true},
		{"mgcp", "gw:2427", "200 10 OK\r\n", true}, // the answer to the traced CRCX
		{"mgcp", "other:2427", "200 10 OK\r\n", false},
		{"mgcp", "gw:2427", "RQNT 11 aaln/2@gw MGCP 1.0\r\n", false},
		{"mgcp", "gw:2427", "200 11 OK\r\n", false},
		{"mgcp", "tgw:2427", "NTFY 5 ds/ds1-1/3@tgw MGCP 1.0\r\n", true},
		{"sip", "", "INVITE sip:1001@pbx SIP/2.0\r\nFrom: <sip:5551234@pbx>\r\nTo: <sip:1001@pbx>\r\n\r\n", true},
		{"sip", "", "SIP/2.0 200 OK\r\nFrom: \"x\" <sip:1001@me>;tag=1\r\nTo: <sip:2000@pbx>\r\n\r\n", true},
		{"sip", "", "SIP/2.0 200 OK\r\nf: <sips:1001@me>;tag=1\r\nt: <sip:2000@pbx>\r\n\r\n", true},
		{"sip", "", "INVITE sip:1002@pbx SIP/2.0\r\nFrom: <sip:10011@pbx>\r\nTo: <sip:1002@pbx>\r\n\r\nv=0 sip:1001@x\r\n", false},
	} {
		var got bool
		if tc.proto == "mgcp" {
			got = f.matchMGCP(tc.remote, []byte(tc.msg))
		} else {
			got = f.matchSIP([]byte(tc.msg))
		}
		if got != tc.want {
			t.Errorf("%q from %s: %v, want %v", tc.msg, tc.remote, got, tc.want)
		}
	}
}
