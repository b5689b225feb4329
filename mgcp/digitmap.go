package mgcp

import (
	"fmt"
	"math/bits"
	"strings"
)

// DigitMap is a compiled digit map (RFC 3435 §2.1.5):
//
//	(0T|00T|[1-7]xxx|8xxxxxxx|#xxxxxxx|*xx|91xxxxxxxxxx|9011x.T)
//
// Positions are digits 0-9, '*', '#', letters A-D and extension letters
// (E-Z except X), 'x' (any digit) or a bracketed set such as [0-9#*T] with
// digit ranges. A '.' after a position matches it zero or more times. 'T'
// is the inter-digit timer. 'S' and 'L' are accepted as the short and long
// timer markers of H.248 digit maps (ITU-T H.248.1 §7.1.14), which some
// gateways and dial plans use; all three behave as timer events here.
// A DigitMap is immutable and safe for concurrent use.
type DigitMap struct {
	src      string
	patterns [][]dmElem
}

type dmElem struct {
	set    uint64 // symbols accepted at this position
	repeat bool   // followed by '.'
}

// Symbols: 0-9 are 0..9, '*' 10, '#' 11, letters 'A'..'Z' 12..37.
const (
	symStar  = 10
	symHash  = 11
	symAlpha = 12
)

const digitSet = uint64(1)<<10 - 1

var timerSet = symBit('T') | symBit('S') | symBit('L')

func symIndex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c == '*':
		return symStar
	case c == '#':
		return symHash
	case c >= 'a' && c <= 'z':
		return symAlpha + int(c-'a')
	case c >= 'A' && c <= 'Z':
		return symAlpha + int(c-'A')
	}
	return -1
}

func symBit(c byte) uint64 { return 1 << uint(symIndex(c)) }

// Limits that keep compiling and matching bounded on hostile input.
const (
	maxDigitMapLen      = 2048
	maxDigitMapPatterns = 256
	maxPatternLen       = 63
)

// DigitMapError reports where a digit map is malformed. Offset is the
// 0-based byte offset in the map text.
type DigitMapError struct {
	Map    string
	Offset int
	Reason string
}

func (e *DigitMapError) Error() string {
	return fmt.Sprintf("digit map: column %d: %s", e.Offset+1, e.Reason)
}

// CompileDigitMap compiles the text of a D: parameter.
func CompileDigitMap(s string) (*DigitMap, error) {
	fail := func(off int, why string) (*DigitMap, error) {
		return nil, &DigitMapError{Map: s, Offset: off, Reason: why}
	}
	if len(s) > maxDigitMapLen {
		return fail(maxDigitMapLen, "digit map too long")
	}
	body, base := s, 0
	if strings.HasPrefix(s, "(") {
		if !strings.HasSuffix(s, ")") || len(s) < 2 {
			return fail(len(s), "missing ')'")
		}
		body, base = s[1:len(s)-1], 1
	}
	if body == "" {
		return fail(base, "empty digit map")
	}
	dm := &DigitMap{src: s}
	start := 0
	for i := 0; i <= len(body); i++ {
		if i < len(body) && body[i] != '|' {
			continue
		}
		if i == start {
			return fail(base+i, "empty alternative")
		}
		if len(dm.patterns) == maxDigitMapPatterns {
			return fail(base+start, "too many alternatives")
		}
		p, off, why := compilePattern(body[start:i])
		if why != "" {
			return fail(base+start+off, why)
		}
		dm.patterns = append(dm.patterns, p)
		start = i + 1
	}
	return dm, nil
}

func compilePattern(s string) ([]dmElem, int, string) {
	var out []dmElem
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if len(out) == 0 {
				return nil, i, "'.' must follow a position"
			}
			if out[len(out)-1].repeat {
				return nil, i, "'.' repeated"
			}
			out[len(out)-1].repeat = true
			continue
		case c == 'x' || c == 'X':
			out = append(out, dmElem{set: digitSet})
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, i, "missing ']'"
			}
			set, off, why := compileRange(s[i+1 : i+j])
			if why != "" {
				return nil, i + 1 + off, why
			}
			out = append(out, dmElem{set: set})
			i += j
		case symIndex(c) >= 0:
			out = append(out, dmElem{set: symBit(c)})
		case c == '(' || c == ')':
			return nil, i, "nested parentheses"
		default:
			return nil, i, fmt.Sprintf("invalid character %q", c)
		}
		if len(out) > maxPatternLen {
			return nil, i, "alternative too long"
		}
	}
	return out, 0, ""
}

