package mgcp

import "strings"

// Event is an event or signal name with its optional connection and
// parameters, as used in R:, S:, O:, T: and ES: (RFC 3435 §2.1.7, §3.2.2.4):
//
//	[package "/"] name ["@" connection] ["(" parameters ")"]
//
// Examples: L/hd, hd, D/[0-9#*T], L/rg@0A3F, R/rto@*, L/ci(10/14/17/26,"555","Ann").
type Event struct {
	Package    string   `json:"package,omitempty"`    // package name, "" when absent; "*" means all packages
	Name       string   `json:"name"`                 // event or signal name; "*" means all events of the package; may be a digit range such as [0-9#*T]
	Connection string   `json:"connection,omitempty"` // connection id, "$" (current) or "*" (all); "" when absent
	Params     []string `json:"params,omitempty"`     // parameters split at top-level commas, trimmed, quotes kept; nil when there are no parentheses
}

// Is reports whether the event has the given package and name
// (case-insensitive), e.g. e.Is("L", "hd"). An event without a package
// prefix matches any package.
func (e Event) Is(pkg, name string) bool {
	return equalFold(e.Name, name) && (e.Package == "" || equalFold(e.Package, pkg))
}

// Param returns the i-th parameter with surrounding quotes removed and
// backslash escapes resolved, or "" if there is none.
func (e Event) Param(i int) string {
	if i < 0 || i >= len(e.Params) {
		return ""
	}
	return Unquote(e.Params[i])
}

// String returns the wire form of the event.
func (e Event) String() string { return string(appendEvent(nil, e)) }

// AppendTo appends the wire form of the event to b.
func (e Event) AppendTo(b []byte) []byte { return appendEvent(b, e) }

// Unquote removes the double quotes around a quoted-string parameter
// (RFC 3435 §3.2.2.4), resolving backslash escapes. Other text is returned
// unchanged.
func Unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	if !strings.ContainsRune(s, '\\') {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Quote returns s as a quoted string, escaping quotes and backslashes.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// Action is a requested action (RFC 3435 §2.3.3): N notify, A accumulate,
// D treat according to digit map, S swap, I ignore, K keep signals active,
// E embedded request, or an extension action.
type Action struct {
	Code     string           `json:"code"`               // "N", "A", "D", "S", "I", "K", "E", or an extension name
	Embedded *EmbeddedRequest `json:"embedded,omitempty"` // for E
	Params   string           `json:"params,omitempty"`   // raw parameters of an extension action, "" if none
}

// Action codes of RFC 3435 §2.3.3.
const (
	ActionNotify     = "N"
	ActionAccumulate = "A"
	ActionDigitMap   = "D"
	ActionSwap       = "S"
	ActionIgnore     = "I"
	ActionKeep       = "K"
	ActionEmbedded   = "E"
)

// EmbeddedRequest is the body of an E(...) action: a new set of requested
// events, signals and digit map applied when the event occurs
// (RFC 3435 §2.3.3).
type EmbeddedRequest struct {
	RequestedEvents []RequestedEvent `json:"requested_events,omitempty"` // R(...); nil when absent
	Signals         []Event          `json:"signals,omitempty"`          // S(...); nil when absent, empty to stop signals
	DigitMap        string           `json:"digit_map,omitempty"`        // D(...); "" when absent
}

// RequestedEvent is one element of R: (RFC 3435 §3.2.2.16): an event with
// its actions and parameters, e.g. L/hd(N), D/[0-9#*T](D),
// L/hu(E(S(L/dl),R(D/[0-9](D)))), R/rto(N)(300).
type RequestedEvent struct {
	Event
	Actions []Action `json:"actions,omitempty"` // nil when no action list was given (the gateway then notifies)
}

// HasAction reports whether the request includes the given action code.
func (r RequestedEvent) HasAction(code string) bool {
	for _, a := range r.Actions {
		if equalFold(a.Code, code) {
			return true
		}
	}
	return false
}

// String returns the wire form of the requested event.
func (r RequestedEvent) String() string { return string(appendRequestedEvent(nil, r)) }

// AppendTo appends the wire form of the requested event to b.
func (r RequestedEvent) AppendTo(b []byte) []byte { return appendRequestedEvent(b, r) }

// valueError is an error inside a parameter value; off is the byte offset
// within the value.
type valueError struct {
	off    int
	reason string
	code   ReturnCode
}

func (e *valueError) Error() string { return e.reason }

func verr(off int, reason string) *valueError { return &valueError{off: off, reason: reason} }

// maxNesting bounds recursion through embedded requests.
const maxNesting = 8

// nextItem returns the next top-level comma-separated item of s starting
// at i, trimmed, its offset, and the index just past its separator.
// Parentheses must balance and quotes must close.
func nextItem(s string, i int) (item string, off, next int, err *valueError) {
	depth := 0
	start := i
	for ; i < len(s); i++ {
		switch s[i] {
		case '"':
			j := closeQuote(s, i)
			if j < 0 {
				return "", 0, 0, verr(i, "unterminated quoted string")
			}
			i = j
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return "", 0, 0, verr(i, "unbalanced ')'")
			}
		case ',':
			if depth == 0 {
				it, o := trimOff(s[start:i])
				return it, start + o, i + 1, nil
			}
		}
	}
	if depth != 0 {
		return "", 0, 0, verr(len(s), "missing ')'")
	}
	it, o := trimOff(s[start:])
	return it, start + o, len(s), nil
}

