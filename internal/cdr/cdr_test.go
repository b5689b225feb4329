package cdr

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
)

func rec(line string, end time.Time) bridge.CallRecord {
	return bridge.CallRecord{Line: line, Direction: "outgoing", MGCPCall: "C1", Start: end.Add(-2 * time.Second),
		Answer: end.Add(-time.Second), Answered: true, End: end, SIPStatus: 200}
}

// TestFileAndRestart: records go to the file as JSON lines, survive a
// restart (appended, never truncated), and Since serves them by end time.
func TestFileAndRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cdr.jsonl")
	l, err := Open(Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	l.Record(rec("gw/aaln/1", t0))
	l.Record(rec("gw/aaln/2", t0.Add(time.Second)))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Record(rec("gw/aaln/3", t0.Add(2*time.Second)))
	got, _ := l.Since(Query{Since: t0}) // after t0: the second and third
	if len(got) != 2 || got[0].Line != "gw/aaln/2" || got[1].Line != "gw/aaln/3" {
		t.Fatalf("since: %+v", got)
	}
	if got, _ := l.Since(Query{Limit: 1}); len(got) != 1 || got[0].Line != "gw/aaln/3" {
		t.Fatalf("limit keeps the newest: %+v", got)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		lines = append(lines, m["line"].(string))
	}
	if strings.Join(lines, ",") != "gw/aaln/1,gw/aaln/2,gw/aaln/3" {
		t.Errorf("file holds %v", lines)
	}
}

// TestTornLineSkipped: a half-written last line (a crash) does not stop
// the store from opening.
func TestTornLineSkipped(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cdr.jsonl")
	if err := os.WriteFile(file, []byte(`{"line":"a","end":"2026-01-01T00:00:00.000Z"}`+"\n"+`{"line":"b","en`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, _ := l.Since(Query{}); len(got) != 1 || got[0].Line != "a" {
		t.Errorf("loaded %+v", got)
	}
}

// TestRotation: past max_size_mb the file is renamed and a new one
// started; at most max_files old files stay.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cdr.jsonl")
	l, err := Open(Config{File: file, MaxSizeMB: 1, MaxFiles: 2, Keep: 10})
	if err != nil {
		t.Fatal(err)
	}
	r := rec("gw/aaln/1", time.Now())
	r.Result = strings.Repeat("x", 10_000) // ~10 KB a record
	for range 400 {                        // ~4 MB: three rotations
		l.Record(r)
	}
	_ = l.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		names, _ := filepath.Glob(filepath.Join(dir, "cdr-*.jsonl"))
		if len(names) <= 2 || time.Now().After(deadline) {
			if len(names) == 0 || len(names) > 2 {
				t.Errorf("rotated files %v, want 1-2", names)
			}
			break
		}
		time.Sleep(20 * time.Millisecond) // lumberjack removes old files in the background
	}
	if got, _ := l.Since(Query{}); len(got) != 10 {
		t.Errorf("kept %d in memory, want 10", len(got))
	}
}

// TestFollowWakes: Since's channel is closed by the next record.
func TestFollowWakes(t *testing.T) {
	l, _ := Open(Config{})
	_, next := l.Since(Query{Since: time.Now()})
	go l.Record(rec("gw/aaln/1", time.Now().Add(time.Second)))
	select {
	case <-next:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken")
	}
}

// TestSeq: records are numbered in recording order, across a restart, and
// After selects exactly the ones not seen (even those ending in the same
// millisecond as the last one seen).
func TestSeq(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cdr.jsonl")
	l, err := Open(Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC().Truncate(time.Millisecond)
	l.Record(rec("gw/aaln/1", end.Add(300*time.Microsecond)))
	l.Record(rec("gw/aaln/2", end.Add(600*time.Microsecond))) // the same millisecond
	got, _ := l.Since(Query{})
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 {
		t.Fatalf("seq: %+v", got)
	}
	if time.Time(got[0].End) != end || time.Time(got[1].End) != end {
		t.Errorf("times not to the millisecond: %v %v", time.Time(got[0].End), time.Time(got[1].End))
	}
	if after, _ := l.Since(Query{After: 1}); len(after) != 1 || after[0].Line != "gw/aaln/2" {
		t.Errorf("after 1: %+v", after)
	}
	_ = l.Close()
	l, err = Open(Config{File: file})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Record(rec("gw/aaln/3", end.Add(time.Second)))
	if after, _ := l.Since(Query{After: 2}); len(after) != 1 || after[0].Seq != 3 {
		t.Errorf("after a restart: %+v", after)
	}
}

// TestRingWraps: past Keep the oldest records are dropped and the rest
// come back oldest first, through any number of wraps, with Limit and
// After applied to the kept ones; a restart loads the newest Keep of the
// file the same way.
func TestRingWraps(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cdr.jsonl")
	l, err := Open(Config{File: file, Keep: 5})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	seqs := func(cs []bridge.CDR) []uint64 {
		var out []uint64
		for _, c := range cs {
			out = append(out, c.Seq)
		}
		return out
	}
	for i := 1; i <= 13; i++ {
		l.Record(rec("gw/aaln/"+strconv.Itoa(i), end.Add(time.Duration(i)*time.Millisecond)))
		got, _ := l.Since(Query{})
		want := []uint64{}
		for s := max(1, i-4); s <= i; s++ {
			want = append(want, uint64(s))
		}
		if !slices.Equal(seqs(got), want) {
			t.Fatalf("after %d records: %v, want %v", i, seqs(got), want)
		}
	}
	if got, _ := l.Since(Query{Limit: 2}); !slices.Equal(seqs(got), []uint64{12, 13}) {
		t.Errorf("limit 2: %v", seqs(got))
	}
	if got, _ := l.Since(Query{After: 10}); !slices.Equal(seqs(got), []uint64{11, 12, 13}) {
		t.Errorf("after 10: %v", seqs(got))
	}
	// Ends are kept to the millisecond: the 11th ended at this instant,
	// not after it.
	if got, _ := l.Since(Query{Since: end.Add(11 * time.Millisecond).Truncate(time.Millisecond)}); !slices.Equal(seqs(got), []uint64{12, 13}) {
		t.Errorf("since the 11th's end: %v", seqs(got))
	}
	_ = l.Close()
	l, err = Open(Config{File: file, Keep: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, _ := l.Since(Query{}); !slices.Equal(seqs(got), []uint64{9, 10, 11, 12, 13}) {
		t.Errorf("after a restart: %v", seqs(got))
	}
}

// BenchmarkRecord: one record into a full ring of the default size, no
// file (docs/benchmarks.md, "Call load on the real path").
func BenchmarkRecord(b *testing.B) {
	l, _ := Open(Config{})
	r := rec("gw/aaln/1", time.Now())
	for range DefaultKeep {
		l.Record(r)
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Record(r)
	}
}
