package mgcp

import (
	"strings"
)

// Parse parses one MGCP message. Input holding several piggybacked
// messages is an error; use ParseDatagram for those. The returned message
// does not retain data.
func Parse(data []byte) (Message, error) {
	p := parser{s: string(data)}
	m, err := p.message()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.s) {
		return nil, p.errAt(p.line, 1, "piggybacked messages: use ParseDatagram", "")
	}
	return m, nil
}

// ParseCommand parses one message and requires it to be a command.
func ParseCommand(data []byte) (*Command, error) {
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	c, ok := m.(*Command)
	if !ok {
		return nil, &ParseError{Line: 1, Column: 1, Reason: "expected a command, got a response"}
	}
	return c, nil
}

// ParseResponse parses one message and requires it to be a response.
func ParseResponse(data []byte) (*Response, error) {
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	r, ok := m.(*Response)
	if !ok {
		return nil, &ParseError{Line: 1, Column: 1, Reason: "expected a response, got a command"}
	}
	return r, nil
}

// ParseDatagram parses a datagram that may hold several messages separated
// by lines holding a single "." (piggybacking, RFC 3435 §3.5.5). Messages
// are returned in order. On error, the messages parsed before the bad one
// are returned with it.
func ParseDatagram(data []byte) ([]Message, error) {
	return parseDatagramInto(nil, data)
}

// parseDatagramInto is ParseDatagram appending to out.
func parseDatagramInto(out []Message, data []byte) ([]Message, error) {
	p := parser{s: string(data)}
	for {
		m, err := p.message()
		if err != nil {
			return out, err
		}
		out = append(out, m)
		if p.i >= len(p.s) {
			return out, nil
		}
	}
}

// parser walks a datagram line by line.
type parser struct {
	s    string
	i    int // start of the next line
	line int // number of the last line read (1-based)
	sep  bool
}

