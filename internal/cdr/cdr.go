// Package cdr keeps call detail records: one JSON line per call leg in a
// file rotated by size (gopkg.in/natefinch/lumberjack.v2), and the last
// records in memory for the admin API's `GET /api/v1/cdr?since=` and
// `mgsip cdr --follow`.
package cdr

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/mgsip/mgsip/bridge"
)

// Config says where records go (the `cdr` section, checked by
// internal/config). The zero value keeps them in memory only.
type Config struct {
	// File is the JSON-lines file ("" = no file).
	File string
	// MaxSizeMB rotates the file when it reaches this size (default 100).
	MaxSizeMB int
	// MaxFiles is how many rotated files are kept (default 10; the oldest
	// is removed).
	MaxFiles int
	// Keep is how many records the API can serve from memory (default
	// 10,000).
	Keep int
}

// Defaults.
const (
	DefaultMaxSizeMB = 100
	DefaultMaxFiles  = 10
	DefaultKeep      = 10000
)

// Log is the CDR store. Its methods are safe for concurrent use.
type Log struct {
	mu     sync.Mutex
	w      *lumberjack.Logger
	ring   []bridge.CDR // at most keep; once full, a circle whose oldest is ring[head]
	head   int
	keep   int
	errs   uint64
	seq    uint64        // the last record's Seq
	notify chan struct{} // closed and replaced on every record
	// OnWriteError, if set, is told when a record could not be written to
	// the file (it stays in memory and is counted).
	OnWriteError func(error)
}

// Open opens the store; with a file, the records already in it (the
// current file) are loaded so that a restart does not empty the API.
func Open(c Config) (*Log, error) {
	l := &Log{keep: orInt(c.Keep, DefaultKeep), notify: make(chan struct{})}
	if c.File == "" {
		return l, nil
	}
	f, err := os.OpenFile(c.File, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cdr.file: %w", err)
	}
	_ = f.Close()
	if err := l.load(c.File); err != nil {
		return nil, fmt.Errorf("cdr.file: %w", err)
	}
	// lumberjack appends to an existing file (it never truncates) and
	// renames it with a timestamp when it is full.
	l.w = &lumberjack.Logger{Filename: c.File, MaxSize: orInt(c.MaxSizeMB, DefaultMaxSizeMB),
		MaxBackups: orInt(c.MaxFiles, DefaultMaxFiles), LocalTime: false}
	return l, nil
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// load reads the last records of file into the ring; a line that does not
// decode (a torn last write after a crash) is skipped.
func (l *Log) load(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var c bridge.CDR
		if json.Unmarshal(sc.Bytes(), &c) != nil {
			continue
		}
		l.add(c)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (l *Log) add(c bridge.CDR) {
	if c.Seq == 0 || c.Seq <= l.seq {
		c.Seq = l.seq + 1
	}
	l.seq = c.Seq
	// A full ring overwrites its oldest record in place: shifting the
	// whole ring down by one on every call (it was) copied keep records,
	// 10,000 by default, a quarter of mgsip's CPU at 400 calls/s.
	if len(l.ring) < l.keep {
		l.ring = append(l.ring, c)
		return
	}
	l.ring[l.head] = c
	l.head = (l.head + 1) % len(l.ring)
}

// each calls f with every kept record, oldest first.
func (l *Log) each(f func(*bridge.CDR)) {
	for i := range l.ring {
		f(&l.ring[(l.head+i)%len(l.ring)])
	}
}

// Record stores the record of an ended call leg (bridge.Config.OnCall).
func (l *Log) Record(r bridge.CallRecord) {
	c := r.CDR()
	l.mu.Lock()
	defer l.mu.Unlock()
	c.Seq = l.seq + 1
	if l.w != nil { // encoded only when there is a file to write
		b, err := json.Marshal(c)
		if err == nil {
			_, err = l.w.Write(append(b, '\n'))
		}
		if err != nil {
			l.errs++
			if l.OnWriteError != nil {
				l.OnWriteError(err)
			}
		}
	}
	l.add(c)
	close(l.notify)
	l.notify = make(chan struct{})
}

// WriteErrors counts records that could not be written to the file.
func (l *Log) WriteErrors() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}

// Query selects records: those that ended after Since and were recorded
// after the record numbered After, at most Limit (0: all kept; the
// newest).
type Query struct {
	Since time.Time
	After uint64
	Limit int
}

// Since returns the records q selects, in the order they were recorded
// (two lines' calls ending in the same millisecond may be recorded out of
// end order, so this scans rather than searches), and a channel closed
// when the next one arrives. --follow asks for the records after the last
// Seq it saw: exact, whatever the times.
func (l *Log) Since(q Query) ([]bridge.CDR, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := q.Limit
	var out []bridge.CDR
	l.each(func(c *bridge.CDR) {
		if time.Time(c.End).After(q.Since) && c.Seq > q.After {
			out = append(out, *c)
		}
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:] // the newest
	}
	return out, l.notify
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return nil
	}
	return l.w.Close()
}
