package mgcp

import (
	"strconv"
	"strings"
)

// Range is a single value (Min == Max) or a range "Min-Max", as used by the
// p: and b: LocalConnectionOptions.
type Range struct {
	Min int `json:"min,omitempty"`
	Max int `json:"max,omitempty"`
}

// IsZero reports an absent range.
func (r Range) IsZero() bool { return r.Min == 0 && r.Max == 0 }

func (r Range) appendTo(b []byte) []byte {
	b = strconv.AppendInt(b, int64(r.Min), 10)
	if r.Max != r.Min {
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(r.Max), 10)
	}
	return b
}

// OnOff is the value of the e: and s: options: "" (absent), "on" or "off".
type OnOff string

// Values of OnOff.
const (
	On  OnOff = "on"
	Off OnOff = "off"
)

// LCOParam is a LocalConnectionOptions element kept verbatim: vendor
// extensions (x-..., x+...) and package options (pkg/key).
type LCOParam struct {
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

// LocalConnectionOptions is the L: parameter (RFC 3435 §3.2.2.10):
//
//	L: p:20, a:PCMU;PCMA, e:on, s:off, t:b8, nt:IN
//
// Serialization writes the typed options in a fixed order, then Extensions
// in the order they were given.
type LocalConnectionOptions struct {
	Codecs              []string   `json:"codecs,omitempty"`               // a: compression algorithms, preferred first
	Packetization       Range      `json:"packetization,omitempty"`        // p: packetization period in ms
	Bandwidth           Range      `json:"bandwidth,omitempty"`            // b: bandwidth in kbit/s
	EchoCancellation    OnOff      `json:"echo_cancellation,omitempty"`    // e:
	SilenceSuppression  OnOff      `json:"silence_suppression,omitempty"`  // s:
	GainControl         string     `json:"gain_control,omitempty"`         // gc: "auto" or a gain in dB
	TypeOfService       string     `json:"type_of_service,omitempty"`      // t: two hex digits (IP TOS byte)
	ResourceReservation string     `json:"resource_reservation,omitempty"` // r: g, cl or be
	EncryptionKey       string     `json:"encryption_key,omitempty"`       // k: method:key
	NetworkType         string     `json:"network_type,omitempty"`         // nt: IN, ATM, LOCAL or an extension
	Extensions          []LCOParam `json:"extensions,omitempty"`
}

// ParseLocalConnectionOptions parses the value of an L: line.
func ParseLocalConnectionOptions(s string) (*LocalConnectionOptions, error) {
	l, err := parseLCO(s)
	if err != nil {
		return nil, &ParseError{Line: 1, Column: err.off + 1, Reason: err.reason, Code: err.code, Text: truncate(s[min(err.off, len(s)):])}
	}
	return l, nil
}

func parseLCO(s string) (*LocalConnectionOptions, *valueError) {
	l := &LocalConnectionOptions{}
	var seen uint16
	mark := func(bit uint16, off int, key string) *valueError {
		if seen&bit != 0 {
			return &valueError{off: off, reason: "duplicate option " + quote(key), code: CodeLCOInconsistent}
		}
		seen |= bit
		return nil
	}
	if strings.TrimSpace(s) == "" {
		return nil, verr(0, "empty LocalConnectionOptions")
	}
	err := eachItem(s, "empty option", func(it string, off int) *valueError {
		if it == "" {
			return verr(off, "empty option")
		}
		c := strings.IndexByte(it, ':')
		if c <= 0 {
			return &valueError{off: off, reason: "option is not key:value", code: CodeLCOInvalid}
		}
		key, val := it[:c], strings.TrimLeft(it[c+1:], " \t")
		for k := 0; k < len(key); k++ {
			if ch := key[k]; !(isAlnum(ch) || ch == '-' || ch == '+' || ch == '/' || ch == '_') {
				return &valueError{off: off + k, reason: "invalid option key", code: CodeLCOInvalid}
			}
		}
		voff := off + c + 1 + (len(it[c+1:]) - len(val))
		bad := func(why string) *valueError {
			return &valueError{off: voff, reason: why + " in option " + quote(key), code: CodeLCOUnsupportedValue}
		}
		if val == "" {
			return bad("empty value")
		}
		switch {
		case equalFold(key, "a"):
			if err := mark(1, off, key); err != nil {
				return err
			}
			l.Codecs = strings.Split(val, ";")
			for _, codec := range l.Codecs {
				if codec == "" || strings.ContainsAny(codec, " \t") {
					return bad("bad codec list")
				}
			}
		case equalFold(key, "p"), equalFold(key, "b"):
			bit := uint16(2)
			if equalFold(key, "b") {
				bit = 4
			}
			if err := mark(bit, off, key); err != nil {
				return err
			}
			r, ok := parseRange(val)
			if !ok {
				return bad("bad number or range")
			}
			if bit == 2 {
				l.Packetization = r
			} else {
				l.Bandwidth = r
			}
		case equalFold(key, "e"), equalFold(key, "s"):
			bit := uint16(8)
			if equalFold(key, "s") {
				bit = 16
			}
			if err := mark(bit, off, key); err != nil {
				return err
			}
			var v OnOff
			switch {
			case equalFold(val, "on"):
				v = On
			case equalFold(val, "off"):
				v = Off
			default:
				return bad("expected on or off")
			}
			if bit == 8 {
				l.EchoCancellation = v
			} else {
				l.SilenceSuppression = v
			}
		case equalFold(key, "t"):
			if err := mark(32, off, key); err != nil {
				return err
			}
			if len(val) != 2 || !isHex(val) {
				return bad("expected two hex digits")
			}
			l.TypeOfService = val
		case equalFold(key, "gc"), equalFold(key, "r"), equalFold(key, "k"), equalFold(key, "nt"):
			var bit uint16
			var dst *string
			switch toLower(key) {
			case "gc":
				bit, dst = 64, &l.GainControl
			case "r":
				bit, dst = 128, &l.ResourceReservation
			case "k":
				bit, dst = 256, &l.EncryptionKey
			default:
				bit, dst = 512, &l.NetworkType
			}
			if err := mark(bit, off, key); err != nil {
				return err
			}
			if strings.ContainsAny(val, " \t") {
				return bad("space")
			}
			*dst = val
		case len(key) > 2 && (key[0] == 'x' || key[0] == 'X') && (key[1] == '-' || key[1] == '+'),
			strings.Contains(key, "/"):
			for _, x := range l.Extensions {
				if equalFold(x.Key, key) {
					return &valueError{off: off, reason: "duplicate option " + quote(key), code: CodeLCOInconsistent}
				}
			}
			l.Extensions = append(l.Extensions, LCOParam{Key: key, Value: val})
		default:
			return &valueError{off: off, reason: "unknown option " + quote(key), code: CodeLCOInvalid}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

func parseRange(s string) (Range, bool) {
	lo, hi, found := strings.Cut(s, "-")
	a, ok := atoiPos(lo)
	if !ok {
		return Range{}, false
	}
	if !found {
		return Range{a, a}, true
	}
	b, ok := atoiPos(hi)
	if !ok || b < a {
		return Range{}, false
	}
	return Range{a, b}, true
}

// atoiPos parses a positive decimal number of at most 9 digits.
func atoiPos(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n > 0
}

// AppendTo appends the wire form of the options.
func (l *LocalConnectionOptions) AppendTo(b []byte) []byte {
	n := 0
	opt := func(key string) {
		if n > 0 {
			b = append(b, ", "...)
		}
		n++
		b = append(b, key...)
		b = append(b, ':')
	}
	if !l.Packetization.IsZero() {
		opt("p")
		b = l.Packetization.appendTo(b)
	}
	if len(l.Codecs) > 0 {
		opt("a")
		for i, c := range l.Codecs {
			if i > 0 {
				b = append(b, ';')
			}
			b = append(b, c...)
		}
	}
	if !l.Bandwidth.IsZero() {
		opt("b")
		b = l.Bandwidth.appendTo(b)
	}
	strOpt := func(key, v string) {
		if v != "" {
			opt(key)
			b = append(b, v...)
		}
	}
	strOpt("e", string(l.EchoCancellation))
	strOpt("s", string(l.SilenceSuppression))
	strOpt("gc", l.GainControl)
	strOpt("t", l.TypeOfService)
	strOpt("r", l.ResourceReservation)
	strOpt("k", l.EncryptionKey)
	strOpt("nt", l.NetworkType)
	for _, x := range l.Extensions {
		opt(x.Key)
		b = append(b, x.Value...)
	}
	return b
}

// String returns the wire form of the options.
func (l *LocalConnectionOptions) String() string { return string(l.AppendTo(nil)) }
