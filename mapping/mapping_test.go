package mapping

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func env(vals map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
}

func boolp(b bool) *bool { return &b }

func sample() Config {
	return Config{
		Peers: []Peer{
			{Name: "pbx", Host: "192.0.2.20", Rewrite: RewriteRefs{ToSIP: "strip-9"}},
			{Name: "provider", Host: "sip.example.com", Transport: "tls", Auth: "ip", Addresses: []string{"198.51.100.0/24"}},
		},
		Gateways: []Gateway{
			{Name: "rgw", Domain: "RGW.example.net", Quirks: "mine"},
			{Name: "tgw", Domain: "tgw.example.net", Address: "learn", DialPlan: "short"},
		},
		Quirks: []QuirkProfile{{Name: "mine", Base: "ncs", ResponseAck: boolp(false)}},
		DialPlans: []DialPlan{
			{Name: "nanp", DigitMap: "(x.T)", Default: true},
			{Name: "short", DigitMap: "(xx)"},
		},
		Rewrites: []RewriteSet{
			{Name: "strip-9", Rules: []RewriteRule{{NumberMatch: NumberMatch{Prefix: "9"}, Replace: "", Stop: true}}},
			{Name: "e164", Rules: []RewriteRule{
				{NumberMatch: NumberMatch{Regex: `^1?([2-9]\d{9})$`}, Replace: "+1$1", Stop: true},
				{NumberMatch: NumberMatch{Prefix: "011"}, Replace: "+"},
				{NumberMatch: NumberMatch{Exact: "0"}, Replace: "2000"},
			}},
		},
		Lines: []Line{
			{Gateway: "rgw", Endpoint: "aaln/{1..24}", User: "{n+2000}", Password: "${PW_{n}}", DisplayName: "Line {n}", Peer: "pbx"},
			{Gateway: "rgw", Endpoint: "aaln/25", User: "2099", Password: "x", Peer: "pbx", Features: Features{Hotline: "2000", CallWaiting: boolp(false), DTMF: "INFO"}},
		},
		Trunks: []Trunk{{Name: "pstn", Gateway: "tgw", Endpoints: []string{"ds/ds1-1/{01..24}"}, Peer: "provider",
			DIDs: []string{"15551230000-15551230099", "/^44\\d+$/"}, Rewrite: RewriteRefs{ToSIP: "e164"}}},
		HuntGroups: []HuntGroup{{Name: "sales", Lines: []string{"rgw/aaln/1", "rgw/aaln/2"}, Strategy: "ring-all"}},
		Routes: Routes{
			Outbound: []OutboundRoute{
				{Name: "internal", Match: NumberMatch{Regex: `^20\d\d$`}, Local: true},
				{Name: "intl", Match: NumberMatch{Prefix: "011"}, Trunk: "pstn"},
				{Name: "rest", Peer: "pbx", LocalFallback: true},
			},
			Inbound: []InboundRoute{
				{Name: "sales-did", Peer: "provider", Match: NumberMatch{Exact: "15551230001"}, HuntGroup: "sales"},
				{Name: "reception", Match: NumberMatch{Exact: "0"}, Line: "rgw/aaln/25"},
			},
		},
	}
}

