package mgcp

// Verb is a four-letter MGCP command verb (RFC 3435 §2.3, §3.2.1.1).
// Parsed verbs are always upper case.
type Verb string

// The verbs of RFC 3435 §2.3.
const (
	VerbEPCF Verb = "EPCF" // EndpointConfiguration
	VerbCRCX Verb = "CRCX" // CreateConnection
	VerbMDCX Verb = "MDCX" // ModifyConnection
	VerbDLCX Verb = "DLCX" // DeleteConnection
	VerbRQNT Verb = "RQNT" // NotificationRequest
	VerbNTFY Verb = "NTFY" // Notify
	VerbAUEP Verb = "AUEP" // AuditEndpoint
	VerbAUCX Verb = "AUCX" // AuditConnection
	VerbRSIP Verb = "RSIP" // RestartInProgress
)

// Known reports whether v is one of the verbs of RFC 3435.
func (v Verb) Known() bool {
	switch v {
	case VerbEPCF, VerbCRCX, VerbMDCX, VerbDLCX, VerbRQNT, VerbNTFY, VerbAUEP, VerbAUCX, VerbRSIP:
		return true
	}
	return false
}

// MaxTransactionID is the largest legal transaction identifier
// (RFC 3435 §3.2.1.2: 1 to 999 999 999).
const MaxTransactionID = 999999999

// ConnectionMode is the M: parameter (RFC 3435 §3.2.2.6). Parsed values are
// lower case.
type ConnectionMode string

// Connection modes of RFC 3435 §2.3.1 and §3.2.2.6.
const (
	ModeSendOnly ConnectionMode = "sendonly"
	ModeRecvOnly ConnectionMode = "recvonly"
	ModeSendRecv ConnectionMode = "sendrecv"
	ModeConfrnce ConnectionMode = "confrnce"
	ModeInactive ConnectionMode = "inactive"
	ModeLoopback ConnectionMode = "loopback"
	ModeConttest ConnectionMode = "conttest"
	ModeNetwloop ConnectionMode = "netwloop"
	ModeNetwtest ConnectionMode = "netwtest"
)

// Known reports whether m is one of the modes RFC 3435 defines (package
// modes, written "pkg/mode", are not).
func (m ConnectionMode) Known() bool {
	switch m {
	case ModeSendOnly, ModeRecvOnly, ModeSendRecv, ModeConfrnce, ModeInactive,
		ModeLoopback, ModeConttest, ModeNetwloop, ModeNetwtest:
		return true
	}
	return false
}

// RestartMethod is the RM: parameter of RSIP (RFC 3435 §2.3.12, §3.2.2.20).
type RestartMethod string

// Restart methods.
const (
	RestartGraceful       RestartMethod = "graceful"
	RestartForced         RestartMethod = "forced"
	RestartRestart        RestartMethod = "restart"
	RestartDisconnected   RestartMethod = "disconnected"
	RestartCancelGraceful RestartMethod = "cancel-graceful"
)

// AckRange is one element of a ResponseAck (K:) list: the transaction ids
// From..To inclusive (RFC 3435 §3.2.2.19). A single id has From == To.
type AckRange struct {
	From uint32 `json:"from,omitempty"`
	To   uint32 `json:"to,omitempty"`
}

// Contains reports whether id lies within the range.
func (r AckRange) Contains(id uint32) bool { return id >= r.From && id <= r.To }

// Reason is the E: ReasonCode parameter (RFC 3435 §3.2.2.15): a three-digit
// code and optional text, as in "E: 900 Hardware error".
type Reason struct {
	Code int    `json:"code,omitempty"`
	Text string `json:"text,omitempty"`
}

