package bridge

import "testing"

func TestNumericOrigin(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
		ok             bool
	}{
		{"hex session id (CRLF)", "v=0\r\no=- 1A2b 1 IN IP4 10.0.0.1\r\ns=-\r\n", "v=0\r\no=- 0 1 IN IP4 10.0.0.1\r\ns=-\r\n", true},
		{"letters in both, LF only", "v=0\no=gw abc v2 IN IP4 10.0.0.1\ns=-\n", "v=0\no=gw 0 0 IN IP4 10.0.0.1\r\ns=-\n", true},
		{"last line without EOL", "v=0\r\no=- x 1 IN IP4 10.0.0.1", "v=0\r\no=- 0 1 IN IP4 10.0.0.1\r", true},
		{"numeric: unchanged", "v=0\r\no=- 123 1 IN IP4 10.0.0.1\r\n", "", false},
		{"five fields", "v=0\r\no=- x 1 IN IP4\r\n", "", false},
		{"no o= line", "v=0\r\ns=-\r\n", "", false},
		{"only the first o= line", "o=- 1 1 IN IP4 10.0.0.1\r\no=- x 1 IN IP4 10.0.0.1\r\n", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := numericOrigin([]byte(c.in))
			if ok != c.ok || string(got) != c.want {
				t.Fatalf("numericOrigin(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
			}
		})
	}
	// A gateway's SDP with a hex session id parses (mended first).
	if _, err := parseSDP([]byte("v=0\r\no=- 5F3a 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")); err != nil {
		t.Fatal(err)
	}
}
