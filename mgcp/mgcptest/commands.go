package mgcptest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// The commands a call agent sends a gateway (RFC 3435 §2.3). Each runs
// with g.mu held, checks everything before changing anything, and
// returns the response with the notifications that follow from an
// embedded request.

func (g *Gateway) crcx(cmd *mgcp.Command) (*mgcp.Response, []pendingNotify) {
	if cmd.CallID == "" || cmd.Mode == "" {
		return resp(cmd, mgcp.CodeProtocolError, "CRCX needs C: and M:"), nil
	}
	now := time.Now()
	var ep *endpoint
	if cmd.Endpoint.Wildcard() == '$' {
		pat := cmd.Endpoint
		for _, k := range g.order {
			if e := g.eps[k]; pat.Matches(e.Name) && len(e.Connections) == 0 && e.inService(now) && !e.refusesCalls(now) {
				ep = e
				break
			}
		}
		if ep == nil {
			return resp(cmd, mgcp.CodeNoEndpointAvailable, ""), nil
		}
	} else {
		var r *mgcp.Response
		if ep, r = g.endpoint(cmd); r != nil {
			return r, nil
		}
	}
	if ep.refusesCalls(now) {
		// RFC 3435 §2.3.12: after a graceful restart's delay, no new
		// connections.
		return resp(cmd, mgcp.CodeEndpointNotReady, "endpoint going out of service"), nil
	}
	if !cmd.Mode.Known() || (cmd.Mode == mgcp.ModeConfrnce && g.cfg.NoConference) {
		return resp(cmd, mgcp.CodeInvalidMode, ""), nil
	}
	if r := checkRequest(ep, cmd); r != nil {
		return r, nil
	}
	if limit := ep.connectionLimit(); len(ep.Connections) >= limit {
		// RFC 3435 §2.4 has a code for this, 540:
		// "per endpoint connection limit exceeded".
		return resp(cmd, mgcp.CodeConnectionLimit, "connection limit "+strconv.Itoa(limit)+" reached"), nil
	}
	if (cmd.Mode == mgcp.ModeSendRecv || cmd.Mode == mgcp.ModeConfrnce) && len(cmd.SDP) == 0 {
		return resp(cmd, mgcp.CodeMissingRemoteSDP, ""), nil
	}
	codecs := g.cfg.Codecs
	if cmd.LocalOptions != nil && len(cmd.LocalOptions.Codecs) > 0 {
		codecs = nil
		for _, want := range cmd.LocalOptions.Codecs {
			for _, have := range g.cfg.Codecs {
				if strings.EqualFold(want, have) {
					codecs = append(codecs, have)
				}
			}
		}
		if len(codecs) == 0 {
			return resp(cmd, mgcp.CodeCodecNegotiation, ""), nil
		}
	}
	ptime := 20
	if cmd.LocalOptions != nil && !cmd.LocalOptions.Packetization.IsZero() {
		ptime = cmd.LocalOptions.Packetization.Min
	}
	g.nextConn++
	c := &Connection{
		ID:        strings.ToUpper(strconv.FormatUint(0xA000+g.nextConn, 16)),
		CallID:    cmd.CallID,
		Mode:      cmd.Mode,
		RemoteSDP: cmd.SDP,
		RTPPort:   g.nextPort,
		Options:   cmd.LocalOptions,
	}
	if g.cfg.RTP {
		st, err := newRTPStream(g.media)
		if err != nil {
			return resp(cmd, mgcp.CodeNoResources, "no RTP port"), nil
		}
		c.stream, c.RTP, c.RTPPort = st, &st.stats, st.port()
		st.update(c.Mode, c.RemoteSDP)
	} else {
		// Even ports from the base up, wrapping before 65535 (a long load
		// run creates more connections than there are ports).
		g.nextPort += 2
		if g.nextPort > 65534 {
			g.nextPort = g.cfg.RTPPortBase
		}
	}
	c.LocalSDP = g.sdp(c.ID, c.RTPPort, codecs, ptime)
	ep.Connections = append(ep.Connections, c)
	pending := g.applyRequest(ep, cmd)
	r := resp(cmd, mgcp.CodeOK, "")
	r.ConnectionID = c.ID
	if cmd.Endpoint.IsWildcard() {
		r.SpecificEndpoint = ep.Name.String()
	}
	r.SDP = c.LocalSDP
	return r, pending
}

var payloadTypes = map[string]string{"PCMU": "0", "PCMA": "8", "G729": "18", "telephone-event": "101"}