// closeQuote returns the index of the quote closing the one at i, or -1.
func closeQuote(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// trimOff trims spaces and tabs and reports how many leading bytes went.
func trimOff(s string) (string, int) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	j := len(s)
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j], i
}

// eachItem calls fn with every top-level comma-separated item of s and its
// offset, and rejects a trailing comma with the reason trailing. Error
// offsets are relative to s.
func eachItem(s, trailing string, fn func(it string, off int) *valueError) *valueError {
	for i := 0; i < len(s); {
		it, off, next, err := nextItem(s, i)
		if err != nil {
			return err
		}
		if err := fn(it, off); err != nil {
			return err
		}
		i = next
		if i == len(s) && s[len(s)-1] == ',' {
			return verr(i, trailing)
		}
	}
	return nil
}

// countItems counts top-level items of a list that nextItem accepts.
func countItems(s string) int {
	if strings.TrimSpace(s) == "" {
		return 0
	}
	n, depth := 1, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			if j := closeQuote(s, i); j > 0 {
				i = j
			}
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				n++
			}
		}
	}
	return n
}

// group reads a parenthesised group starting at s[i] == '(' and returns its
// inner text and the index after the closing ')'.
func group(s string, i int) (inner string, next int, err *valueError) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"':
			k := closeQuote(s, j)
			if k < 0 {
				return "", 0, verr(j, "unterminated quoted string")
			}
			j = k
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return s[i+1 : j], j + 1, nil
			}
		}
	}
	return "", 0, verr(i, "missing ')'")
}

func isNameByte(c byte) bool {
	return c > ' ' && c < 0x7f && c != '@' && c != '(' && c != ')' && c != ',' && c != '"' && c != '/'
}