// next returns the next line without its EOL (CRLF or LF), or ok=false at
// the end. A line holding only "." ends the message.
func (p *parser) next() (line string, start int, ok bool) {
	if p.i >= len(p.s) || p.sep {
		return "", 0, false
	}
	start = p.i
	j := strings.IndexByte(p.s[p.i:], '\n')
	if j < 0 {
		line, p.i = p.s[p.i:], len(p.s)
	} else {
		line, p.i = p.s[p.i:p.i+j], p.i+j+1
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	p.line++
	if line == "." {
		p.sep = true
		return "", 0, false
	}
	return line, start, true
}

func (p *parser) errAt(line, col int, reason, text string) *ParseError {
	return &ParseError{Line: line, Column: col, Reason: reason, Text: truncate(text)}
}

// message parses one message starting at p.i, consuming its "." separator.
func (p *parser) message() (Message, error) {
	p.sep = false
	line, _, ok := p.next()
	if !ok {
		if p.sep {
			return nil, p.errAt(p.line, 1, "empty message before '.' separator", "")
		}
		return nil, p.errAt(p.line+1, 1, "empty message", "")
	}
	var f [8]string
	var cols [8]int
	n := fields(line, f[:], cols[:])
	if n == 0 {
		return nil, p.errAt(p.line, 1, "empty first line", "")
	}
	first := f[0]
	var params *Parameters
	var sdp *[]byte
	var txid uint32
	var isResp bool
	var msg Message
	if len(first) == 3 && isDigits(first) {
		r, err := p.responseLine(line, f[:n], cols[:n])
		if err != nil {
			return nil, err
		}
		params, sdp, txid, isResp, msg = &r.Parameters, &r.SDP, r.TransactionID, true, r
	} else {
		c, err := p.commandLine(f[:n], cols[:n])
		if err != nil {
			return nil, err
		}
		params, sdp, txid, msg = &c.Parameters, &c.SDP, c.TransactionID, c
	}
	if err := p.params(params, isResp, txid); err != nil {
		return nil, err
	}
	// Session description: everything after the empty line up to the end
	// of the message, byte for byte.
	start := p.i
	end := start
	for {
		if _, _, ok := p.next(); !ok {
			if p.sep {
				end = p.lastSepStart()
			} else {
				end = len(p.s)
			}
			break
		}
	}
	if end > start && !blank(p.s[start:end]) {
		*sdp = []byte(p.s[start:end])
	}
	if p.sep && p.i >= len(p.s) {
		return nil, p.errAt(p.line, 1, "'.' separator not followed by a message", "")
	}
	return msg, nil
}

// lastSepStart returns the index where the "." separator line just read
// begins.
func (p *parser) lastSepStart() int {
	// p.i is just past ".\n", ".\r\n" or "." at the end of input.
	j := p.i
	if j > 0 && p.s[j-1] == '\n' {
		j--
		if j > 0 && p.s[j-1] == '\r' {
			j--
		}
	}
	return j - 1
}

func blank(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// fields splits a line at runs of spaces and tabs into at most len(f)
// fields; the last field takes the rest of the line. cols are 1-based.
func fields(line string, f []string, cols []int) int {
	n := 0
	i := 0
	for n < len(f) {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i >= len(line) {
			break
		}
		start := i
		if n == len(f)-1 {
			f[n], cols[n] = strings.TrimRight(line[start:], " \t"), start+1
			n++
			break
		}
		for i < len(line) && !isSpace(line[i]) {
			i++
		}
		f[n], cols[n] = line[start:i], start+1
		n++
	}
	return n
}

func parseTxID(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 9 {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint32(s[i]-'0')
	}
	return n, n >= 1
}

var knownVerbs = [...]Verb{VerbEPCF, VerbCRCX, VerbMDCX, VerbDLCX, VerbRQNT, VerbNTFY, VerbAUEP, VerbAUCX, VerbRSIP}

func (p *parser) commandLine(f []string, cols []int) (*Command, error) {
	verb := f[0]
	if len(verb) != 4 || !isAlpha(verb) {
		return nil, p.errAt(p.line, cols[0], "not a command verb or response code", verb)
	}
	c := &Command{Verb: Verb(verb)}
	if !isUpper(verb) {
		c.Verb = Verb(toUpper(verb))
	}
	for _, v := range knownVerbs {
		if v == c.Verb {
			c.Verb = v // share the constant's storage
		}
	}
	if len(f) < 2 {
		return nil, p.errAt(p.line, len(verb)+1, "missing transaction id", "")
	}
	id, ok := parseTxID(f[1])
	if !ok {
		return nil, p.errAt(p.line, cols[1], "transaction id must be 1 to 999999999", f[1])
	}
	c.TransactionID = id
	fail := func(col int, code ReturnCode, reason, text string) error {
		e := p.errAt(p.line, col, reason, text)
		e.Code, e.TransactionID = code, id
		return e
	}
	if len(f) < 3 {
		return nil, fail(cols[1]+len(f[1]), CodeProtocolError, "missing endpoint name", "")
	}
	ep, why := splitEndpoint(f[2])
	if why != "" {
		return nil, fail(cols[2], CodeProtocolError, "bad endpoint name: "+why, f[2])
	}
	c.Endpoint = ep
	if len(f) < 5 {
		return nil, fail(cols[2]+len(f[2]), CodeProtocolError, "missing protocol version", "")
	}
	if !equalFold(f[3], "MGCP") {
		return nil, fail(cols[3], CodeProtocolError, "expected \"MGCP\"", f[3])
	}
	switch f[4] {
	case "1.0", "0.1":
		c.Version = f[4]
	default:
		return nil, fail(cols[4], CodeIncompatibleVersion, "unsupported protocol version", f[4])
	}
	switch len(f) {
	case 5:
	case 7:
		if len(strings.Fields(f[6])) != 1 {
			return nil, fail(cols[6], CodeProtocolError, "unexpected text after profile", f[6])
		}
		if !isAlpha(f[5]) {
			return nil, fail(cols[5], CodeProtocolError, "bad profile name", f[5])
		}
		c.Profile = f[5] + " " + f[6]
	default:
		return nil, fail(cols[5], CodeProtocolError, "profile needs a name and a version", f[5])
	}
	if !c.Verb.Known() {
		return nil, fail(cols[0], CodeUnknownCommand, "unknown command verb", verb)
	}
	return c, nil
}

func isAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'a' && s[i] <= 'z' {
			return false
		}
	}
	return true
}

