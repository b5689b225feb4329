package mapping

import "strings"

// Rewriter is a compiled RewriteSet. A nil *Rewriter leaves numbers
// unchanged.
type Rewriter struct {
	Name  string
	rules []rewriteRule
}

type rewriteRule struct {
	m       matcher
	replace string
	stop    bool
}

// Apply runs the rules in order on number: each matching rule rewrites
// it, and a matching rule with stop ends the chain.
func (rw *Rewriter) Apply(number string) string {
	if rw == nil {
		return number
	}
	for _, r := range rw.rules {
		if !r.m.match(number) {
			continue
		}
		switch {
		case r.m.re != nil:
			number = r.m.re.ReplaceAllString(number, r.replace)
		case r.m.exact != "":
			number = r.replace
		default:
			number = r.replace + strings.TrimPrefix(number, r.m.prefix)
		}
		if r.stop {
			break
		}
	}
	return number
}
