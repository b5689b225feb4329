package mapping

// Secret is a password or token. It prints as "******" in every format
// (fmt, %#v, JSON, text marshalling) so that it cannot leak into logs or
// check-config output; Reveal returns the value.
type Secret string

const redacted = "******"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return `mapping.Secret("` + s.String() + `")` }

// MarshalText implements encoding.TextMarshaler (used by JSON and YAML
// encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