func (p *parser) responseLine(line string, f []string, cols []int) (*Response, error) {
	code := ReturnCode(int(f[0][0]-'0')*100 + int(f[0][1]-'0')*10 + int(f[0][2]-'0'))
	if code.Class() == ClassInvalid {
		return nil, p.errAt(p.line, cols[0], "invalid return code", f[0])
	}
	if len(f) < 2 {
		return nil, p.errAt(p.line, 4, "missing transaction id", "")
	}
	id, ok := parseTxID(f[1])
	if !ok {
		return nil, p.errAt(p.line, cols[1], "transaction id must be 1 to 999999999", f[1])
	}
	r := &Response{Code: code, TransactionID: id}
	rest := ""
	if len(f) > 2 {
		rest = strings.TrimRight(line[cols[2]-1:], " \t")
	}
	if strings.HasPrefix(rest, "/") {
		pkg := rest[1:]
		if sp := strings.IndexAny(pkg, " \t"); sp >= 0 {
			pkg, rest = pkg[:sp], strings.TrimLeft(pkg[sp:], " \t")
		} else {
			rest = ""
		}
		if pkg == "" {
			return nil, p.errAt(p.line, cols[2], "empty package name", "/")
		}
		r.Package = pkg
	}
	r.Comment = rest
	return r, nil
}

// Parameter identifiers, used as bits of a seen-set.
const (
	pK = iota
	pB
	pC
	pI
	pN
	pX
	pL
	pM
	pR
	pS
	pD
	pO
	pP
	pE
	pZ
	pZ2
	pI2
	pF
	pQ
	pT
	pRM
	pRD
	pES
	pA
	pPL
	pMD
	pUnknown
)

func paramID(name string) int {
	switch len(name) {
	case 1:
		switch upper(name[0]) {
		case 'K':
			return pK
		case 'B':
			return pB
		case 'C':
			return pC
		case 'I':
			return pI
		case 'N':
			return pN
		case 'X':
			return pX
		case 'L':
			return pL
		case 'M':
			return pM
		case 'R':
			return pR
		case 'S':
			return pS
		case 'D':
			return pD
		case 'O':
			return pO
		case 'P':
			return pP
		case 'E':
			return pE
		case 'Z':
			return pZ
		case 'F':
			return pF
		case 'Q':
			return pQ
		case 'T':
			return pT
		case 'A':
			return pA
		}
	case 2:
		a, b := upper(name[0]), upper(name[1])
		switch {
		case a == 'Z' && b == '2':
			return pZ2
		case a == 'I' && b == '2':
			return pI2
		case a == 'R' && b == 'M':
			return pRM
		case a == 'R' && b == 'D':
			return pRD
		case a == 'E' && b == 'S':
			return pES
		case a == 'P' && b == 'L':
			return pPL
		case a == 'M' && b == 'D':
			return pMD
		}
	}
	return pUnknown
}

// paramNames are the canonical names used when serializing.
var paramNames = [...]string{
	pK: "K", pB: "B", pC: "C", pI: "I", pN: "N", pX: "X", pL: "L", pM: "M", pR: "R", pS: "S",
	pD: "D", pO: "O", pP: "P", pE: "E", pZ: "Z", pZ2: "Z2", pI2: "I2", pF: "F", pQ: "Q", pT: "T",
	pRM: "RM", pRD: "RD", pES: "ES", pA: "A", pPL: "PL", pMD: "MD",
}

func isParamNameByte(c byte) bool {
	return isAlnum(c) || c == '-' || c == '+' || c == '/' || c == '_'
}