// sdp writes the LocalConnectionDescriptor a typical gateway returns.
func (g *Gateway) sdp(id string, port int, codecs []string, ptime int) []byte {
	ipv := "IP4"
	if g.media.Is6() {
		ipv = "IP6"
	}
	var pts []string
	var attrs strings.Builder
	for _, c := range codecs {
		pt, ok := payloadTypes[c]
		if !ok {
			continue
		}
		pts = append(pts, pt)
		fmt.Fprintf(&attrs, "a=rtpmap:%s %s/8000\r\n", pt, c)
		if c == "telephone-event" {
			fmt.Fprintf(&attrs, "a=fmtp:%s 0-15\r\n", pt)
		}
	}
	return []byte(fmt.Sprintf("v=0\r\no=- %s 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\nm=audio %d RTP/AVP %s\r\n%sa=ptime:%d\r\n",
		id, ipv, g.media, ipv, g.media, port, strings.Join(pts, " "), attrs.String(), ptime))
}

func findConn(ep *endpoint, id string) (int, *Connection) {
	for i, c := range ep.Connections {
		if strings.EqualFold(c.ID, id) {
			return i, c
		}
	}
	return -1, nil
}

// connection finds the endpoint and connection a command names.
func (g *Gateway) connection(cmd *mgcp.Command) (*endpoint, *Connection, *mgcp.Response) {
	ep, r := g.endpoint(cmd)
	if r != nil {
		return nil, nil, r
	}
	_, c := findConn(ep, cmd.ConnectionID)
	if c == nil {
		return nil, nil, resp(cmd, mgcp.CodeIncorrectConnectionID, "")
	}
	return ep, c, nil
}

func (g *Gateway) mdcx(cmd *mgcp.Command) (*mgcp.Response, []pendingNotify) {
	ep, c, r := g.connection(cmd)
	if r != nil {
		return r, nil
	}
	if cmd.CallID != "" && !strings.EqualFold(cmd.CallID, c.CallID) {
		return resp(cmd, mgcp.CodeUnknownCallID, ""), nil
	}
	if cmd.Mode != "" {
		if !cmd.Mode.Known() || (cmd.Mode == mgcp.ModeConfrnce && g.cfg.NoConference) {
			// RFC 3435 §2.3.3: a gateway that cannot mix refuses the mode.
			return resp(cmd, mgcp.CodeInvalidMode, ""), nil
		}
		if (cmd.Mode == mgcp.ModeSendRecv || cmd.Mode == mgcp.ModeConfrnce) && len(cmd.SDP) == 0 && len(c.RemoteSDP) == 0 {
			return resp(cmd, mgcp.CodeMissingRemoteSDP, ""), nil
		}
	}
	if r := checkRequest(ep, cmd); r != nil {
		return r, nil
	}
	if cmd.Mode != "" {
		c.Mode = cmd.Mode
	}
	if len(cmd.SDP) > 0 {
		c.RemoteSDP = cmd.SDP
	}
	if c.stream != nil {
		c.stream.update(c.Mode, c.RemoteSDP)
	}
	pending := g.applyRequest(ep, cmd)
	r = resp(cmd, mgcp.CodeOK, "")
	r.SDP = c.LocalSDP
	return r, pending
}

func (g *Gateway) dlcx(cmd *mgcp.Command) (*mgcp.Response, []pendingNotify) {
	var targets []*endpoint
	if cmd.Endpoint.Wildcard() == '*' {
		now := time.Now()
		for _, k := range g.order {
			if e := g.eps[k]; cmd.Endpoint.Matches(e.Name) && e.inService(now) {
				targets = append(targets, e)
			}
		}
	} else {
		ep, r := g.endpoint(cmd)
		if r != nil {
			return r, nil
		}
		targets = []*endpoint{ep}
	}
	matches := func(c *Connection) bool {
		return (cmd.ConnectionID == "" || strings.EqualFold(c.ID, cmd.ConnectionID)) &&
			(cmd.CallID == "" || strings.EqualFold(c.CallID, cmd.CallID))
	}
	found := 0
	for _, ep := range targets {
		for _, c := range ep.Connections {
			if matches(c) {
				found++
			}
		}
	}
	if cmd.ConnectionID != "" && found == 0 {
		return resp(cmd, mgcp.CodeIncorrectConnectionID, ""), nil
	}
	if cmd.CallID != "" && found == 0 {
		return resp(cmd, mgcp.CodeUnknownCallID, ""), nil
	}
	for _, ep := range targets {
		if r := checkRequest(ep, cmd); r != nil {
			return r, nil
		}
	}
	var stats *RTPStats
	var pending []pendingNotify
	for _, ep := range targets {
		kept := ep.Connections[:0]
		for _, c := range ep.Connections {
			if !matches(c) {
				kept = append(kept, c)
				continue
			}
			if c.stream != nil {
				c.stream.close()
				c.stream = nil
				stats = c.RTP
			}
		}
		clear(ep.Connections[len(kept):])
		ep.Connections = kept
		pending = append(pending, g.applyRequest(ep, cmd)...)
	}
	if cmd.ConnectionID != "" {
		r := resp(cmd, mgcp.CodeConnectionDeleted, "")
		r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: "1000"}, {Name: "OS", Value: "160000"},
			{Name: "PR", Value: "998"}, {Name: "OR", Value: "159680"}, {Name: "PL", Value: "2"},
			{Name: "JI", Value: "5"}, {Name: "LA", Value: "20"}}
		if stats != nil {
			ps, pr := stats.Sent(), stats.Received()
			r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: strconv.FormatUint(ps, 10)},
				{Name: "OS", Value: strconv.FormatUint(ps*160, 10)}, {Name: "PR", Value: strconv.FormatUint(pr, 10)},
				{Name: "OR", Value: strconv.FormatUint(pr*160, 10)}}
		}
		return r, pending
	}
	return resp(cmd, mgcp.CodeOK, ""), pending
}

