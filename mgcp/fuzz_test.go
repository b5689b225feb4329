package mgcp

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func addCorpusSeeds(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzParse checks that parsing never panics and that whatever parses
// serializes to a form that parses back to the same structure and
// serializes identically (a fixed point after one round).
func FuzzParse(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := ParseDatagram(data)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		out := AppendDatagram(nil, msgs...)
		again, err := ParseDatagram(out)
		if err != nil {
			t.Fatalf("serialized form does not parse: %v\ninput: %q\noutput: %q", err, data, out)
		}
		if len(msgs) == 1 && !reflect.DeepEqual(msgs, again) {
			t.Fatalf("round trip changed the message\ninput: %q\noutput: %q\n%#v\n%#v", data, out, msgs[0], again[0])
		}
		if out2 := AppendDatagram(nil, again...); !bytes.Equal(out, out2) {
			t.Fatalf("serialization not stable:\n%q\n%q", out, out2)
		}
	})
}

// FuzzDigitMap compiles arbitrary maps and matches arbitrary strings.
func FuzzDigitMap(f *testing.F) {
	for _, s := range [][2]string{
		{"(*xx|[2-9]xxx|9[2-9]xxxxxx|91[2-9]xx[2-9]xxxxxx|x.T)", "2017"},
		{"(0T|00T|[1-7]xxx|8xxxxxxx|#xxxxxxx|*xx|91xxxxxxxxxx|9011x.T)", "9011441234T"},
		{"xx.S|1L", "1"}, {"[0-9#*T]", "T"}, {"(", ""}, {"x..", "1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, m, dialed string) {
		dm, err := CompileDigitMap(m)
		if err != nil {
			if _, ok := err.(*DigitMapError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		r := dm.Match(dialed)
		if r < NoMatch || r > MatchAfterTimer {
			t.Fatalf("result %d out of range", r)
		}
		// A match stays a match when the timer expires (once: after a
		// timer event the string is complete and further events do not
		// belong to it).
		endsInTimer := dialed != "" && strings.ContainsRune("TtSsLl", rune(dialed[len(dialed)-1]))
		if (r == Match || r == MatchAfterTimer) && !endsInTimer {
			if r2 := dm.Match(dialed + "T"); r2 != Match && r2 != MatchAfterTimer {
				t.Fatalf("%q on %q: %v, then %v after T", dialed, m, r, r2)
			}
		}
		// NoMatch is final: no more digits can help.
		if r == NoMatch && dialed != "" {
			if r2 := dm.Match(dialed + "1"); r2 != NoMatch {
				t.Fatalf("%q on %q: nomatch then %v", dialed, m, r2)
			}
		}
	})
}

// FuzzLocalConnectionOptions checks that L: values round-trip.
func FuzzLocalConnectionOptions(f *testing.F) {
	for _, s := range []string{"p:20, a:PCMU;PCMA, e:on, s:off, t:b8, nt:IN",
		"a:G729, p:10-30, b:8-64, gc:auto, r:g, k:clear:abc, x-foo:1, x+bar:2, sc-rtp/x:3",
		"p : 10", "a:", "e:on,e:off", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLocalConnectionOptions(s)
		if err != nil {
			return
		}
		out := l.String()
		l2, err := ParseLocalConnectionOptions(out)
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, out, err)
		}
		if !reflect.DeepEqual(l, l2) {
			t.Fatalf("%q -> %q changed:\n%#v\n%#v", s, out, l, l2)
		}
	})
}