func compileSample(t testing.TB) *Rules {
	t.Helper()
	pw := map[string]string{}
	for i := 1; i <= 24; i++ {
		pw[fmt.Sprintf("PW_%d", i)] = fmt.Sprintf("pw%d", i)
	}
	r, err := New(sample(), Options{LookupEnv: env(pw)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookups(t *testing.T) {
	r := compileSample(t)
	tests := []struct {
		name, local, domain string
		wantID, wantUser    string
	}{
		{"exact", "aaln/1", "RGW.example.net", "rgw/aaln/1", "2001"},
		{"case-insensitive", "AALN/24", "rgw.EXAMPLE.net", "rgw/aaln/24", "2024"},
		{"single", "aaln/25", "rgw.example.net", "rgw/aaln/25", "2099"},
		{"unknown endpoint", "aaln/26", "rgw.example.net", "", ""},
		{"unknown domain", "aaln/1", "other.example.net", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := r.LineByEndpoint(tt.local, tt.domain)
			if tt.wantID == "" {
				if l != nil {
					t.Fatalf("found %s", l.ID)
				}
				return
			}
			if l == nil || l.ID != tt.wantID || l.User != tt.wantUser {
				t.Fatalf("got %+v", l)
			}
			if r.LineBySIPUser("pbx", tt.wantUser) != l || r.LineByID(tt.wantID) != l {
				t.Error("lookups disagree")
			}
		})
	}
	l := r.LineByEndpoint("aaln/7", "rgw.example.net")
	if l.Password.Reveal() != "pw7" || l.DisplayName != "Line 7" || l.AuthUser != "2007" || l.DialPlan.Name != "nanp" || l.EndpointName() != "aaln/7@RGW.example.net" {
		t.Errorf("template expansion: %+v", l)
	}
	if f := r.LineByID("rgw/aaln/25").Features; f.CallWaiting || !f.ThreeWay || f.Hotline != "2000" || f.DTMF != "info" {
		t.Errorf("features %+v", f)
	}
	if tr := r.TrunkByEndpoint("ds/ds1-1/07", "tgw.example.net"); tr == nil || tr.Name != "pstn" || len(tr.Endpoints) != 24 || tr.Endpoints[0] != "ds/ds1-1/01" {
		t.Errorf("trunk %+v", tr)
	}
	if r.LineBySIPUser("provider", "2001") != nil {
		t.Error("SIP users are per peer")
	}
	g := r.GatewayByDomain("rgw.example.net")
	if g == nil || g.Quirks.ResponseAck || g.Quirks.RingbackSignal != "L/rt" || g.Quirks.ProtocolProfile != "NCS 1.0" || g.Port != 2427 || g.Address != "RGW.example.net" {
		t.Errorf("gateway with quirks from ncs: %+v", g)
	}
	if tg := r.Gateway("tgw"); !tg.Learn || tg.DialPlan.Name != "short" {
		t.Errorf("tgw %+v", tg)
	}
	p := r.Peer("provider")
	if p.Port != 5061 || p.Register || p.Addresses[0].String() != "198.51.100.0/24" || p.Registrar != "sip.example.com:5061" {
		t.Errorf("provider %+v", p)
	}
}

func TestRoutes(t *testing.T) {
	r := compileSample(t)
	out := []struct{ number, route string }{
		{"2005", "internal"}, {"01144123", "intl"}, {"5551234", "rest"}, {"20055", "rest"},
	}
	for _, tt := range out {
		if got := r.RouteOutbound(tt.number); got == nil || got.Name != tt.route {
			t.Errorf("outbound %s: %+v, want %s", tt.number, got, tt.route)
		}
	}
	in := []struct {
		peer, user, want string
	}{
		{"provider", "15551230001", "hunt:sales"},
		{"pbx", "15551230001", "none"}, // DID range belongs to the provider's trunk
		{"provider", "15551230042", "trunk:pstn"},
		{"provider", "44123", "trunk:pstn"},
		{"pbx", "0", "line:rgw/aaln/25"},
		{"pbx", "2003", "line:rgw/aaln/3"},
		{"provider", "2003", "none"},
		{"provider", "15551230100", "none"},
	}
	for _, tt := range in {
		tg, ok := r.RouteInbound(tt.peer, tt.user)
		got := "none"
		switch {
		case ok && tg.Line != nil:
			got = "line:" + tg.Line.ID
		case ok && tg.Trunk != nil:
			got = "trunk:" + tg.Trunk.Name
		case ok && tg.HuntGroup != nil:
			got = "hunt:" + tg.HuntGroup.Name
		}
		if got != tt.want {
			t.Errorf("inbound %s from %s: %s, want %s", tt.user, tt.peer, got, tt.want)
		}
	}
}

func TestRewriting(t *testing.T) {
	r := compileSample(t)
	e164 := r.Trunk("pstn").ToSIP
	tests := []struct{ in, want string }{
		{"2125551234", "+12125551234"},
		{"12125551234", "+12125551234"},
		{"011441234", "+441234"},
		{"0", "2000"},
		{"123", "123"},
	}
	for _, tt := range tests {
		if got := e164.Apply(tt.in); got != tt.want {
			t.Errorf("e164 %s = %s, want %s", tt.in, got, tt.want)
		}
	}
	if got := r.Peer("pbx").ToSIP.Apply("95551234"); got != "5551234" {
		t.Errorf("strip-9: %s", got)
	}
	var none *Rewriter
	if none.Apply("42") != "42" {
		t.Error("nil rewriter")
	}
	// Without stop, later rules see the rewritten number.
	chain, err := New(Config{Rewrites: []RewriteSet{{Name: "c", Rules: []RewriteRule{
		{NumberMatch: NumberMatch{Prefix: "0"}, Replace: "44"},
		{NumberMatch: NumberMatch{Prefix: "44"}, Replace: "+44"},
		{NumberMatch: NumberMatch{Prefix: "+"}, Replace: "00", Stop: true},
		{Replace: "never"},
	}}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := chain.Rewriters[0].Apply("0207"); got != "0044207" {
		t.Errorf("chain: %s", got)
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	cfg := sample()
	cfg.Lines = append(cfg.Lines, Line{Gateway: "nope", Endpoint: "aaln/1", User: "1"}, Line{Gateway: "rgw", Endpoint: "aaln/3", User: "3001", Password: "x", Peer: "pbx"})
	cfg.Peers[1].Transport = "smoke"
	pw := map[string]string{}
	for i := 2; i <= 24; i++ {
		pw[fmt.Sprintf("PW_%d", i)] = "x"
	}
	cfg.Lines[0].Endpoint = "aaln/{2..24}"
	cfg.Lines[0].User = "{n+3000}"
	cfg.Lines = append(cfg.Lines, Line{Gateway: "rgw", Endpoint: "aaln/1", User: "4001", Password: "${PW_1}", Peer: "pbx"})
	_, err := New(cfg, Options{LookupEnv: env(pw), CheckDigitMap: func(s string) error {
		if s == "(xx)" {
			return errors.New("pretend it is bad")
		}
		return nil
	}})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v", err)
	}
	want := []string{
		`dial_plans[1].digit_map: pretend it is bad`,
		`peers[1].transport: must be udp, tcp or tls, not "smoke"`,
		`lines[2].gateway: no gateway named "nope" (gateways: rgw, tgw)`,
		`lines[3]: endpoint aaln/3@RGW.example.net is already bound by lines[0]`,
		`lines[4].password: environment variable PW_1 is not set`,
	}
	got := strings.Split(e.Error(), "\n")
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("missing %q in\n%s", w, e.Error())
		}
	}
}

func TestSecretRedaction(t *testing.T) {
	s := Secret("p4ss")
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %#v %+v", s, s, s, s, struct{ P Secret }{s})} {
		if strings.Contains(out, "p4ss") {
			t.Errorf("leaked: %s", out)
		}
	}
	if b, _ := s.MarshalText(); string(b) != "******" || s.Reveal() != "p4ss" || Secret("").String() != "" {
		t.Error("secret methods")
	}
}

func TestHolderSwap(t *testing.T) {
	a := compileSample(t)
	b, err := New(Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHolder(a)
	inCall := h.Load() // a call keeps the rules it started with
	if old := h.Swap(b); old != a || h.Load() != b || inCall.LineByID("rgw/aaln/1") == nil {
		t.Fatal("swap")
	}
	if b.DefaultDialPlan().DigitMap != BuiltinDigitMap {
		t.Error("builtin default dial plan")
	}
}

// generated builds n lines over n/100 gateways with 100 lines each.
func generated(n int) Config {
	cfg := Config{Peers: []Peer{{Name: "pbx", Host: "192.0.2.1", Auth: "ip"}}}
	for g := 0; g < n/100; g++ {
		name := fmt.Sprintf("gw%d", g)
		cfg.Gateways = append(cfg.Gateways, Gateway{Name: name, Domain: name + ".example.net"})
		cfg.Lines = append(cfg.Lines, Line{Gateway: name, Endpoint: "aaln/{1..100}", User: fmt.Sprintf("{n+%d}", 100000+g*100)})
	}
	return cfg
}

func BenchmarkCompile100kLines(b *testing.B) {
	cfg := generated(100000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(cfg, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookup100kLines(b *testing.B) {
	r, err := New(generated(100000), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("by-endpoint", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r.LineByEndpoint("aaln/57", "gw731.example.net") == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("by-endpoint-mixed-case", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r.LineByEndpoint("AALN/57", "GW731.example.net") == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("by-sip-user", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r.LineBySIPUser("pbx", "173157") == nil {
				b.Fatal("missing")
			}
		}
	})
}

func BenchmarkRewriteChain20(b *testing.B) {
	set := RewriteSet{Name: "long"}
	for i := 0; i < 19; i++ {
		set.Rules = append(set.Rules, RewriteRule{NumberMatch: NumberMatch{Prefix: fmt.Sprintf("%03d", 900+i)}, Replace: "x"})
	}
	set.Rules = append(set.Rules, RewriteRule{NumberMatch: NumberMatch{Regex: `^1?([2-9]\d{9})$`}, Replace: "+1$1", Stop: true})
	r, err := New(Config{Rewrites: []RewriteSet{set}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	rw := r.Rewriters[0]
	b.ReportAllocs()
	for b.Loop() {
		if rw.Apply("2125551234") != "+12125551234" {
			b.Fatal("wrong")
		}
	}
}

func BenchmarkRouteOutbound(b *testing.B) {
	r := compileSample(b)
	b.ReportAllocs()
	for b.Loop() {
		if r.RouteOutbound("5551234") == nil {
			b.Fatal("no route")
		}
	}
}

// BenchmarkMemoryPerLine reports the heap the compiled rules keep per line.
func BenchmarkMemoryPerLine(b *testing.B) {
	cfg := generated(100000)
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := New(cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(r.Lines)), "B/line")
		runtime.KeepAlive(r)
	}
}

func TestExpandEnv(t *testing.T) {
	look := env(map[string]string{"A": "1", "B": "two"})
	for in, want := range map[string]string{"plain": "plain", "${A}": "1", "x-${A}-${B}": "x-1-two", "": ""} {
		if got, err := ExpandEnv(in, look); err != nil || got != want {
			t.Errorf("ExpandEnv(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{"${NOPE}": "environment variable NOPE is not set", "a${": "unterminated ${ reference", "${}": "empty ${} reference"} {
		if _, err := ExpandEnv(in, look); err == nil || err.Error() != want {
			t.Errorf("ExpandEnv(%q) error %v, want %q", in, err, want)
		}
	}
}

func TestGatewaySourcePort(t *testing.T) {
	for _, tc := range []struct {
		port    int
		learn   bool
		wantErr string
	}{
		{port: 2427},
		{port: 0},
		{port: 70000, wantErr: "gateways[0].source_port: 70000 is not a port number"},
		{port: 2427, learn: true, wantErr: "gateways[0].source_port: cannot be checked for a gateway whose address is learnt"},
	} {
		cfg := sample()
		cfg.Gateways[0].SourcePort = tc.port
		if tc.learn {
			cfg.Gateways[0].Address = "learn"
		}
		pw := map[string]string{}
		for i := 1; i <= 24; i++ {
			pw[fmt.Sprintf("PW_%d", i)] = "x"
		}
		r, err := New(cfg, Options{LookupEnv: env(pw)})
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("source_port %d: %v", tc.port, err)
			} else if got := r.Gateways[0].SourcePort; got != tc.port {
				t.Errorf("source_port %d compiled to %d", tc.port, got)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("source_port %d learn %v: %v, want %q", tc.port, tc.learn, err, tc.wantErr)
		}
	}
}

func TestExpandEnvListsEveryMissingName(t *testing.T) {
	lookup := func(k string) (string, bool) { return "v", k == "SET" }
	_, err := ExpandEnv("${A}:${SET}:${B}", lookup)
	var me *MissingEnvError
	if !errors.As(err, &me) || strings.Join(me.Names, ",") != "A,B" {
		t.Fatalf("err = %v", err)
	}
	if err.Error() != "2 environment variables are not set: A, B" {
		t.Fatalf("message %q", err)
	}
}

func TestCodecNames(t *testing.T) {
	cfg := Config{
		Peers:     []Peer{{Name: "pbx", Host: "192.0.2.20"}},
		Gateways:  []Gateway{{Name: "gw", Domain: "gw.example.net", Codecs: []string{"ulaw", "pcma", "g729", "iLBC"}}},
		DialPlans: []DialPlan{{Name: "p", DigitMap: "(x.T)", Default: true}},
	}
	r, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Gateways[0].Codecs, ","); got != "PCMU,PCMA,G729,iLBC" {
		t.Fatalf("codecs %s, want the SDP spellings", got)
	}
	if cfg.Gateways[0].Codecs[0] != "ulaw" {
		t.Fatal("New changed the configuration it was given")
	}
	cfg.Gateways[0].Codecs = []string{"PCM", "wideband"}
	_, err = New(cfg, Options{})
	msg := fmt.Sprint(err)
	if !strings.Contains(msg, `gateways[0].codecs[0]: "PCM" is not a codec mgsip knows (did you mean "PCMA"? codecs: `) ||
		!strings.Contains(msg, `gateways[0].codecs[1]: "wideband" is not a codec mgsip knows (codecs: `) {
		t.Fatalf("err = %v", err)
	}
}

func TestSuggest(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"gw9", "gw1"}, {"asterix", "asterisk"}, {"Asterisk", "asterisk"}, {"pbx", ""}, {"cisco", ""}, {"cisco-io", "cisco-ios"},
		{"asetrisk", "asterisk"},
	} {
		if got := Suggest(c.in, []string{"gw1", "asterisk", "cisco-ios", "freeswitch"}); got != c.want {
			t.Errorf("Suggest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Short keys: a swap of two neighbouring letters is one edit, so
	// that a five-letter key gets a suggestion as a long one does.
	keys := []string{"level", "format"}
	for _, c := range []struct{ in, want string }{
		{"levle", "level"}, {"lvel", "level"}, {"leevl", "level"}, {"fromat", "format"}, {"lg", ""}, {"size", ""},
	} {
		if got := Suggest(c.in, keys); got != c.want {
			t.Errorf("Suggest(%q, level/format) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		a, b string
		d    int
	}{{"levle", "level", 1}, {"abc", "abc", 0}, {"", "abc", 3}, {"ca", "abc", 3}, {"kitten", "sitting", 3}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
	if got := Hint("x", "peers", nil); got != "(there are no peers)" {
		t.Errorf("Hint with no names: %q", got)
	}
}

// A route naming a trunk group that does not exist is refused with the
// route's key and the groups there are (outbound and inbound).
func TestRouteUnknownTrunk(t *testing.T) {
	cfg := sample()
	cfg.Routes.Outbound = append(cfg.Routes.Outbound, OutboundRoute{Name: "out", Match: NumberMatch{Prefix: "9"}, Trunk: "pstm"})
	cfg.Routes.Inbound = append(cfg.Routes.Inbound, InboundRoute{Name: "in", Match: NumberMatch{Exact: "5"}, Trunk: "nothing"})
	pw := map[string]string{}
	for i := 1; i <= 24; i++ {
		pw[fmt.Sprintf("PW_%d", i)] = "x"
	}
	_, err := New(cfg, Options{LookupEnv: env(pw)})
	if err == nil {
		t.Fatal("accepted")
	}
	out, in := len(cfg.Routes.Outbound)-1, len(cfg.Routes.Inbound)-1
	want := []string{
		fmt.Sprintf(`routes.outbound[%d].trunk: no trunk group named "pstm" (did you mean "pstn"? trunk groups: pstn)`, out),
		fmt.Sprintf(`routes.inbound[%d].trunk: no trunk group named "nothing" (trunk groups: pstn)`, in),
	}
	if got := strings.Split(err.Error(), "\n"); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got\n%v\nwant exactly\n%s", err, strings.Join(want, "\n"))
	}
}