func (g *Gateway) rqnt(cmd *mgcp.Command) (*mgcp.Response, []pendingNotify) {
	ep, r := g.endpoint(cmd)
	if r != nil {
		return r, nil
	}
	if cmd.RequestID == "" {
		return resp(cmd, mgcp.CodeProtocolError, "RQNT needs X:"), nil
	}
	if r := checkRequest(ep, cmd); r != nil {
		return r, nil
	}
	return resp(cmd, mgcp.CodeOK, ""), g.applyRequest(ep, cmd)
}

func (g *Gateway) auep(cmd *mgcp.Command) *mgcp.Response {
	if cmd.Endpoint.Wildcard() == '*' {
		r := resp(cmd, mgcp.CodeOK, "")
		for _, k := range g.order {
			e := g.eps[k]
			if !cmd.Endpoint.Matches(e.Name) {
				continue
			}
			if r.SpecificEndpoint == "" {
				r.SpecificEndpoint = e.Name.String()
			} else {
				r.Extra = append(r.Extra, mgcp.Param{Name: "Z", Value: e.Name.String()})
			}
		}
		if r.SpecificEndpoint == "" {
			return resp(cmd, mgcp.CodeEndpointUnknown, "")
		}
		return r
	}
	ep, r := g.endpoint(cmd)
	if r != nil {
		return r
	}
	r = resp(cmd, mgcp.CodeOK, "")
	for _, f := range cmd.RequestedInfo {
		switch f {
		case "R":
			r.RequestedEvents = append([]mgcp.RequestedEvent{}, ep.RequestedEvents...)
		case "S":
			r.Signals = append([]mgcp.Event{}, ep.Signals...)
			if ep.MWI {
				r.Signals = append(r.Signals, mgcp.Event{Package: "L", Name: "vmwi", Params: []string{"+"}})
			}
		case "D":
			r.DigitMap = ep.DigitMap
		case "X":
			r.RequestID = ep.RequestID
		case "N":
			r.NotifiedEntity = ep.NotifiedEntity
		case "Q":
			r.QuarantineHandling = ep.QuarantineHandling
		case "O":
			r.ObservedEvents = append([]mgcp.Event{}, ep.observed...)
		case "I":
			for i, c := range ep.Connections {
				if i == 0 {
					r.ConnectionID = c.ID
				} else {
					r.Extra = append(r.Extra, mgcp.Param{Name: "I", Value: c.ID})
				}
			}
		case "ES":
			hook := "hu"
			if ep.OffHook {
				hook = "hd"
			}
			r.EventStates = []mgcp.Event{{Package: "L", Name: hook}}
		case "A":
			r.Capabilities = "a:" + strings.Join(g.cfg.Codecs, ";") + ", p:10-30, e:on, s:on, v:L;G;D, m:sendonly;recvonly;sendrecv;inactive;netwloop"
		case "PL":
			r.PackageList = ep.packageList()
		case "MD":
			r.MaxDatagram = 4000
		case "RM":
			r.RestartMethod = mgcp.RestartRestart
		case "RD":
			r.RestartDelay, r.HasRestartDelay = 0, true
		case "B":
			r.BearerInformation = "e:mu"
		}
	}
	return r
}

func (g *Gateway) aucx(cmd *mgcp.Command) *mgcp.Response {
	ep, c, r := g.connection(cmd)
	if r != nil {
		return r
	}
	r = resp(cmd, mgcp.CodeOK, "")
	var sdps [][]byte
	for _, f := range cmd.RequestedInfo {
		switch f {
		case "C":
			r.CallID = c.CallID
		case "N":
			r.NotifiedEntity = ep.NotifiedEntity
		case "L":
			r.LocalOptions = c.Options
		case "M":
			r.Mode = c.Mode
		case "LC":
			sdps = append(sdps, c.LocalSDP)
		case "RC":
			sdps = append(sdps, c.RemoteSDP)
		case "P":
			r.ConnectionParams = []mgcp.ConnParam{{Name: "PS", Value: "0"}, {Name: "PR", Value: "0"}}
		}
	}
	// RFC 3435 §2.3.11: with both descriptors, the local one comes first,
	// separated by an empty line.
	for i, s := range sdps {
		if i > 0 {
			r.SDP = append(r.SDP, "\r\n"...)
		}
		r.SDP = append(r.SDP, s...)
	}
	return r
}