// parseEventHead parses [pkg/]name[@conn] at the start of s and returns the
// index after it.
func parseEventHead(s string) (Event, int, *valueError) {
	var e Event
	i := 0
	readName := func() (string, *valueError) {
		start := i
		if i < len(s) && s[i] == '[' {
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return "", verr(i, "missing ']' in digit range")
			}
			i += j + 1
			for k := start + 1; k < i-1; k++ {
				if !isNameByte(s[k]) || s[k] == '[' {
					return "", verr(k, "invalid character in digit range")
				}
			}
			return s[start:i], nil
		}
		for i < len(s) && isNameByte(s[i]) && s[i] != '[' && s[i] != ']' {
			i++
		}
		if i == start {
			return "", verr(i, "missing event name")
		}
		return s[start:i], nil
	}
	name, err := readName()
	if err != nil {
		return e, 0, err
	}
	if i < len(s) && s[i] == '/' {
		if name[0] == '[' {
			return e, 0, verr(0, "digit range used as package name")
		}
		e.Package = name
		i++
		if name, err = readName(); err != nil {
			return e, 0, err
		}
	}
	e.Name = name
	if i < len(s) && s[i] == '@' {
		i++
		start := i
		for i < len(s) && (isAlnum(s[i]) || s[i] == '$' || s[i] == '*') {
			i++
		}
		if i == start {
			return e, 0, verr(i, "missing connection id after '@'")
		}
		e.Connection = s[start:i]
		if len(e.Connection) > 32 {
			return e, 0, verr(start, "connection id longer than 32 characters")
		}
	}
	return e, i, nil
}

// splitParams splits the inside of a parameter group into trimmed items.
func splitParams(inner string, base int) ([]string, *valueError) {
	out := make([]string, 0, countItems(inner))
	err := eachItem(inner, "empty parameter", func(it string, off int) *valueError {
		if it == "" {
			return verr(off, "empty parameter")
		}
		out = append(out, it)
		return nil
	})
	if err != nil {
		err.off += base
		return nil, err
	}
	return out, nil
}

// parseEvent parses one event or signal (no action list).
func parseEvent(s string) (Event, *valueError) {
	e, i, err := parseEventHead(s)
	if err != nil {
		return e, err
	}
	if i < len(s) && s[i] == '(' {
		inner, next, err := group(s, i)
		if err != nil {
			return e, err
		}
		if e.Params, err = splitParams(inner, i+1); err != nil {
			return e, err
		}
		i = next
	}
	if i != len(s) {
		return e, verr(i, "unexpected text after event")
	}
	return e, nil
}

