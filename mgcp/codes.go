package mgcp

import "strconv"

// ReturnCode is the three-digit code of an MGCP response (RFC 3435 §2.4,
// with the usage notes of RFC 3661).
type ReturnCode int

// Return codes defined by RFC 3435 §2.4.
const (
	CodeResponseAck ReturnCode = 0 // "000": response acknowledgement (§3.5.6)

	CodeInProgress ReturnCode = 100 // transaction is being executed
	CodeQueued     ReturnCode = 101 // transaction has been queued

	CodeOK                ReturnCode = 200 // completed normally
	CodeConnectionDeleted ReturnCode = 250 // connection deleted (DLCX only)

	CodeTransientError        ReturnCode = 400 // unspecified transient error
	CodeOffHook               ReturnCode = 401 // phone is already off hook
	CodeOnHook                ReturnCode = 402 // phone is already on hook
	CodeNoResources           ReturnCode = 403 // insufficient resources now
	CodeNoBandwidth           ReturnCode = 404 // insufficient bandwidth now
	CodeEndpointRestarting    ReturnCode = 405 // endpoint is restarting
	CodeTimeout               ReturnCode = 406 // transaction timed out
	CodeAborted               ReturnCode = 407 // transaction aborted by a later command
	CodeOverload              ReturnCode = 409 // processing overload
	CodeNoEndpointAvailable   ReturnCode = 410 // no endpoint available for "$"
	CodeEndpointUnknown       ReturnCode = 500 // endpoint unknown
	CodeEndpointNotReady      ReturnCode = 501 // endpoint not ready / out of service
	CodeNoResourcesPermanent  ReturnCode = 502 // insufficient resources (permanent)
	CodeWildcardTooComplex    ReturnCode = 503 // "all of" wildcard too complicated
	CodeUnknownCommand        ReturnCode = 504 // unknown or unsupported command
	CodeUnsupportedRemoteSDP  ReturnCode = 505 // unsupported RemoteConnectionDescriptor
	CodeLCOAndSDPConflict     ReturnCode = 506 // cannot satisfy both LCO and remote SDP
	CodeUnsupportedFunction   ReturnCode = 507 // unsupported functionality
	CodeUnknownQuarantine     ReturnCode = 508 // unknown/unsupported QuarantineHandling
	CodeRemoteSDPError        ReturnCode = 509 // error in RemoteConnectionDescriptor
	CodeProtocolError         ReturnCode = 510 // protocol error
	CodeUnknownExtension      ReturnCode = 511 // unrecognized extension (X+ parameter)
	CodeCannotDetectEvent     ReturnCode = 512 // gateway cannot detect the event
	CodeCannotGenerateSignal  ReturnCode = 513 // gateway cannot generate the signal
	CodeCannotAnnounce        ReturnCode = 514 // cannot send the announcement
	CodeIncorrectConnectionID ReturnCode = 515 // incorrect connection id
	CodeUnknownCallID         ReturnCode = 516 // unknown call id
	CodeInvalidMode           ReturnCode = 517 // unsupported or invalid mode
	CodeUnknownPackage        ReturnCode = 518 // unsupported or unknown package
	CodeNoDigitMap            ReturnCode = 519 // endpoint has no digit map
	CodeEndpointRestarting5xx ReturnCode = 520 // endpoint is restarting
	CodeRedirected            ReturnCode = 521 // endpoint redirected to another call agent
	CodeNoSuchEventOrSignal   ReturnCode = 522 // no such event or signal
	CodeUnknownAction         ReturnCode = 523 // unknown action or illegal combination
	CodeLCOInconsistent       ReturnCode = 524 // internal inconsistency in LCO
	CodeLCOUnknownExtension   ReturnCode = 525 // unknown extension in LCO
	CodeNoBandwidthPermanent  ReturnCode = 526 // insufficient bandwidth (permanent)
	CodeMissingRemoteSDP      ReturnCode = 527 // missing RemoteConnectionDescriptor
	CodeIncompatibleVersion   ReturnCode = 528 // incompatible protocol version
	CodeHardwareFailure       ReturnCode = 529 // internal hardware failure
	CodeCASError              ReturnCode = 530 // CAS signaling protocol error
	CodeTrunkGroupFailure     ReturnCode = 531 // failure of a grouping of trunks
	CodeLCOUnsupportedValue   ReturnCode = 532 // unsupported value(s) in LCO
	CodeResponseTooBig        ReturnCode = 533 // response too big
	CodeCodecNegotiation      ReturnCode = 534 // codec negotiation failure
	CodePacketization         ReturnCode = 535 // packetization period not supported
	CodeUnknownRestartMethod  ReturnCode = 536 // unknown or unsupported RestartMethod
	CodeUnknownDigitMapExt    ReturnCode = 537 // unknown or unsupported digit map extension
	CodeEventParameterError   ReturnCode = 538 // event/signal parameter error
	CodeInvalidParameter      ReturnCode = 539 // invalid or unsupported command parameter
	CodeConnectionLimit       ReturnCode = 540 // per-endpoint connection limit exceeded
	CodeLCOInvalid            ReturnCode = 541 // invalid or unsupported LCO
)

