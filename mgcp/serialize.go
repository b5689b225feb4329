package mgcp

import "strconv"

const eol = "\r\n"

// AppendTo appends the wire form of the command to b. Lines end in CRLF;
// the verb is upper case; typed parameters come in a fixed order, then
// Extra in its own order; the SDP body follows an empty line unchanged.
func (c *Command) AppendTo(b []byte) []byte {
	b = append(b, c.Verb...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(c.TransactionID), 10)
	b = append(b, ' ')
	b = c.Endpoint.AppendTo(b)
	b = append(b, " MGCP "...)
	if c.Version == "" {
		b = append(b, "1.0"...)
	} else {
		b = append(b, c.Version...)
	}
	if c.Profile != "" {
		b = append(b, ' ')
		b = append(b, c.Profile...)
	}
	b = append(b, eol...)
	b = c.Parameters.appendTo(b)
	return appendSDP(b, c.SDP)
}

// String returns the wire form of the command.
func (c *Command) String() string { return string(c.AppendTo(make([]byte, 0, 256))) }

// AppendTo appends the wire form of the response to b.
func (r *Response) AppendTo(b []byte) []byte {
	if c := r.Code; c >= 0 && c < 1000 {
		b = append(b, byte('0'+c/100), byte('0'+c/10%10), byte('0'+c%10))
	} else {
		b = strconv.AppendInt(b, int64(c), 10)
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(r.TransactionID), 10)
	if r.Package != "" {
		b = append(b, " /"...)
		b = append(b, r.Package...)
	}
	if r.Comment != "" {
		b = append(b, ' ')
		b = append(b, r.Comment...)
	}
	b = append(b, eol...)
	b = r.Parameters.appendTo(b)
	return appendSDP(b, r.SDP)
}

// String returns the wire form of the response.
func (r *Response) String() string { return string(r.AppendTo(make([]byte, 0, 256))) }

func appendSDP(b, sdp []byte) []byte {
	if len(sdp) == 0 {
		return b
	}
	b = append(b, eol...)
	return append(b, sdp...)
}

// AppendDatagram appends several messages piggybacked into one datagram,
// separated by "." lines (RFC 3435 §3.5.5).
func AppendDatagram(b []byte, msgs ...Message) []byte {
	for i, m := range msgs {
		if i > 0 {
			if n := len(b); n > 0 && b[n-1] != '\n' {
				b = append(b, eol...)
			}
			b = append(b, "."+eol...)
		}
		b = m.AppendTo(b)
	}
	return b
}

func appendLine(b []byte, name string) []byte {
	b = append(b, name...)
	return append(b, ':', ' ')
}

func endLine(b []byte) []byte {
	// An empty value leaves "Name: "; drop the trailing space.
	if n := len(b); n > 0 && b[n-1] == ' ' && b[n-2] == ':' {
		b = b[:n-1]
	}
	return append(b, eol...)
}

func (p *Parameters) appendTo(b []byte) []byte {
	str := func(name, v string) {
		if v != "" {
			b = appendLine(b, name)
			b = append(b, v...)
			b = endLine(b)
		}
	}
	if p.ResponseAck != nil {
		b = appendLine(b, "K")
		for i, r := range p.ResponseAck {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = strconv.AppendUint(b, uint64(r.From), 10)
			if r.To != r.From {
				b = append(b, '-')
				b = strconv.AppendUint(b, uint64(r.To), 10)
			}
		}
		b = endLine(b)
	}
	str("B", p.BearerInformation)
	str("C", p.CallID)
	str("I", p.ConnectionID)
	str("N", p.NotifiedEntity)
	str("X", p.RequestID)
	if p.LocalOptions != nil {
		b = appendLine(b, "L")
		b = p.LocalOptions.AppendTo(b)
		b = endLine(b)
	}
	str("M", string(p.Mode))
	if p.RequestedEvents != nil {
		b = appendLine(b, "R")
		b = appendRequestedEvents(b, p.RequestedEvents)
		b = endLine(b)
	}
	events := func(name string, es []Event) {
		if es != nil {
			b = appendLine(b, name)
			b = appendEventList(b, es)
			b = endLine(b)
		}
	}
	events("S", p.Signals)
	str("D", p.DigitMap)
	events("O", p.ObservedEvents)
	if p.ConnectionParams != nil {
		b = appendLine(b, "P")
		for i, c := range p.ConnectionParams {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, c.Name...)
			b = append(b, '=')
			b = append(b, c.Value...)
		}
		b = endLine(b)
	}
	if p.Reason != nil {
		b = appendLine(b, "E")
		b = append(b, byte('0'+p.Reason.Code/100%10), byte('0'+p.Reason.Code/10%10), byte('0'+p.Reason.Code%10))
		if p.Reason.Text != "" {
			b = append(b, ' ')
			b = append(b, p.Reason.Text...)
		}
		b = endLine(b)
	}
	str("Z", p.SpecificEndpoint)
	str("Z2", p.SecondEndpoint)
	str("I2", p.SecondConnection)
	if p.RequestedInfo != nil {
		b = appendLine(b, "F")
		for i, f := range p.RequestedInfo {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, f...)
		}
		b = endLine(b)
	}
	str("Q", p.QuarantineHandling)
	events("T", p.DetectEvents)
	str("RM", string(p.RestartMethod))
	if p.HasRestartDelay {
		b = appendLine(b, "RD")
		b = strconv.AppendInt(b, int64(p.RestartDelay), 10)
		b = endLine(b)
	}
	events("ES", p.EventStates)
	str("A", p.Capabilities)
	str("PL", p.PackageList)
	if p.MaxDatagram > 0 {
		b = appendLine(b, "MD")
		b = strconv.AppendInt(b, int64(p.MaxDatagram), 10)
		b = endLine(b)
	}
	for _, x := range p.Extra {
		b = appendLine(b, x.Name)
		b = append(b, x.Value...)
		b = endLine(b)
	}
	return b
}