// params reads parameter lines up to the empty line or the end of the
// message.
func (p *parser) params(ps *Parameters, isResp bool, txid uint32) error {
	var seen uint32
	for {
		line, _, ok := p.next()
		if !ok || line == "" {
			return nil
		}
		fail := func(col int, code ReturnCode, reason, text string) error {
			e := p.errAt(p.line, col, reason, text)
			e.Code, e.TransactionID = code, txid
			return e
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			if blank(line) {
				return fail(1, CodeProtocolError, "whitespace-only line (the empty line before a session description must be empty)", "")
			}
			return fail(1, CodeProtocolError, "parameter line without ':'", line)
		}
		name, noff := trimOff(line[:colon])
		if name == "" {
			return fail(1, CodeProtocolError, "empty parameter name", line)
		}
		for k := 0; k < len(name); k++ {
			if !isParamNameByte(name[k]) {
				return fail(noff+k+1, CodeProtocolError, "invalid character in parameter name", name)
			}
		}
		raw := line[colon+1:]
		value, voff := trimOff(raw)
		vcol := colon + 2 + voff
		id := paramID(name)
		if id == pUnknown {
			ps.Extra = append(ps.Extra, Param{Name: name, Value: value})
			continue
		}
		if seen&(1<<id) != 0 {
			if isResp && (id == pI || id == pZ || id == pA) {
				ps.Extra = append(ps.Extra, Param{Name: paramNames[id], Value: value})
				continue
			}
			return fail(noff+1, CodeProtocolError, "duplicate parameter "+quote(paramNames[id]), name)
		}
		seen |= 1 << id
		if err := setParam(ps, id, value); err != nil {
			code := err.code
			if code == 0 {
				code = CodeProtocolError
			}
			return fail(vcol+err.off, code, paramNames[id]+": "+err.reason, value[min(err.off, len(value)):])
		}
	}
}

// stringParam reports whether the parameter holds a plain string; an
// empty value for one of those is kept in Extra so it survives a round
// trip.
func stringParam(id int) bool {
	switch id {
	case pB, pC, pI, pN, pX, pM, pD, pZ, pZ2, pI2, pQ, pRM, pRD, pA, pPL, pMD, pE, pL:
		return true
	}
	return false
}

func setParam(ps *Parameters, id int, v string) *valueError {
	if v == "" && stringParam(id) {
		ps.Extra = append(ps.Extra, Param{Name: paramNames[id], Value: ""})
		return nil
	}
	var err *valueError
	switch id {
	case pK:
		ps.ResponseAck, err = parseAckList(v)
	case pB:
		ps.BearerInformation = v
	case pC:
		ps.CallID, err = parseIdent(v)
	case pI:
		ps.ConnectionID, err = parseIdent(v)
	case pI2:
		ps.SecondConnection, err = parseIdent(v)
	case pX:
		ps.RequestID, err = parseIdent(v)
	case pN:
		if strings.ContainsAny(v, " \t") {
			return verr(strings.IndexAny(v, " \t"), "space in notified entity")
		}
		ps.NotifiedEntity = v
	case pL:
		ps.LocalOptions, err = parseLCO(v)
	case pM:
		for i := 0; i < len(v); i++ {
			if c := v[i]; !(isAlnum(c) || c == '/' || c == '-' || c == '_') {
				return &valueError{off: i, reason: "invalid connection mode", code: CodeInvalidMode}
			}
		}
		ps.Mode = ConnectionMode(toLower(v))
	case pR:
		ps.RequestedEvents, err = parseRequestedEvents(v, 0)
	case pS:
		ps.Signals, err = parseEventList(v)
	case pO:
		ps.ObservedEvents, err = parseEventList(v)
	case pT:
		ps.DetectEvents, err = parseEventList(v)
	case pES:
		ps.EventStates, err = parseEventList(v)
	case pD:
		ps.DigitMap = v
	case pP:
		ps.ConnectionParams, err = parseConnParams(v)
	case pE:
		if len(v) < 3 || !isDigits(v[:3]) || len(v) > 3 && !isSpace(v[3]) {
			return verr(0, "reason code must start with three digits")
		}
		text, _ := trimOff(v[3:])
		ps.Reason = &Reason{Code: int(v[0]-'0')*100 + int(v[1]-'0')*10 + int(v[2]-'0'), Text: text}
	case pZ, pZ2:
		if _, why := splitEndpoint(v); why != "" {
			return verr(0, "bad endpoint name: "+why)
		}
		if id == pZ {
			ps.SpecificEndpoint = v
		} else {
			ps.SecondEndpoint = v
		}
	case pF:
		ps.RequestedInfo, err = parseInfoList(v)
	case pQ:
		ps.QuarantineHandling = toLower(v)
	case pRM:
		for i := 0; i < len(v); i++ {
			if c := v[i]; !(isAlnum(c) || c == '-' || c == '/') {
				return &valueError{off: i, reason: "invalid restart method", code: CodeUnknownRestartMethod}
			}
		}
		ps.RestartMethod = RestartMethod(toLower(v))
	case pRD:
		n, ok := atoiNonNeg(v)
		if !ok {
			return verr(0, "restart delay must be a number of seconds")
		}
		ps.RestartDelay, ps.HasRestartDelay = n, true
	case pA:
		ps.Capabilities = v
	case pPL:
		ps.PackageList = v
	case pMD:
		n, ok := atoiPos(v)
		if !ok {
			return verr(0, "maximum datagram size must be a positive number")
		}
		ps.MaxDatagram = n
	}
	return err
}

