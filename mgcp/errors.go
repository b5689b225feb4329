package mgcp

import (
	"errors"
	"fmt"
)

// Sentinel errors of the package.
var (
	// ErrTimeout is returned when a transaction got no final response within
	// the retransmission limits (RFC 3435 §3.5.3: Max2 or T-max).
	ErrTimeout = errors.New("mgcp: transaction timed out")
	// ErrClosed is returned by operations on a closed CallAgent.
	ErrClosed = errors.New("mgcp: call agent closed")
	// ErrTooManyPending is returned by Do when the table of outstanding
	// transactions is full.
	ErrTooManyPending = errors.New("mgcp: too many outstanding transactions")
	// ErrQueueFull is returned by Do when a peer's window is full and so
	// is the queue of commands waiting for it (Config.WindowQueue).
	ErrQueueFull = errors.New("mgcp: peer's transaction queue is full")
	// ErrMessageTooBig is returned when a serialized command exceeds the
	// maximum datagram size.
	ErrMessageTooBig = errors.New("mgcp: message exceeds maximum datagram size")
)

// ParseError describes malformed MGCP input. Line and Column are 1-based
// and count from the start of the datagram. Code is the return code a
// receiver should answer with (510 unless a more precise code applies);
// TransactionID is non-zero when the command line was readable, so that an
// error response can still be sent.
type ParseError struct {
	Line          int
	Column        int
	Text          string // the offending text, truncated to 40 bytes
	Reason        string
	Code          ReturnCode
	TransactionID uint32
}

func (e *ParseError) Error() string {
	if e.Text != "" {
		return fmt.Sprintf("%d:%d: %s: %q", e.Line, e.Column, e.Reason, e.Text)
	}
	return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Reason)
}

// ReturnCode returns the code a receiver should answer with.
func (e *ParseError) ReturnCode() ReturnCode {
	if e.Code == 0 {
		return CodeProtocolError
	}
	return e.Code
}

// ResponseError is returned by the typed helpers when the gateway answered
// with anything other than a success (2xx) code.
type ResponseError struct {
	Verb     Verb
	Endpoint string
	Response *Response
}

func (e *ResponseError) Error() string {
	c := e.Response.Comment
	if c == "" {
		c = e.Response.Code.Text()
	}
	return fmt.Sprintf("mgcp: %s %s: %s %s", e.Verb, e.Endpoint, e.Response.Code, c)
}

// Code returns the response's return code.
func (e *ResponseError) Code() ReturnCode { return e.Response.Code }

// Temporary reports whether the error class is transient (4xx).
func (e *ResponseError) Temporary() bool { return e.Response.Code.Class() == ClassTransient }

func truncate(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max]
	}
	return s
}