// ConnParam is one statistic of the P: ConnectionParameters list
// (RFC 3435 §3.2.2.7), e.g. PS=1432.
type ConnParam struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// Param is a parameter line kept verbatim: extension parameters (X-...,
// X+..., package parameters) and repeated lines of the parameters that may
// appear more than once in a response (I:, Z:, A:).
type Param struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// Parameters holds the parameter lines of a command or response
// (RFC 3435 §3.2.2). The typed fields cover what a call agent acts on; the
// field comments give the wire letter.
//
// List-valued fields distinguish "absent" (nil) from "present but empty"
// (an empty, non-nil slice): "S:" with no value stops all signals and a
// final response with an empty "K:" asks for a response acknowledgement.
// String fields are absent when empty.
type Parameters struct {
	ResponseAck        []AckRange              `json:"response_ack,omitempty"`        // K: ResponseAck, §3.2.2.19
	BearerInformation  string                  `json:"bearer_information,omitempty"`  // B: BearerInformation, §3.2.2.1
	CallID             string                  `json:"call_id,omitempty"`             // C: CallId, §3.2.2.2
	ConnectionID       string                  `json:"connection_id,omitempty"`       // I: ConnectionId, §3.2.2.5
	NotifiedEntity     string                  `json:"notified_entity,omitempty"`     // N: NotifiedEntity, §3.2.1.3
	RequestID          string                  `json:"request_id,omitempty"`          // X: RequestIdentifier, §3.2.2.18
	LocalOptions       *LocalConnectionOptions `json:"local_options,omitempty"`       // L: LocalConnectionOptions, §3.2.2.10
	Mode               ConnectionMode          `json:"mode,omitempty"`                // M: ConnectionMode, §3.2.2.6
	RequestedEvents    []RequestedEvent        `json:"requested_events,omitempty"`    // R: RequestedEvents, §3.2.2.16
	Signals            []Event                 `json:"signals,omitempty"`             // S: SignalRequests, §3.2.2.21
	DigitMap           string                  `json:"digit_map,omitempty"`           // D: DigitMap, §2.1.5 (compile with CompileDigitMap)
	ObservedEvents     []Event                 `json:"observed_events,omitempty"`     // O: ObservedEvents, §3.2.2.12
	ConnectionParams   []ConnParam             `json:"connection_params,omitempty"`   // P: ConnectionParameters, §3.2.2.7
	Reason             *Reason                 `json:"reason,omitempty"`              // E: ReasonCode, §3.2.2.15
	SpecificEndpoint   string                  `json:"specific_endpoint,omitempty"`   // Z: SpecificEndPointId, §3.2.2.22
	SecondEndpoint     string                  `json:"second_endpoint,omitempty"`     // Z2: SecondEndpointId, §3.2.2.22
	SecondConnection   string                  `json:"second_connection,omitempty"`   // I2: SecondConnectionId, §3.2.2.5
	RequestedInfo      []string                `json:"requested_info,omitempty"`      // F: RequestedInfo, §3.2.2.17 (upper case)
	QuarantineHandling string                  `json:"quarantine_handling,omitempty"` // Q: QuarantineHandling, §3.2.2.14 (lower case)
	DetectEvents       []Event                 `json:"detect_events,omitempty"`       // T: DetectEvents, §3.2.2.8
	RestartMethod      RestartMethod           `json:"restart_method,omitempty"`      // RM: RestartMethod, §3.2.2.20 (lower case)
	RestartDelay       int                     `json:"restart_delay,omitempty"`       // RD: RestartDelay in seconds, §3.2.2.20; valid when HasRestartDelay
	HasRestartDelay    bool                    `json:"has_restart_delay,omitempty"`
	EventStates        []Event                 `json:"event_states,omitempty"` // ES: EventStates, §3.2.2.9
	Capabilities       string                  `json:"capabilities,omitempty"` // A: Capabilities, §3.2.2.3 (first line; further lines are in Extra)
	PackageList        string                  `json:"package_list,omitempty"` // PL: PackageList, §3.2.2.13
	MaxDatagram        int                     `json:"max_datagram,omitempty"` // MD: MaxMGCPDatagram, §3.2.2.11; 0 when absent
	Extra              []Param                 `json:"extra,omitempty"`        // everything else, in wire order
}