func compileRange(s string) (uint64, int, string) {
	if s == "" {
		return 0, 0, "empty range"
	}
	var set uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i+2 < len(s) && s[i+1] == '-' {
			d := s[i+2]
			if c < '0' || c > '9' || d < '0' || d > '9' || d < c {
				return 0, i, "range must be ascending digits"
			}
			for k := c; k <= d; k++ {
				set |= symBit(k)
			}
			i += 2
			continue
		}
		switch {
		case c == 'x' || c == 'X':
			set |= digitSet
		case symIndex(c) >= 0:
			set |= symBit(c)
		default:
			return 0, i, fmt.Sprintf("invalid character %q in range", c)
		}
	}
	return set, 0, ""
}

// String returns the source text of the map.
func (d *DigitMap) String() string { return d.src }

// MatchResult is the outcome of matching a dialed string.
type MatchResult int

// Match results.
const (
	// NoMatch: no alternative can match, whatever is dialed next.
	NoMatch MatchResult = iota
	// Partial: more digits are needed.
	Partial
	// Match: an alternative matches and no longer one is possible; the
	// gateway reports the digits now.
	Match
	// MatchAfterTimer: the string matches once the timer expires, either
	// because an alternative ends in a timer position or because it
	// matches one alternative while a longer one is still possible.
	MatchAfterTimer
)

func (r MatchResult) String() string {
	switch r {
	case Partial:
		return "partial"
	case Match:
		return "match"
	case MatchAfterTimer:
		return "timer"
	}
	return "nomatch"
}

// Match matches a dialed string: digits, '*', '#', letters, and 'T' (or
// 'S'/'L') for an expired timer. Timer expiry completes a string that
// already matched.
func (d *DigitMap) Match(dialed string) MatchResult {
	var stack [16]uint64
	states := stack[:0]
	if len(d.patterns) > len(stack) {
		states = make([]uint64, 0, len(d.patterns))
	}
	for _, p := range d.patterns {
		states = append(states, closure(p, 1))
	}
	for i := 0; i < len(dialed); i++ {
		sym := symIndex(dialed[i])
		if sym < 0 {
			return NoMatch
		}
		bit := uint64(1) << uint(sym)
		if bit&timerSet != 0 {
			bit = timerSet // any expired timer satisfies any timer position
			// The timer expiring on a string that already matches an
			// alternative completes it, even if a longer alternative
			// could take the timer event (RFC 3435 §2.1.5).
			if i == len(dialed)-1 && accepting(d.patterns, states) {
				return Match
			}
		}
		live := false
		for k, p := range d.patterns {
			states[k] = step(p, states[k], bit)
			live = live || states[k] != 0
		}
		if !live {
			return NoMatch
		}
	}
	full, canDigit, timer := false, false, false
	for k, p := range d.patterns {
		s := states[k]
		if s&(1<<uint(len(p))) != 0 {
			full = true
		}
		for pos := range p {
			if s&(1<<uint(pos)) == 0 {
				continue
			}
			if p[pos].set&^timerSet != 0 {
				canDigit = true
			}
			if p[pos].set&timerSet != 0 && step(p, s, p[pos].set&timerSet)&(1<<uint(len(p))) != 0 {
				timer = true
			}
		}
	}
	switch {
	case full && !canDigit && !timer:
		return Match
	case full || timer:
		return MatchAfterTimer
	case canDigit:
		return Partial
	}
	return NoMatch
}

// accepting reports whether any pattern is in its final state.
func accepting(patterns [][]dmElem, states []uint64) bool {
	for k, p := range patterns {
		if states[k]&(1<<uint(len(p))) != 0 {
			return true
		}
	}
	return false
}

// closure adds the positions reachable by skipping repeated elements.
func closure(p []dmElem, s uint64) uint64 {
	for pos := 0; pos < len(p); pos++ {
		if s&(1<<uint(pos)) != 0 && p[pos].repeat {
			s |= 1 << uint(pos+1)
		}
	}
	return s
}

// step consumes one symbol (given as a bit set) from the state set s.
func step(p []dmElem, s, sym uint64) uint64 {
	var next uint64
	for s != 0 {
		pos := bits.TrailingZeros64(s)
		s &^= 1 << uint(pos)
		if pos >= len(p) || p[pos].set&sym == 0 {
			continue
		}
		if p[pos].repeat {
			next |= 1 << uint(pos)
		} else {
			next |= 1 << uint(pos+1)
		}
	}
	return closure(p, next)
}
