package mapping

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// matcher is a compiled NumberMatch.
type matcher struct {
	exact, prefix string
	re            *regexp.Regexp
}

func compileMatch(m NumberMatch) (matcher, error) {
	set := 0
	for _, s := range []string{m.Exact, m.Prefix, m.Regex} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return matcher{}, fmt.Errorf("set only one of exact, prefix and regex")
	}
	if m.Regex != "" {
		re, err := regexp.Compile(m.Regex)
		if err != nil {
			return matcher{}, fmt.Errorf("bad regex: %v", err)
		}
		return matcher{re: re}, nil
	}
	return matcher{exact: m.Exact, prefix: m.Prefix}, nil
}

func (m matcher) match(number string) bool {
	switch {
	case m.re != nil:
		return m.re.MatchString(number)
	case m.exact != "":
		return number == m.exact
	default:
		return strings.HasPrefix(number, m.prefix)
	}
}

// didPattern is one entry of a trunk's DID list.
type didPattern struct {
	src      string
	exact    string
	lo, hi   *big.Int // numeric range, both ends inclusive
	digits   int      // length of the range's numbers
	re       *regexp.Regexp
	path     string // for overlap reports
	trunkIdx int
}

func parseDID(s string) (didPattern, error) {
	d := didPattern{src: s}
	switch {
	case len(s) >= 2 && s[0] == '/' && s[len(s)-1] == '/':
		re, err := regexp.Compile(s[1 : len(s)-1])
		if err != nil {
			return d, fmt.Errorf("bad regex: %v", err)
		}
		d.re = re
	case strings.Contains(s, "-"):
		lo, hi, _ := strings.Cut(s, "-")
		if !isNumber(lo) || !isNumber(hi) || len(lo) != len(hi) {
			return d, fmt.Errorf("DID range %q must be two numbers of the same length", s)
		}
		d.lo, _ = new(big.Int).SetString(strings.TrimPrefix(lo, "+"), 10)
		d.hi, _ = new(big.Int).SetString(strings.TrimPrefix(hi, "+"), 10)
		if d.lo.Cmp(d.hi) > 0 {
			return d, fmt.Errorf("DID range %q runs backwards", s)
		}
		d.digits = len(lo)
	default:
		if !isNumber(s) {
			return d, fmt.Errorf("DID %q is not a number, a range A-B or a /regex/", s)
		}
		d.exact = s
	}
	return d, nil
}

func isNumber(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (d *didPattern) matches(n string) bool {
	switch {
	case d.re != nil:
		return d.re.MatchString(n)
	case d.exact != "":
		return n == d.exact
	}
	if len(n) != d.digits || !isNumber(n) {
		return false
	}
	v, ok := new(big.Int).SetString(strings.TrimPrefix(n, "+"), 10)
	return ok && v.Cmp(d.lo) >= 0 && v.Cmp(d.hi) <= 0
}

// overlaps reports whether two exact/range patterns share a number. Regex
// patterns cannot be compared and never overlap here.
func (d *didPattern) overlaps(o *didPattern) bool {
	if d.re != nil || o.re != nil {
		return false
	}
	if d.exact != "" {
		return o.matches(d.exact)
	}
	if o.exact != "" {
		return d.matches(o.exact)
	}
	return d.digits == o.digits && d.lo.Cmp(o.hi) <= 0 && o.lo.Cmp(d.hi) <= 0
}
