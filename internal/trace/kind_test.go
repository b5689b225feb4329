package trace

import (
	"math/rand/v2"
	"testing"
)

// TestKind: the names of the common messages, and the same answer as the
// general path (kindSlow) for anything, including odd spacing, lower-case
// methods, unknown verbs, non-ASCII bytes and truncated lines.
func TestKind(t *testing.T) {
	for _, tc := range []struct{ proto, msg, want string }{
		{"sip", "INVITE sip:2000@pbx SIP/2.0\r\nVia: x\r\n", "INVITE"},
		{"sip", "SIP/2.0 200 OK\r\n", "200"},
		{"sip", "SIP/2.0 299 Odd\r\n", "299"},
		{"sip", "invite sip:a@b SIP/2.0\r\n", "INVITE"},
		{"sip", "FOO sip:a@b SIP/2.0\r\n", "FOO"},
		{"sip", "garbage\r\n", "malformed"},
		{"sip", "", "malformed"},
		{"mgcp", "NTFY 1203 aaln/1@gw MGCP 1.0\r\nO: L/hd\r\n", "NTFY"},
		{"mgcp", "200 1203 OK\r\n", "200"},
		{"mgcp", "  rqnt\t12 aaln/1@gw MGCP 1.0\n", "RQNT"},
		{"mgcp", "527 12\n", "527"},
		{"mgcp", "\xc2\xa0NTFY 1 a MGCP 1.0\n", "NTFY"},
	} {
		if got := kind(tc.proto, []byte(tc.msg)); got != tc.want {
			t.Errorf("kind(%s, %q) = %q, want %q", tc.proto, tc.msg, got, tc.want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("NTFYINVITESIP/2.0 \t\r\n200 401 abc\xc2\xa0\x85")
	for range 20000 {
		b := make([]byte, rng.IntN(80))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		for _, proto := range []string{"sip", "mgcp"} {
			line := b[:min(len(b), 128)]
			for i, c := range line {
				if c == '\n' {
					line = line[:i]
					break
				}
			}
			if got, want := kind(proto, b), kindSlow(proto, line[:min(len(line), 64)]); got != want {
				t.Fatalf("kind(%s, %q) = %q, the general path says %q", proto, b, got, want)
			}
		}
	}
}

// TestKindAllocations: the usual messages are named without allocating.
func TestKindAllocations(t *testing.T) {
	sipMsgs := [][]byte{[]byte("INVITE sip:2000@pbx SIP/2.0\r\n"), []byte("SIP/2.0 180 Ringing\r\n")}
	mgcpMsgs := [][]byte{[]byte("NTFY 1 aaln/1@gw MGCP 1.0\r\n"), []byte("250 7 OK\r\n")}
	if n := testing.AllocsPerRun(100, func() {
		for i := range sipMsgs {
			_ = kind("sip", sipMsgs[i])
			_ = kind("mgcp", mgcpMsgs[i])
		}
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
