package mapping

import (
	"fmt"
	"sort"
	"strings"
)

// Suggest returns the candidate closest to s, compared without case, when
// it is close enough to be a likely typo, or "" when none is. Close enough
// is relative to the length of the longer name: an edit distance of at
// most a third of it, and at least 1, where swapping two neighbouring
// letters counts as one edit (so that "levle" finds "level" as
// "display_nmae" finds "display_name").
func Suggest(s string, candidates []string) string {
	best, bestD := "", -1
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := editDistance(ls, strings.ToLower(c))
		limit := max(len(s), len(c)) / 3
		if limit < 1 {
			limit = 1
		}
		if d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b
// (bytes): Levenshtein's insertions, deletions and substitutions plus the
// transposition of two adjacent bytes, each costing 1.
func editDistance(a, b string) int {
	// Three rows: the one before the previous is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// maxListed bounds the names an error message lists.
const maxListed = 20

// Hint is what follows an unknown name in a message: a suggestion when one
// is close, and the valid names ("(did you mean "gw1"? gateways: gw1,
// gw2)"), or that there are none.
func Hint(s, kind string, valid []string) string {
	if len(valid) == 0 {
		return fmt.Sprintf("(there are no %s)", kind)
	}
	sorted := append([]string(nil), valid...)
	sort.Strings(sorted)
	list := sorted
	more := ""
	if len(list) > maxListed {
		list, more = list[:maxListed], fmt.Sprintf(", and %d more", len(sorted)-maxListed)
	}
	names := strings.Join(list, ", ") + more
	if sug := Suggest(s, sorted); sug != "" {
		return fmt.Sprintf("(did you mean %q? %s: %s)", sug, kind, names)
	}
	return fmt.Sprintf("(%s: %s)", kind, names)
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// KnownCodecs are the audio encodings mgsip can offer and accept, with
// the spelling used in SDP: the static payload types of RFC 3551 §6 and
// the usual dynamic ones. telephone-event (RFC 4733) is always kept and
// need not be listed.
var KnownCodecs = []string{"PCMU", "PCMA", "G722", "G723", "G728", "G729", "GSM", "iLBC",
	"G726-16", "G726-24", "G726-32", "G726-40", "AAL2-G726-32", "L16", "opus", "speex", "AMR", "AMR-WB", "telephone-event"}

// codecAliases are the names other systems use (Asterisk's among them)
// for the same encodings.
var codecAliases = map[string]string{
	"ulaw": "PCMU", "mulaw": "PCMU", "g711u": "PCMU", "g711ulaw": "PCMU", "g.711u": "PCMU",
	"alaw": "PCMA", "g711a": "PCMA", "g711alaw": "PCMA", "g.711a": "PCMA",
	"g729a": "G729", "g729ab": "G729", "g726": "G726-32", "ilbc": "iLBC", "g722.1": "G722",
}

// CanonicalCodec returns the SDP spelling of a codec name, compared without
// case and accepting the common aliases (ulaw for PCMU, alaw for PCMA).
func CanonicalCodec(name string) (string, bool) {
	for _, k := range KnownCodecs {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	if c, ok := codecAliases[strings.ToLower(name)]; ok {
		return c, true
	}
	return "", false
}