// parseEventList parses a comma-separated list of events (O:, S:, T:, ES:).
// An empty value gives an empty, non-nil list.
func parseEventList(s string) ([]Event, *valueError) {
	out := make([]Event, 0, countItems(s))
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	err := eachItem(s, "empty list element", func(it string, off int) *valueError {
		if it == "" {
			return verr(off, "empty list element")
		}
		e, err := parseEvent(it)
		if err != nil {
			err.off += off
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func parseRequestedEvents(s string, depth int) ([]RequestedEvent, *valueError) {
	if depth > maxNesting {
		return nil, verr(0, "embedded requests nested too deeply")
	}
	out := make([]RequestedEvent, 0, countItems(s))
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	err := eachItem(s, "empty list element", func(it string, off int) *valueError {
		if it == "" {
			return verr(off, "empty list element")
		}
		r, err := parseRequestedEvent(it, depth)
		if err != nil {
			err.off += off
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseRequestedEvent parses name[(actions)][(parameters)]. A single group
// that does not read as an action list is taken as the parameters.
func parseRequestedEvent(s string, depth int) (RequestedEvent, *valueError) {
	var r RequestedEvent
	e, i, err := parseEventHead(s)
	if err != nil {
		return r, err
	}
	r.Event = e
	var groups [2]string
	var starts [2]int
	n := 0
	for i < len(s) && s[i] == '(' {
		if n == 2 {
			return r, verr(i, "more than two parenthesised groups")
		}
		inner, next, err := group(s, i)
		if err != nil {
			return r, err
		}
		groups[n], starts[n] = inner, i+1
		n++
		i = next
	}
	if i != len(s) {
		return r, verr(i, "unexpected text after requested event")
	}
	if n == 0 {
		return r, nil
	}
	if n == 1 && !looksLikeActions(groups[0]) {
		// "R/rto(300)": parameters without an action list.
		if r.Params, err = splitParams(groups[0], starts[0]); err != nil {
			return r, err
		}
		return r, nil
	}
	if r.Actions, err = parseActions(groups[0], starts[0], depth); err != nil {
		return r, err
	}
	if n == 2 {
		if r.Params, err = splitParams(groups[1], starts[1]); err != nil {
			return r, err
		}
	}
	return r, nil
}

// looksLikeActions tells an action list from event parameters when an
// event has a single parenthesised group: actions are single letters
// (possibly "E(" ...) or package-qualified names; an empty group counts as
// an empty action list.
func looksLikeActions(g string) bool {
	it, _, _, err := nextItem(g, 0)
	if err != nil {
		return true // let the action parser report it
	}
	if it == "" {
		return true
	}
	if len(it) == 1 || (len(it) > 1 && (it[1] == '(' || it[1] == ' ' || it[1] == '\t')) {
		return isAlpha(it[:1])
	}
	name := it
	if p := strings.IndexByte(it, '('); p >= 0 {
		name = it[:p]
	}
	return strings.Contains(name, "/") && !strings.ContainsAny(name, "=\"")
}

func parseActions(s string, base, depth int) ([]Action, *valueError) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := make([]Action, 0, countItems(s))
	err := eachItem(s, "empty action", func(it string, off int) *valueError {
		a, err := parseAction(it, depth)
		if err != nil {
			err.off += off
			return err
		}
		out = append(out, a)
		return nil
	})
	if err != nil {
		err.off += base
		return nil, err
	}
	return out, nil
}

func parseAction(s string, depth int) (Action, *valueError) {
	name := s
	var inner string
	hasGroup := false
	if p := strings.IndexByte(s, '('); p >= 0 {
		g, next, err := group(s, p)
		if err != nil {
			return Action{}, err
		}
		if next != len(s) {
			return Action{}, verr(next, "unexpected text after action")
		}
		name, inner, hasGroup = strings.TrimRight(s[:p], " \t"), g, true
	}
	if name == "" {
		return Action{}, verr(0, "empty action")
	}
	for i := 0; i < len(name); i++ {
		if !isNameByte(name[i]) && name[i] != '/' {
			return Action{}, &valueError{off: i, reason: "invalid action", code: CodeUnknownAction}
		}
	}
	if len(name) == 1 {
		code := string(upper(name[0]))
		switch code {
		case "N", "A", "D", "S", "I", "K":
			if hasGroup {
				return Action{}, &valueError{off: 1, reason: "action " + code + " takes no parameters", code: CodeUnknownAction}
			}
			return Action{Code: actionCodes[code]}, nil
		case "E":
			if !hasGroup {
				return Action{}, &valueError{off: 1, reason: "embedded request E needs a parenthesised body", code: CodeUnknownAction}
			}
			emb, err := parseEmbedded(inner, len(name)+1, depth+1)
			if err != nil {
				return Action{}, err
			}
			return Action{Code: ActionEmbedded, Embedded: emb}, nil
		}
	}
	// Extension actions are package-qualified (RFC 3435 §3.2.2.16).
	if !strings.Contains(name, "/") {
		return Action{}, &valueError{off: 0, reason: "unknown action " + quote(name), code: CodeUnknownAction}
	}
	a := Action{Code: name}
	if hasGroup {
		a.Params = inner
		if a.Params == "" {
			return Action{}, verr(len(name), "empty extension action parameters")
		}
	}
	return a, nil
}

// actionCodes interns single-letter action codes so parsing does not
// allocate them.
var actionCodes = map[string]string{"N": "N", "A": "A", "D": "D", "S": "S", "I": "I", "K": "K"}

func parseEmbedded(s string, base, depth int) (*EmbeddedRequest, *valueError) {
	if depth > maxNesting {
		return nil, verr(base, "embedded requests nested too deeply")
	}
	emb := &EmbeddedRequest{}
	seen := 0
	// Offsets below are within s; base is added once at the end.
	err := eachItem(s, "trailing comma in embedded request", func(it string, off int) *valueError {
		p := strings.IndexByte(it, '(')
		if p < 0 {
			return verr(off, "embedded request element needs R(...), S(...) or D(...)")
		}
		inner, end, err := group(it, p)
		if err != nil {
			err.off += off
			return err
		}
		if end != len(it) {
			return verr(off+end, "unexpected text in embedded request")
		}
		ib := off + p + 1
		key := strings.TrimSpace(it[:p])
		switch {
		case equalFold(key, "R"):
			if seen&1 != 0 {
				return verr(off, "duplicate R in embedded request")
			}
			seen |= 1
			if emb.RequestedEvents, err = parseRequestedEvents(inner, depth); err != nil {
				err.off += ib
				return err
			}
		case equalFold(key, "S"):
			if seen&2 != 0 {
				return verr(off, "duplicate S in embedded request")
			}
			seen |= 2
			if emb.Signals, err = parseEventList(inner); err != nil {
				err.off += ib
				return err
			}
		case equalFold(key, "D"):
			if seen&4 != 0 {
				return verr(off, "duplicate D in embedded request")
			}
			seen |= 4
			if strings.TrimSpace(inner) == "" {
				return verr(ib, "empty digit map in embedded request")
			}
			emb.DigitMap = strings.TrimSpace(inner)
		default:
			return verr(off, "unknown embedded request element "+quote(key))
		}
		return nil
	})
	if err != nil {
		err.off += base
		return nil, err
	}
	if seen == 0 {
		return nil, verr(base, "empty embedded request")
	}
	return emb, nil
}

// ---- serialization ----

func appendEvent(b []byte, e Event) []byte {
	b = appendEventHead(b, e)
	if e.Params != nil {
		b = appendParams(b, e.Params)
	}
	return b
}

func appendEventHead(b []byte, e Event) []byte {
	if e.Package != "" {
		b = append(b, e.Package...)
		b = append(b, '/')
	}
	b = append(b, e.Name...)
	if e.Connection != "" {
		b = append(b, '@')
		b = append(b, e.Connection...)
	}
	return b
}

func appendParams(b []byte, ps []string) []byte {
	b = append(b, '(')
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	return append(b, ')')
}

func appendEventList(b []byte, es []Event) []byte {
	for i, e := range es {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendEvent(b, e)
	}
	return b
}

func appendRequestedEvent(b []byte, r RequestedEvent) []byte {
	b = appendEventHead(b, r.Event)
	if len(r.Actions) > 0 {
		b = append(b, '(')
		for i, a := range r.Actions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAction(b, a)
		}
		b = append(b, ')')
	} else if r.Params != nil {
		// Without actions a lone group is read back as parameters only if
		// it does not also read as an action list.
		inner := appendParams(nil, r.Params)
		if looksLikeActions(string(inner[1 : len(inner)-1])) {
			b = append(b, "()"...)
		}
	}
	if r.Params != nil {
		b = appendParams(b, r.Params)
	}
	return b
}

func appendRequestedEvents(b []byte, rs []RequestedEvent) []byte {
	for i, r := range rs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendRequestedEvent(b, r)
	}
	return b
}

func appendAction(b []byte, a Action) []byte {
	b = append(b, a.Code...)
	switch {
	case a.Embedded != nil:
		b = append(b, '(')
		b = appendEmbedded(b, a.Embedded)
		b = append(b, ')')
	case a.Params != "":
		b = append(b, '(')
		b = append(b, a.Params...)
		b = append(b, ')')
	}
	return b
}

func appendEmbedded(b []byte, e *EmbeddedRequest) []byte {
	n := 0
	sep := func() {
		if n > 0 {
			b = append(b, ',')
		}
		n++
	}
	if e.RequestedEvents != nil {
		sep()
		b = append(b, "R("...)
		b = appendRequestedEvents(b, e.RequestedEvents)
		b = append(b, ')')
	}
	if e.Signals != nil {
		sep()
		b = append(b, "S("...)
		b = appendEventList(b, e.Signals)
		b = append(b, ')')
	}
	if e.DigitMap != "" {
		sep()
		b = append(b, "D("...)
		b = append(b, e.DigitMap...)
		b = append(b, ')')
	}
	return b
}
