package mapping

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxRange bounds the lines one template may produce.
const maxRange = 100000

// rangeTemplate is a name with one "{A..B}" range, such as "aaln/{1..24}".
type rangeTemplate struct {
	prefix, suffix string
	from, to       int
	width          int // zero-padded width when A was written with leading zeros
	has            bool
}

// parseRange finds the range of a template; a name without braces is a
// single instance.
func parseRange(s string) (rangeTemplate, error) {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		if strings.ContainsRune(s, '}') {
			return rangeTemplate{}, fmt.Errorf("unbalanced '}' in %q", s)
		}
		return rangeTemplate{prefix: s}, nil
	}
	end := strings.IndexByte(s[open:], '}')
	if end < 0 {
		return rangeTemplate{}, fmt.Errorf("missing '}' in %q", s)
	}
	end += open
	if strings.ContainsAny(s[end+1:], "{}") {
		return rangeTemplate{}, fmt.Errorf("only one range allowed in %q", s)
	}
	lo, hi, ok := strings.Cut(s[open+1:end], "..")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 0 {
		return rangeTemplate{}, fmt.Errorf("range in %q must be {A..B} with numbers", s)
	}
	if b < a {
		return rangeTemplate{}, fmt.Errorf("range {%d..%d} in %q runs backwards", a, b, s)
	}
	if b-a+1 > maxRange {
		return rangeTemplate{}, fmt.Errorf("range {%d..%d} in %q has more than %d values", a, b, s, maxRange)
	}
	t := rangeTemplate{prefix: s[:open], suffix: s[end+1:], from: a, to: b, has: true}
	if len(lo) > 1 && lo[0] == '0' {
		t.width = len(lo)
	}
	return t, nil
}

func (t rangeTemplate) count() int {
	if !t.has {
		return 1
	}
	return t.to - t.from + 1
}

// at returns the i-th name and its number n.
func (t rangeTemplate) at(i int) (string, int) {
	if !t.has {
		return t.prefix, 0
	}
	n := t.from + i
	num := strconv.Itoa(n)
	for len(num) < t.width {
		num = "0" + num
	}
	return t.prefix + num + t.suffix, n
}

// expand substitutes {n}, {n+K}, {n-K} and {i} in s. With no range
// (has=false) any placeholder is an error. "${...}" is left alone for
// environment expansion.
func expand(s string, n, i int, has bool) (string, error) {
	if !strings.ContainsRune(s, '{') {
		return s, nil
	}
	var b strings.Builder
	for k := 0; k < len(s); k++ {
		c := s[k]
		if c != '{' || (k > 0 && s[k-1] == '$') {
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[k:], '}')
		if end < 0 {
			return "", fmt.Errorf("missing '}' in %q", s)
		}
		expr := s[k+1 : k+end]
		k += end
		if !has {
			return "", fmt.Errorf("placeholder {%s} in %q but the endpoint has no {A..B} range", expr, s)
		}
		switch {
		case expr == "i":
			b.WriteString(strconv.Itoa(i))
		case expr == "n":
			b.WriteString(strconv.Itoa(n))
		case strings.HasPrefix(expr, "n+") || strings.HasPrefix(expr, "n-"):
			off, err := strconv.Atoi(expr[2:])
			if err != nil {
				return "", fmt.Errorf("bad placeholder {%s} in %q", expr, s)
			}
			if expr[1] == '-' {
				off = -off
			}
			b.WriteString(strconv.Itoa(n + off))
		default:
			return "", fmt.Errorf("unknown placeholder {%s} in %q (use {n}, {n+K}, {n-K} or {i})", expr, s)
		}
	}
	return b.String(), nil
}

// ExpandEnv replaces ${NAME} references using lookup; an unset variable is
// an error that names it (and never the value). Every secret of the
// configuration (line and account passwords, the admin token) follows it.
func ExpandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var missing []string
	for {
		start := strings.Index(s, "${")
		if start < 0 {
			b.WriteString(s)
			break
		}
		end := strings.IndexByte(s[start:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ reference")
		}
		name := s[start+2 : start+end]
		if name == "" {
			return "", fmt.Errorf("empty ${} reference")
		}
		v, ok := lookup(name)
		if !ok {
			missing = append(missing, name)
		}
		b.WriteString(s[:start])
		b.WriteString(v)
		s = s[start+end+1:]
	}
	if len(missing) > 0 {
		return "", &MissingEnvError{Names: missing}
	}
	return b.String(), nil
}

// MissingEnvError lists the environment variables that ${NAME} references
// name and that are not set: all of them, so that one check shows every
// secret still to provide.
type MissingEnvError struct {
	Names []string
}

func (e *MissingEnvError) Error() string {
	if len(e.Names) == 1 {
		return "environment variable " + e.Names[0] + " is not set"
	}
	return fmt.Sprintf("%d environment variables are not set: %s", len(e.Names), strings.Join(e.Names, ", "))
}

// add appends names not yet listed.
func (e *MissingEnvError) add(names ...string) {
	for _, n := range names {
		if !slices.Contains(e.Names, n) {
			e.Names = append(e.Names, n)
		}
	}
}