func atoiNonNeg(s string) (int, bool) {
	if s == "0" {
		return 0, true
	}
	return atoiPos(s)
}

// parseIdent checks a call, connection or request identifier: 1 to 32
// letters and digits (RFC 3435 §3.2.2.2 asks for hex; letters are accepted
// when reading).
func parseIdent(v string) (string, *valueError) {
	if len(v) > 32 {
		return "", verr(32, "identifier longer than 32 characters")
	}
	for i := 0; i < len(v); i++ {
		if !isAlnum(v[i]) {
			return "", verr(i, "identifier must be letters and digits")
		}
	}
	return v, nil
}

// parseAckList parses K: "6234-6255, 6257". Empty gives an empty list.
func parseAckList(v string) ([]AckRange, *valueError) {
	out := make([]AckRange, 0, countItems(v))
	if v == "" {
		return out, nil
	}
	err := eachItem(v, "empty element in response ack", func(it string, off int) *valueError {
		lo, hi, rng := strings.Cut(it, "-")
		a, ok := parseTxID(strings.TrimSpace(lo))
		if !ok {
			return verr(off, "bad transaction id in response ack")
		}
		b := a
		if rng {
			if b, ok = parseTxID(strings.TrimSpace(hi)); !ok || b < a {
				return verr(off, "bad transaction id range in response ack")
			}
		}
		out = append(out, AckRange{a, b})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseConnParams parses P: "PS=1432, OS=229120, ...". Empty gives an empty
// list.
func parseConnParams(v string) ([]ConnParam, *valueError) {
	out := make([]ConnParam, 0, countItems(v))
	err := eachItem(v, "empty connection parameter", func(it string, off int) *valueError {
		name, val, ok := strings.Cut(it, "=")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok || name == "" {
			return verr(off, "connection parameter is not name=value")
		}
		for k := 0; k < len(name); k++ {
			if !isParamNameByte(name[k]) {
				return verr(off+k, "invalid connection parameter name")
			}
		}
		if strings.ContainsAny(val, " \t()\"") {
			return verr(off, "invalid connection parameter value")
		}
		out = append(out, ConnParam{Name: name, Value: val})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseInfoList parses F: "R,D,S,X,N,I,T,O,ES". Empty gives an empty list.
func parseInfoList(v string) ([]string, *valueError) {
	out := make([]string, 0, countItems(v))
	err := eachItem(v, "empty requested-info code", func(it string, off int) *valueError {
		if it == "" || !isParamNameToken(it) {
			return verr(off, "bad requested-info code")
		}
		out = append(out, toUpper(it))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func isParamNameToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isParamNameByte(s[i]) {
			return false
		}
	}
	return true
}
