package chanmgcp

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/sim"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// zeros makes the generated secrets predictable in golden files.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i)
	}
	return len(b), nil
}

// envOf parses an env file into a lookup function.
func envOf(t *testing.T, env []byte) func(string) (string, bool) {
	t.Helper()
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(env))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("env file line %q", line)
		}
		m[k] = v
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// mustCheck runs the generated configuration through what check-config runs.
func mustCheck(t *testing.T, res *Result) *config.Loaded {
	t.Helper()
	loaded, err := config.Load("mgsip.yaml", res.Config, envOf(t, res.Env))
	if err != nil {
		t.Fatalf("the generated configuration does not pass check-config:\n%v\n---\n%s", err, res.Config)
	}
	return loaded
}

func importFile(t *testing.T, path string, opts Options) *Result {
	t.Helper()
	f, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Rand == nil {
		opts.Rand = zeros{}
	}
	opts.Source = filepath.Base(path)
	res, err := Convert(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func notesText(res *Result) string {
	var b strings.Builder
	for _, n := range res.Notes {
		b.WriteString(n.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("inc.conf", "[tpl](!)\ncontext = from-tpl ; a comment\ncallwaiting = no\n")
	main := write("mgcp.conf", strings.Join([]string{
		"[general]",                // 1
		"#include inc.conf",        // 2
		";-- a block",              // 3
		"host = nowhere --;",       // 4
		"[gw](tpl)",                // 5
		"host = 192.0.2.1",         // 6
		"callerid = \"A\\;B\" <1>", // 7
		"line => aaln/1",           // 8
		"[gw](+)",                  // 9
		"line = aaln/2",            // 10
		"#exec /bin/true",          // 11
		"what is this",             // 12
	}, "\n"))
	f, err := ParseFile(main)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range f.Sections {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "general,tpl,gw" {
		t.Fatalf("sections %s", got)
	}
	if len(f.Sections[0].Entries) != 0 {
		t.Fatalf("the block comment leaked: %+v", f.Sections[0].Entries)
	}
	if !f.Sections[1].Template {
		t.Fatal("[tpl](!) is not a template")
	}
	gw := f.Sections[2]
	var got []string
	for _, e := range gw.Entries {
		got = append(got, filepath.Base(e.Pos.File)+":"+itoa(e.Pos.Line)+" "+e.Key+"="+e.Value)
	}
	want := "inc.conf:2 context=from-tpl|inc.conf:3 callwaiting=no|mgcp.conf:6 host=192.0.2.1|mgcp.conf:7 callerid=\"A;B\" <1>|mgcp.conf:8 line=aaln/1|mgcp.conf:10 line=aaln/2"
	if strings.Join(got, "|") != want {
		t.Fatalf("entries\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
	probs := notesText(&Result{Notes: f.Problems})
	for _, w := range []string{"mgcp.conf:11: #exec is not followed", "mgcp.conf:12: not a setting"} {
		if !strings.Contains(probs, w) {
			t.Errorf("problems lack %q:\n%s", w, probs)
		}
	}

	for name, text := range map[string]string{
		"unknown template": "[gw](nope)\n",
		"add to nothing":   "[gw](+)\n",
		"missing include":  "#include nothere.conf\n",
		"include loop":     "#include loop.conf\n",
		"unclosed":         "[gw\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := write("loop.conf", text)
			if _, err := ParseFile(p); err == nil {
				t.Fatal("no error")
			} else if !strings.Contains(err.Error(), "loop.conf:") {
				t.Fatalf("error %q has no file:line", err)
			}
		})
	}
	if _, err := ParseFile(write("try.conf", "#tryinclude nothere.conf\n[gw]\n")); err != nil {
		t.Fatalf("#tryinclude of a missing file: %v", err)
	}
}

func itoa(n int) string { return strconvItoa(n) }

// TestSample imports Asterisk's own sample: as shipped only [general] is
// active (the gateways are commented out), so it gives the dial plan and
// no line; with its example gateways uncommented it gives five gateways.
func TestSample(t *testing.T) {
	res := importFile(t, "testdata/mgcp.conf.sample", Options{})
	if res.Gateways != 0 || res.Lines != 0 {
		t.Fatalf("sample as shipped: %d gateways %d lines", res.Gateways, res.Lines)
	}
	loaded := mustCheck(t, res)
	dp := loaded.File.Config.DialPlans[0]
	if dp.FirstDigitTimeout != 30*time.Second || dp.InterDigitTimeout != 10*time.Second {
		t.Fatalf("dial plan %+v, want firstdigittimeout 30s and gendigittimeout 10s", dp)
	}
	if !strings.Contains(notesText(res), "mgcp.conf.sample:17: matchdigittimeout:") {
		t.Fatalf("notes:\n%s", notesText(res))
	}

	// The sample's example gateways, uncommented (";key", ";[name]",
	// ";line =>"): the sample's own documentation of each setting.
	data, err := os.ReadFile("testdata/mgcp.conf.sample")
	if err != nil {
		t.Fatal(err)
	}
	example := regexp.MustCompile(`(?m)^;([\[a-z])`).ReplaceAll(data, []byte("$1"))
	p := filepath.Join(t.TempDir(), "mgcp.conf")
	if err := os.WriteFile(p, example, 0o644); err != nil {
		t.Fatal(err)
	}
	res = importFile(t, p, Options{})
	if res.Gateways != 4 || res.Lines != 7 || res.Trunks != 0 {
		t.Fatalf("uncommented sample: %d gateways %d lines %d trunks\n%s", res.Gateways, res.Lines, res.Trunks, res.Config)
	}
	loaded = mustCheck(t, res)
	notes := notesText(res)
	for _, w := range []string{
		":95: slowsequence: not mapped",
		":101: amaflags: not mapped",
		":116: setvar=one=1", // absent: setvar is mapped; see below
	} {
		if strings.HasSuffix(w, "setvar=one=1") {
			if strings.Contains(notes, "setvar") {
				t.Errorf("setvar is mapped to the PBX side, yet noted:\n%s", notes)
			}
			continue
		}
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
	for _, w := range []string{"a second [192.168.1.20]: merged", "aaln/1 is defined again", "pktcgatealloc: not mapped", "hangupongateremove: not mapped",
		"dtmfmode: none", "callreturn: not mapped", "cancallforward: call forwarding is the PBX's"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
	gws := map[string]string{}
	for _, g := range loaded.File.Config.Gateways {
		gws[g.Name] = g.Address + " " + g.Quirks
	}
	want := map[string]string{"dlinkgw": "192.168.0.64 ", "192.168.1.20": "192.168.1.20 generic", "dph100": "learn ",
		"sbv5121e-mta.test.local": "10.0.1.3 ncs"}
	for k, v := range want {
		if gws[k] != v {
			t.Errorf("gateway %s: %q, want %q (all: %v)", k, gws[k], v, gws)
		}
	}
	// Per-line settings carry on to the next line until changed; the
	// callerid number becomes the SIP user when it is unique.
	pbx := string(res.PBX)
	for _, w := range []string{"[123]\ntype = endpoint\ncontext = local", "callerid = \"Duane Cox\" <456>",
		"set_var = one=1\nset_var = two=2\n", "[3622622226]", "accountcode = test-3622622226", "direct_media = no", "dtmf_mode = inband"} {
		if !strings.Contains(pbx, w) {
			t.Errorf("pjsip side lacks %q", w)
		}
	}
	// The second [192.168.1.20] redefines aaln/1 (<123>): one line 123.
	if strings.Count(pbx, "[123]\ntype = endpoint") != 1 {
		t.Errorf("line 123 defined %d times", strings.Count(pbx, "[123]\ntype = endpoint"))
	}
}

// TestSite is a realistic file of our own, with a template, an include, a
// trunk gateway and settings mgsip cannot map; the outputs are golden.
func TestSite(t *testing.T) {
	for _, kind := range []string{"pjsip", "sip"} {
		t.Run(kind, func(t *testing.T) {
			res := importFile(t, "testdata/site/mgcp.conf", Options{SIPUsers: kind, PBXHost: "192.0.2.20", SIPListen: "192.0.2.10:5070"})
			loaded := mustCheck(t, res)
			if res.Gateways != 4 || res.Lines != 6 || res.Trunks != 2 {
				t.Fatalf("%d gateways %d lines %d trunks", res.Gateways, res.Lines, res.Trunks)
			}
			lines := map[string]string{}
			for _, l := range loaded.Rules.Lines {
				lines[l.User] = l.ID
			}
			if lines["2001"] != "vg224.example.net/aaln/1" || lines["3622622226"] != "mta1.cable.example.net/aaln/2" {
				t.Fatalf("lines %v", lines)
			}
			golden(t, "testdata/site/mgsip.yaml.golden", res.Config)
			golden(t, "testdata/site/"+kind+".conf.golden", res.PBX)
			golden(t, "testdata/site/mgsip.env.golden", res.Env)
			golden(t, "testdata/site/notes.golden", []byte(notesText(res)))
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (run with -update and review the diff):\n%s", path, got)
	}
}

func TestSecretsCarriedOver(t *testing.T) {
	first := importFile(t, "testdata/roundtrip/mgcp.conf", Options{Rand: strings.NewReader(strings.Repeat("x", 100))})
	prev := map[string]string{}
	lookup := envOf(t, first.Env)
	for _, k := range []string{"LINE_SECRET_DEMO_GW_INVALID_AALN_1", "LINE_SECRET_DEMO_GW_INVALID_AALN_2"} {
		v, ok := lookup(k)
		if !ok || v == "" {
			t.Fatalf("no %s in\n%s", k, first.Env)
		}
		prev[k] = v
	}
	delete(prev, "LINE_SECRET_DEMO_GW_INVALID_AALN_2")
	again := importFile(t, "testdata/roundtrip/mgcp.conf", Options{Secrets: prev, Rand: strings.NewReader(strings.Repeat("y", 100))})
	l2 := envOf(t, again.Env)
	if v, _ := l2("LINE_SECRET_DEMO_GW_INVALID_AALN_1"); v != prev["LINE_SECRET_DEMO_GW_INVALID_AALN_1"] {
		t.Fatalf("secret of line 1 not kept: %q", v)
	}
	if a, _ := lookup("LINE_SECRET_DEMO_GW_INVALID_AALN_2"); func() bool { b, _ := l2("LINE_SECRET_DEMO_GW_INVALID_AALN_2"); return a == b }() {
		t.Fatal("a line without a carried-over secret kept the old one")
	}
	if !strings.Contains(string(again.PBX), "password = "+prev["LINE_SECRET_DEMO_GW_INVALID_AALN_1"]) {
		t.Fatal("the PBX side does not carry the kept secret")
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := Convert(&File{}, Options{SIPUsers: "iax"}); err == nil || !strings.Contains(err.Error(), "pjsip or sip") {
		t.Fatalf("err = %v", err)
	}
}

// TestRoundTrip imports a chan_mgcp gateway with two lines and plays the
// demo call on the result: the simulator's line 1 dials line 2's number
// through the PBX stand-in, line 2 rings and answers, RTP flows both ways.
func TestRoundTrip(t *testing.T) {
	res := importFile(t, "testdata/roundtrip/mgcp.conf", Options{Rand: nil})
	loaded := mustCheck(t, res)
	lookup := envOf(t, res.Env)
	for _, k := range []string{"LINE_SECRET_DEMO_GW_INVALID_AALN_1", "LINE_SECRET_DEMO_GW_INVALID_AALN_2"} {
		v, _ := lookup(k)
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := sim.RunDemo(ctx, &out, loaded.File); err != nil {
		t.Fatalf("the imported configuration does not carry a call: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "VERDICT: OK: 1001 called 1002") {
		t.Fatalf("demo output:\n%s", out.String())
	}
}

func strconvItoa(n int) string { return strconv.Itoa(n) }

// TestNothingDroppedSilently: Asterisk's caller id quoting is read (escaped
// quotes in the name), and every setting that is not carried over is
// named with its file:line: a bad caller id, a setting after the last
// line, the PBX-side settings of trunk channels, an unknown key or a
// per-line setting in [general] (chan_mgcp reads neither there). direct_media is written only where the source set it.
func TestNothingDroppedSilently(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mgcp.conf")
	conf := `[general]
port = 2727
frobnicate = 1
canreinvite = no
language = de

[vg224]
host = 192.0.2.10
callerid="Quoted \"Nick\"" <2004>
line = aaln/4
callerid = "Unclosed <2005>
line = aaln/5
callerid = Plain Name <2006>
canreinvite = no
line = aaln/6
language = fr

[trunkgw]
host = 192.0.2.11
language = fr
accountcode = 77
trunk = ds/ds1-1/1
context = other
trunk = ds/ds1-1/2
`
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"pjsip", "sip"} {
		res := importFile(t, path, Options{SIPUsers: kind})
		mustCheck(t, res)
		notes := notesText(res)
		for _, want := range []string{
			"mgcp.conf:3: frobnicate: not a chan_mgcp setting mgsip knows",
			"mgcp.conf:4: canreinvite: chan_mgcp ignores it in [general]",
			"mgcp.conf:5: language: chan_mgcp ignores per-line settings in [general]; set it in the gateway's category; not carried over",
			"mgcp.conf:11: callerid: \"Unclosed <2005>: the quoted name is not closed; not carried over",
			"mgcp.conf:16: language: after the last line or trunk of [vg224]",
			"mgcp.conf:20: language: trunk channels are one mgsip trunk group",
			"mgcp.conf:21: accountcode: trunk channels are one mgsip trunk group",
			"mgcp.conf:24: context: the PBX endpoint trunkgw-trunk has one context",
		} {
			if !strings.Contains(notes, want) {
				t.Errorf("%s: the notes do not say %q:\n%s", kind, want, notes)
			}
		}
		cfg := string(res.Config)
		if !strings.Contains(cfg, `user: "2004"`) || !strings.Contains(cfg, `display_name: "Quoted \"Nick\""`) {
			t.Errorf("%s: aaln/4 is not user 2004 with its display name:\n%s", kind, cfg)
		}
		if !strings.Contains(cfg, `user: "vg224-aaln-5"`) || !strings.Contains(cfg, `display_name: "Plain Name"`) {
			t.Errorf("%s: aaln/5 (no caller id) or aaln/6 (unquoted name):\n%s", kind, cfg)
		}
		pbx := string(res.PBX)
		for _, want := range []string{`callerid = "Quoted \"Nick\"" <2004>`, `callerid = "Plain Name" <2006>`} {
			if !strings.Contains(pbx, want) {
				t.Errorf("%s: the PBX file has no %q:\n%s", kind, want, pbx)
			}
		}
		// Only aaln/6 set canreinvite (line 14); [general]'s is ignored
		// as chan_mgcp ignores it, and nothing else asks for direct media.
		dm := regexp.MustCompile(`(?m)^direct_?media = .*$`).FindAllString(pbx, -1)
		if len(dm) != 1 || !strings.HasPrefix(dm[0], "direct") || !strings.Contains(dm[0], "= no  ; ") || !strings.HasSuffix(dm[0], "mgcp.conf:14") {
			t.Errorf("%s: direct media lines %q, want one (aaln/6, mgcp.conf:14)", kind, dm)
		}
		if strings.Contains(pbx, "language = de") {
			t.Errorf("%s: [general]'s language reached a line, which chan_mgcp never did:\n%s", kind, pbx)
		}
		if strings.Contains(pbx, `<Quoted`) || strings.Contains(pbx, `"Unclosed`) {
			t.Errorf("%s: a mangled caller id in the PBX file:\n%s", kind, pbx)
		}
	}
}

func TestParseCallerID(t *testing.T) {
	for _, c := range []struct {
		in, name, num string
		bad           bool
	}{
		{`"Quoted \"Nick\"" <2004>`, `Quoted "Nick"`, "2004", false},
		{`"Back\\slash" <1>`, `Back\slash`, "1", false},
		{`"Name" <+15551234>`, "Name", "+15551234", false},
		{`Name <2001>`, "Name", "2001", false},
		{`<2001>`, "", "2001", false},
		{`"Only name"`, "Only name", "", false},
		{`2001`, "", "2001", false},
		{`Reception`, "Reception", "", false},
		{`"Unclosed <2005>`, "", "", true},
		{`"Name" 2001`, "", "", true},
		{`"Name" <20 01>`, "", "", true},
		{`Na"me <1>`, "", "", true},
		{`"Name" <1> trailing`, "", "", true},
	} {
		name, num, err := parseCallerID(c.in)
		if (err != nil) != c.bad || name != c.name || num != c.num {
			t.Errorf("parseCallerID(%s) = %q, %q, %v", c.in, name, num, err)
		}
		if err == nil {
			// What the writer produces reads back the same.
			n2, num2, err := parseCallerID(quoteCallerID(name, num))
			if err != nil || n2 != name || num2 != num {
				t.Errorf("round trip of %s: %q %q %v", quoteCallerID(name, num), n2, num2, err)
			}
		}
	}
}
