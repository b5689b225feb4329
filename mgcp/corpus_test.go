package mgcp

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func corpus(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in %s: %v", dir, err)
	}
	return files
}

// TestValidCorpus parses every valid message, checks its canonical
// serialization against a golden file, and checks that the serialization
// parses back to the same structure.
func TestValidCorpus(t *testing.T) {
	for _, f := range corpus(t, "valid") {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := ParseDatagram(in)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out := AppendDatagram(nil, msgs...)
			golden := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing golden file (run with -update): %v", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("serialization differs from %s:\n got: %q\nwant: %q", golden, out, want)
			}
			again, err := ParseDatagram(out)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if !reflect.DeepEqual(msgs, again) {
				t.Errorf("round trip changed the message:\n%#v\n%#v", msgs, again)
			}
			// The same message with the other line ending parses to the
			// same structure (SDP bytes aside).
			alt := bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
			if bytes.Equal(alt, in) {
				alt = bytes.ReplaceAll(in, []byte("\n"), []byte("\r\n"))
			}
			other, err := ParseDatagram(alt)
			if err != nil {
				t.Fatalf("parse with other line endings: %v", err)
			}
			for i := range other {
				clearSDP(other[i])
			}
			base, _ := ParseDatagram(in)
			for i := range base {
				clearSDP(base[i])
			}
			if !reflect.DeepEqual(base, other) {
				t.Errorf("line endings changed the parse")
			}
		})
	}
}

func clearSDP(m Message) {
	switch m := m.(type) {
	case *Command:
		m.SDP = nil
	case *Response:
		m.SDP = nil
	}
}

// TestInvalidCorpus checks that each malformed message fails with the
// expected return code and error text, kept in NAME.err.
func TestInvalidCorpus(t *testing.T) {
	files := corpus(t, "invalid")
	if len(files) < 30 {
		t.Fatalf("only %d invalid cases", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := ParseDatagram(in)
			if perr == nil {
				t.Fatalf("parsed without error")
			}
			var pe *ParseError
			if !errors.As(perr, &pe) {
				t.Fatalf("error %T is not *ParseError", perr)
			}
			got := fmt.Sprintf("%s tx=%d %s\n", pe.ReturnCode(), pe.TransactionID, pe.Error())
			golden := strings.TrimSuffix(f, ".txt") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing %s (run with -update): %v", golden, err)
			}
			if got != string(want) {
				t.Errorf("got  %swant %s", got, want)
			}
		})
	}
}