// CodeClass groups return codes by their first digit (RFC 3435 §2.4).
type CodeClass int

// Classes of return codes.
const (
	ClassInvalid         CodeClass = iota // not a valid MGCP return code
	ClassAck                              // 000, response acknowledgement
	ClassProvisional                      // 1xx
	ClassSuccess                          // 2xx
	ClassTransient                        // 4xx: retrying later may succeed
	ClassPermanent                        // 5xx
	ClassPackageSpecific                  // 8xx, defined by a package
)

func (c CodeClass) String() string {
	switch c {
	case ClassAck:
		return "ack"
	case ClassProvisional:
		return "provisional"
	case ClassSuccess:
		return "success"
	case ClassTransient:
		return "transient"
	case ClassPermanent:
		return "permanent"
	case ClassPackageSpecific:
		return "package-specific"
	}
	return "invalid"
}

// Class reports which class the code belongs to.
func (c ReturnCode) Class() CodeClass {
	switch {
	case c == 0:
		return ClassAck
	case c >= 100 && c <= 199:
		return ClassProvisional
	case c >= 200 && c <= 299:
		return ClassSuccess
	case c >= 400 && c <= 499:
		return ClassTransient
	case c >= 500 && c <= 599:
		return ClassPermanent
	case c >= 800 && c <= 899:
		return ClassPackageSpecific
	}
	return ClassInvalid
}

// IsProvisional reports a 1xx code.
func (c ReturnCode) IsProvisional() bool { return c.Class() == ClassProvisional }

// IsSuccess reports a 2xx code.
func (c ReturnCode) IsSuccess() bool { return c.Class() == ClassSuccess }

// IsFinal reports whether the code ends a transaction (anything but 000 and 1xx).
func (c ReturnCode) IsFinal() bool {
	cl := c.Class()
	return cl != ClassAck && cl != ClassProvisional && cl != ClassInvalid
}

var codeText = map[ReturnCode]string{
	0: "Response Acknowledgement", 100: "Transaction in progress", 101: "Transaction queued",
	200: "OK", 250: "Connection deleted",
	400: "Transient error", 401: "Phone off-hook", 402: "Phone on-hook",
	403: "Insufficient resources", 404: "Insufficient bandwidth", 405: "Endpoint restarting",
	406: "Timeout", 407: "Aborted", 409: "Overload", 410: "No endpoint available",
	500: "Endpoint unknown", 501: "Endpoint not ready", 502: "Insufficient resources",
	503: "Wildcard too complicated", 504: "Unknown or unsupported command",
	505: "Unsupported RemoteConnectionDescriptor", 506: "Cannot satisfy LocalConnectionOptions and RemoteConnectionDescriptor",
	507: "Unsupported functionality", 508: "Unknown or unsupported quarantine handling",
	509: "Error in RemoteConnectionDescriptor", 510: "Protocol error", 511: "Unrecognized extension",
	512: "Cannot detect event", 513: "Cannot generate signal", 514: "Cannot send announcement",
	515: "Incorrect connection-id", 516: "Unknown call-id", 517: "Unsupported or invalid mode",
	518: "Unsupported or unknown package", 519: "Endpoint has no digit map", 520: "Endpoint restarting",
	521: "Endpoint redirected", 522: "No such event or signal", 523: "Unknown action or illegal combination of actions",
	524: "Internal inconsistency in LocalConnectionOptions", 525: "Unknown extension in LocalConnectionOptions",
	526: "Insufficient bandwidth", 527: "Missing RemoteConnectionDescriptor", 528: "Incompatible protocol version",
	529: "Internal hardware failure", 530: "CAS signaling protocol error", 531: "Failure of a grouping of trunks",
	532: "Unsupported value in LocalConnectionOptions", 533: "Response too big", 534: "Codec negotiation failure",
	535: "Packetization period not supported", 536: "Unknown or unsupported RestartMethod",
	537: "Unknown or unsupported digit map extension", 538: "Event/signal parameter error",
	539: "Invalid or unsupported command parameter", 540: "Per endpoint connection limit exceeded",
	541: "Invalid or unsupported LocalConnectionOptions",
}

// Text is the standard commentary for the code, or "" for codes RFC 3435
// does not define (such as package-specific 8xx codes).
func (c ReturnCode) Text() string { return codeText[c] }

// String prints the code as three digits, e.g. "000" or "510".
func (c ReturnCode) String() string {
	if c >= 0 && c < 1000 {
		var b [3]byte
		b[0] = byte('0' + c/100)
		b[1] = byte('0' + c/10%10)
		b[2] = byte('0' + c%10)
		return string(b[:])
	}
	return strconv.Itoa(int(c))
}