// ExtraValues returns the values of every Extra parameter named name
// (case-insensitive).
func (p *Parameters) ExtraValues(name string) []string {
	var out []string
	for _, x := range p.Extra {
		if equalFold(x.Name, name) {
			out = append(out, x.Value)
		}
	}
	return out
}

// ConnectionIDs returns every I: line: the typed ConnectionID first, then
// repeated lines (an AuditEndpoint response lists one per connection).
func (p *Parameters) ConnectionIDs() []string {
	if p.ConnectionID == "" {
		return nil
	}
	return append([]string{p.ConnectionID}, p.ExtraValues("I")...)
}

// SpecificEndpoints returns every Z: line (a wildcarded AuditEndpoint
// response lists one per endpoint).
func (p *Parameters) SpecificEndpoints() []string {
	if p.SpecificEndpoint == "" {
		return nil
	}
	return append([]string{p.SpecificEndpoint}, p.ExtraValues("Z")...)
}

// AckRequested reports whether the message carries an empty K: line, which
// in a final response asks for a "000" response acknowledgement.
func (p *Parameters) AckRequested() bool {
	return p.ResponseAck != nil && len(p.ResponseAck) == 0
}

// Stat returns the value of one ConnectionParameters statistic (e.g. "PS").
func (p *Parameters) Stat(name string) (string, bool) {
	for _, c := range p.ConnectionParams {
		if equalFold(c.Name, name) {
			return c.Value, true
		}
	}
	return "", false
}

// Command is an MGCP command (RFC 3435 §3.2.1).
type Command struct {
	Verb          Verb         `json:"verb,omitempty"`
	TransactionID uint32       `json:"transaction_id,omitempty"` // 1..999999999, §3.2.1.2
	Endpoint      EndpointName `json:"endpoint,omitempty"`       // §3.2.1.3
	Version       string       `json:"version,omitempty"`        // "1.0" (or "0.1"); empty means "1.0" when serializing
	Profile       string       `json:"profile,omitempty"`        // optional profile after the version, e.g. "NCS 1.0"
	Parameters
	SDP []byte `json:"-"` // session description after the empty line, byte-exact
}

// Response is an MGCP response (RFC 3435 §3.3). Code 000 is a response
// acknowledgement.
type Response struct {
	Code          ReturnCode `json:"code"`
	TransactionID uint32     `json:"transaction_id"`
	Package       string     `json:"package,omitempty"` // "/pkg" after the transaction id, for 8xx codes
	Comment       string     `json:"comment,omitempty"` // commentary, free text
	Parameters
	SDP []byte `json:"-"`
}

// Message is a *Command or a *Response.
type Message interface {
	// AppendTo appends the wire form of the message to b.
	AppendTo(b []byte) []byte
	// String returns the wire form.
	String() string
	// TxID returns the transaction identifier.
	TxID() uint32
	isMessage()
}

func (*Command) isMessage()  {}
func (*Response) isMessage() {}

// TxID returns the transaction identifier.
func (c *Command) TxID() uint32 { return c.TransactionID }

// TxID returns the transaction identifier.
func (r *Response) TxID() uint32 { return r.TransactionID }

// NewResponse builds a response to cmd with the given code and the
// standard commentary for it.
func NewResponse(cmd *Command, code ReturnCode) *Response {
	return &Response{Code: code, TransactionID: cmd.TransactionID, Comment: code.Text()}
}

// equalFold is an ASCII-only case-insensitive comparison.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x != y && lower(x) != lower(y) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// toLower returns s in ASCII lower case, without allocating when it
// already is.
func toLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
}

// toUpper returns s in ASCII upper case, without allocating when it
// already is.
func toUpper(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = upper(b[j])
			}
			return string(b)
		}
	}
	return s
}
