package mgcp

import (
	"reflect"
	"testing"
)

func mustCommand(t *testing.T, s string) *Command {
	t.Helper()
	c, err := ParseCommand([]byte(s))
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return c
}

func TestParseNotify(t *testing.T) {
	c := mustCommand(t, "ntfy 3003 aaln/1@RGW1.example.net MGCP 1.0 NCS 1.0\r\nn: ca@ca.example.net:2727\r\nX: 1a02\r\nO: D/2,d/0 , L/hd@A3F, L/ci(1,\"a,b\")\r\n")
	want := &Command{
		Verb: VerbNTFY, TransactionID: 3003,
		Endpoint: EndpointName{Local: "aaln/1", Domain: "RGW1.example.net"},
		Version:  "1.0", Profile: "NCS 1.0",
		Parameters: Parameters{
			NotifiedEntity: "ca@ca.example.net:2727",
			RequestID:      "1a02",
			ObservedEvents: []Event{
				{Package: "D", Name: "2"}, {Package: "d", Name: "0"},
				{Package: "L", Name: "hd", Connection: "A3F"},
				{Package: "L", Name: "ci", Params: []string{"1", `"a,b"`}},
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %#v\nwant %#v", c, want)
	}
	if !c.ObservedEvents[1].Is("D", "0") || c.ObservedEvents[3].Param(1) != "a,b" {
		t.Error("event helpers")
	}
}

func TestParseRequestedEvents(t *testing.T) {
	c := mustCommand(t, "RQNT 1 aaln/1@gw MGCP 1.0\nX: 1\nR: L/hd(A, E(S(L/dl),R(L/hu(N), D/[0-9#*T](D)),D((xx|1x.T)))), R/rto(300000), R/qa(N)(1,2), X/ext(pkg/act(7))\nS:\n")
	r := c.RequestedEvents
	if len(r) != 4 {
		t.Fatalf("got %d requested events", len(r))
	}
	hd := r[0]
	if !hd.Is("L", "hd") || len(hd.Actions) != 2 || hd.Actions[0].Code != ActionAccumulate || hd.Actions[1].Code != ActionEmbedded {
		t.Fatalf("L/hd: %#v", hd)
	}
	emb := hd.Actions[1].Embedded
	if len(emb.Signals) != 1 || emb.Signals[0].Name != "dl" || len(emb.RequestedEvents) != 2 ||
		!emb.RequestedEvents[1].HasAction(ActionDigitMap) || emb.DigitMap != "(xx|1x.T)" {
		t.Fatalf("embedded: %#v", emb)
	}
	if r[1].Actions != nil || !reflect.DeepEqual(r[1].Params, []string{"300000"}) {
		t.Errorf("params-only event: %#v", r[1])
	}
	if !reflect.DeepEqual(r[2].Params, []string{"1", "2"}) || r[2].Actions[0].Code != "N" {
		t.Errorf("actions and params: %#v", r[2])
	}
	if r[3].Actions[0].Code != "pkg/act" || r[3].Actions[0].Params != "7" {
		t.Errorf("extension action: %#v", r[3])
	}
	if c.Signals == nil || len(c.Signals) != 0 {
		t.Errorf("empty S: must be present and empty, got %#v", c.Signals)
	}
}

func TestUnquote(t *testing.T) {
	for in, want := range map[string]string{`"Front Desk"`: "Front Desk", `"a\"b"`: `a"b`, `plain`: "plain", `"`: `"`} {
		if got := Unquote(in); got != want {
			t.Errorf("Unquote(%s) = %q, want %q", in, got, want)
		}
		if in != `"` && in != "plain" && Unquote(Quote(want)) != want {
			t.Errorf("Quote/Unquote of %q", want)
		}
	}
}

func TestEndpointNames(t *testing.T) {
	tests := []struct {
		pattern, name string
		match         bool
	}{
		{"aaln/*@gw", "aaln/7@GW", true},
		{"*@gw", "ds/ds1-1/3@gw", true},
		{"aaln/$@gw", "aaln/2@gw", true},
		{"ds/ds1-1/*@gw", "ds/ds1-2/3@gw", false},
		{"aaln/1@gw", "AALN/1@gw", true},
		{"aaln/1@gw", "aaln/1@other", false},
		{"aaln/*@gw", "aaln@gw", false},
		{"ds/*/1@gw", "ds/ds1-4/1@gw", true},
	}
	for _, tt := range tests {
		p, err := ParseEndpointName(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		n, err := ParseEndpointName(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Matches(n); got != tt.match {
			t.Errorf("%s matches %s = %v", tt.pattern, tt.name, got)
		}
	}
	e, _ := ParseEndpointName("ds/ds1-1/$@[2001:db8::1]")
	if e.Wildcard() != '$' || e.Domain != "[2001:db8::1]" || e.Key() != "ds/ds1-1/$@[2001:db8::1]" {
		t.Errorf("wildcard name: %#v", e)
	}
	for _, bad := range []string{"", "a@", "@b", "a/@b", "a*/1@b", "a@[::g]", "a@b c", "a@[1.2.3.4"} {
		if _, err := ParseEndpointName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLocalConnectionOptions(t *testing.T) {
	l, err := ParseLocalConnectionOptions("p:10-30, A:PCMU;G729,b:64, e:on, s:OFF, gc:auto, t:B8, r:g, k:clear:x, nt:IN, x-foo:1, x+bar:2, sc-rtp/k:3")
	if err != nil {
		t.Fatal(err)
	}
	want := &LocalConnectionOptions{
		Codecs: []string{"PCMU", "G729"}, Packetization: Range{10, 30}, Bandwidth: Range{64, 64},
		EchoCancellation: On, SilenceSuppression: Off, GainControl: "auto", TypeOfService: "B8",
		ResourceReservation: "g", EncryptionKey: "clear:x", NetworkType: "IN",
		Extensions: []LCOParam{{"x-foo", "1"}, {"x+bar", "2"}, {"sc-rtp/k", "3"}},
	}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("got  %#v\nwant %#v", l, want)
	}
	if got := l.String(); got != "p:10-30, a:PCMU;G729, b:64, e:on, s:off, gc:auto, t:B8, r:g, k:clear:x, nt:IN, x-foo:1, x+bar:2, sc-rtp/k:3" {
		t.Errorf("String() = %q", got)
	}
}

func TestReturnCodes(t *testing.T) {
	tests := []struct {
		code  ReturnCode
		class CodeClass
		final bool
		str   string
	}{
		{0, ClassAck, false, "000"}, {100, ClassProvisional, false, "100"}, {200, ClassSuccess, true, "200"},
		{250, ClassSuccess, true, "250"}, {401, ClassTransient, true, "401"}, {510, ClassPermanent, true, "510"},
		{813, ClassPackageSpecific, true, "813"}, {300, ClassInvalid, false, "300"},
	}
	for _, tt := range tests {
		if tt.code.Class() != tt.class || tt.code.IsFinal() != tt.final || tt.code.String() != tt.str {
			t.Errorf("%d: class %v final %v str %s", tt.code, tt.code.Class(), tt.code.IsFinal(), tt.code.String())
		}
	}
	if CodeMissingRemoteSDP.Text() != "Missing RemoteConnectionDescriptor" {
		t.Error("text of 527")
	}
}

func TestAckRangesCompression(t *testing.T) {
	got := ackRanges(nil, []uint32{7, 3, 4, 5, 9, 8, 20})
	want := []AckRange{{3, 5}, {7, 9}, {20, 20}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
}

func TestPiggybackComposition(t *testing.T) {
	r := &Response{Code: CodeOK, TransactionID: 1201, Comment: "OK", SDP: []byte("v=0\r\nc=IN IP4 192.0.2.1")}
	c := &Command{Verb: VerbRQNT, TransactionID: 1202, Endpoint: EndpointName{"aaln/1", "gw"}, Parameters: Parameters{RequestID: "1"}}
	b := AppendDatagram(nil, r, c)
	msgs, err := ParseDatagram(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[1].TxID() != 1202 || string(msgs[0].(*Response).SDP) != "v=0\r\nc=IN IP4 192.0.2.1\r\n" {
		t.Fatalf("%q -> %#v", b, msgs)
	}
	if _, err := Parse(b); err == nil {
		t.Error("Parse accepted a piggybacked datagram")
	}
}

func TestSerializeReusedBufferAllocs(t *testing.T) {
	c := mustCommand(t, "NTFY 3003 aaln/1@rgw1.example.net MGCP 1.0\nN: ca@ca.example.net:2727\nX: 1a02\nO: D/2,D/0,D/1,D/7\n")
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = c.AppendTo(buf[:0]) }); n != 0 {
		t.Errorf("AppendTo into a reused buffer allocates %v times", n)
	}
}
