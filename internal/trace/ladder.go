package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// The ladder of a capture: every MGCP and SIP message of a pcap or pcapng
// file (ours, tcpdump's, Wireshark's) in time order, one line each, with
// MGCP responses joined to their commands and MGCP calls joined to the SIP
// Call-IDs they carry. The join is by media address: the gateway's
// LocalConnectionDescriptor (a CRCX/MDCX answer) and the far end's
// description (the body of an MDCX) are the SDPs mgsip translates into
// and from SIP, so the same IP and port appear on both sides.

// LadderOptions select what Ladder prints.
type LadderOptions struct {
	// Call keeps only the messages of one call: an MGCP call id (C:) or a
	// SIP Call-ID ("" = every message).
	Call string
}

// message is one MGCP or SIP message of the capture.
type message struct {
	at       time.Time
	src, dst string
	proto    string // "mgcp" or "sip"
	first    string // the start line
	mgcpTx   string // MGCP transaction id
	mgcpCmd  bool
	verb     string // MGCP verb of a command, or of the command a response answers
	endpoint string
	mgcpCall string // C:
	sipCall  string // Call-ID
	media    []string
	note     string
}

// Ladder reads a capture from r and writes its ladder to w.
func Ladder(r io.Reader, w io.Writer, o LadderOptions) error {
	msgs, err := readCapture(r)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return errors.New("no MGCP or SIP message in the capture")
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].at.Before(msgs[j].at) })
	joinResponses(msgs)
	calls := joinCalls(msgs)
	keep := func(*message) bool { return true }
	if o.Call != "" {
		mg, sc := calls.sides(o.Call)
		keep = callFilter(msgs, mg, sc)
		n := 0
		for _, m := range msgs {
			if keep(m) {
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("no call %q in the capture", o.Call)
		}
	}
	ids := make([]string, 0, len(calls.mgcpToSIP))
	for k := range calls.mgcpToSIP {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	for _, k := range ids {
		if mg, _ := calls.sides(o.Call); o.Call == "" || mg[k] {
			fmt.Fprintf(w, "# MGCP call %s = SIP Call-ID %s\n", k, strings.Join(calls.mgcpToSIP[k], ", "))
		}
	}
	start := msgs[0].at
	fmt.Fprintf(w, "# time: milliseconds since the first message (%s UTC)\n", start.UTC().Format("2006-01-02 15:04:05.000"))
	for _, m := range msgs {
		if !keep(m) {
			continue
		}
		line := fmt.Sprintf("%10.3f  %-21s --> %-21s %-4s %s", float64(m.at.Sub(start).Microseconds())/1000, m.src, m.dst, m.proto, m.first)
		if m.note != "" {
			line += "  [" + m.note + "]"
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

// readCapture decodes the UDP (and single-segment TCP) payloads of a
// pcap or pcapng file.
func readCapture(r io.Reader) ([]*message, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("not a capture file: %w", err)
	}
	type source interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	var src source
	var link layers.LinkType
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("pcapng: %w", err)
		}
		src, link = ng, ng.LinkType()
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcap: %w", err)
		}
		src, link = pr, pr.LinkType()
	}
	var out []*message
	for range 10_000_000 { // bounded: a capture larger than this is cut
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("reading the capture: %w", err)
		}
		p := decodeFrame(link, data)
		if p == nil {
			continue
		}
		var sport, dport string
		var payload []byte
		if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			sport, dport, payload = strconv.Itoa(int(u.SrcPort)), strconv.Itoa(int(u.DstPort)), u.Payload
		} else if t, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			sport, dport, payload = strconv.Itoa(int(t.SrcPort)), strconv.Itoa(int(t.DstPort)), t.Payload
		} else {
			continue
		}
		nl := p.NetworkLayer()
		if nl == nil || len(payload) == 0 {
			continue
		}
		s := net.JoinHostPort(nl.NetworkFlow().Src().String(), sport)
		d := net.JoinHostPort(nl.NetworkFlow().Dst().String(), dport)
		for _, m := range parsePayload(payload) {
			m.at, m.src, m.dst = ci.Timestamp, s, d
			out = append(out, m)
		}
	}
	return out, nil
}

func decodeFrame(link layers.LinkType, data []byte) gopacket.Packet {
	var first gopacket.Decoder
	switch link {
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		if len(data) == 0 {
			return nil
		}
		if data[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		} else {
			first = layers.LayerTypeIPv4
		}
	case layers.LinkTypeEthernet:
		first = layers.LayerTypeEthernet
	case layers.LinkTypeLinuxSLL:
		first = layers.LayerTypeLinuxSLL
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		first = layers.LayerTypeLoopback
	default:
		return nil
	}
	return gopacket.NewPacket(data, first, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
}

var mgcpVerbs = map[string]bool{"EPCF": true, "CRCX": true, "MDCX": true, "DLCX": true, "RQNT": true, "NTFY": true,
	"AUEP": true, "AUCX": true, "RSIP": true, "MESG": true}

// parsePayload reads the MGCP messages (several when piggybacked, RFC
// 3435 §3.5.5) or the SIP message of a datagram; anything else is left
// out.
func parsePayload(b []byte) []*message {
	text := string(b)
	first, _, _ := strings.Cut(text, "\n")
	first = strings.TrimRight(first, "\r")
	f := strings.Fields(first)
	if len(f) == 0 {
		return nil
	}
	switch {
	case strings.HasPrefix(first, "SIP/2.0 ") || len(f) == 3 && f[2] == "SIP/2.0":
		return []*message{sipMessage(text, first)}
	case mgcpVerbs[strings.ToUpper(f[0])] || len(f[0]) == 3 && isDigits(f[0]) && len(f) > 1 && isDigits(f[1]):
		var out []*message
		for _, part := range splitPiggyback(text) {
			if m := mgcpMessage(part); m != nil {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// splitPiggyback splits MGCP messages separated by a line with a single
// dot.
func splitPiggyback(text string) []string {
	var parts []string
	var cur strings.Builder
	for _, l := range strings.SplitAfter(text, "\n") {
		if strings.TrimRight(l, "\r\n") == "." {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(l)
	}
	return append(parts, cur.String())
}

func mgcpMessage(text string) *message {
	head, body := splitBody(text)
	lines := strings.Split(head, "\n")
	first := strings.TrimRight(lines[0], "\r")
	f := strings.Fields(first)
	if len(f) < 2 {
		return nil
	}
	m := &message{proto: "mgcp", first: first, mgcpTx: f[1]}
	if mgcpVerbs[strings.ToUpper(f[0])] {
		m.mgcpCmd, m.verb = true, strings.ToUpper(f[0])
		if len(f) > 2 {
			m.endpoint = strings.ToLower(f[2])
		}
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if !ok {
			continue
		}
		switch strings.ToUpper(strings.TrimSpace(k)) {
		case "C":
			m.mgcpCall = strings.TrimSpace(v)
		}
	}
	m.media = mediaAddrs(body)
	return m
}

func sipMessage(text, first string) *message {
	head, body := splitBody(text)
	m := &message{proto: "sip", first: first}
	for _, l := range strings.Split(head, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "call-id", "i":
			m.sipCall = strings.TrimSpace(v)
		}
	}
	m.media = mediaAddrs(body)
	return m
}

// splitBody splits a message at its first empty line.
func splitBody(text string) (string, string) {
	if i := strings.Index(text, "\r\n\r\n"); i >= 0 {
		return text[:i], text[i+4:]
	}
	if i := strings.Index(text, "\n\n"); i >= 0 {
		return text[:i], text[i+2:]
	}
	return text, ""
}

// mediaAddrs lists the audio addresses (ip:port) of an SDP body: the
// connection address (session or media level) and each m=audio port.
func mediaAddrs(body string) []string {
	var addr string
	var out []string
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimRight(l, "\r")
		switch {
		case strings.HasPrefix(l, "c="):
			if f := strings.Fields(l[2:]); len(f) == 3 {
				addr = f[2]
			}
		case strings.HasPrefix(l, "m=audio "):
			if f := strings.Fields(l); len(f) > 1 && addr != "" && f[1] != "0" {
				out = append(out, net.JoinHostPort(addr, f[1]))
			}
		}
	}
	// A media-level c= after m= applies to it: fix up the last entry.
	if addr != "" && len(out) > 0 {
		_, port, _ := net.SplitHostPort(out[len(out)-1])
		out[len(out)-1] = net.JoinHostPort(addr, port)
	}
	return out
}

// joinResponses notes on each MGCP response the command it answers (same
// transaction id, opposite direction) and the time it took; the response
// inherits the command's verb, endpoint and call id.
func joinResponses(msgs []*message) {
	type key struct{ tx, from, to string }
	open := map[key]*message{}
	for _, m := range msgs {
		if m.proto != "mgcp" {
			continue
		}
		if m.mgcpCmd {
			open[key{m.mgcpTx, m.src, m.dst}] = m
			continue
		}
		var cmd *message
		if c, ok := open[key{m.mgcpTx, m.dst, m.src}]; ok {
			cmd = c
		} else {
			// Some gateways answer from another port: match the address.
			for k, c := range open {
				if k.tx == m.mgcpTx && hostOf(k.from) == hostOf(m.dst) && hostOf(k.to) == hostOf(m.src) {
					cmd = c
					break
				}
			}
		}
		if cmd == nil {
			m.note = "answers no command in the capture"
			continue
		}
		m.verb, m.endpoint = cmd.verb, cmd.endpoint
		if m.mgcpCall == "" {
			m.mgcpCall = cmd.mgcpCall
		}
		code := strings.Fields(m.first)[0]
		if code >= "200" { // finals end the transaction; 1xx do not
			delete(open, key{cmd.mgcpTx, cmd.src, cmd.dst})
		}
		m.note = fmt.Sprintf("%s %s, %.1f ms", cmd.verb, cmd.endpoint, float64(m.at.Sub(cmd.at).Microseconds())/1000)
	}
}

func hostOf(hp string) string {
	h, _, err := net.SplitHostPort(hp)
	if err != nil {
		return hp
	}
	return h
}

// callJoin maps MGCP call ids to the SIP Call-IDs sharing a media address.
type callJoin struct {
	mgcpToSIP map[string][]string
	sipToMGCP map[string][]string
}

// joinCalls joins each MGCP call to the SIP dialog that first carried
// its gateway's media address. The gateway's LocalConnectionDescriptor
// (in a CRCX/MDCX answer) is what mgsip puts in its own SDP, so the first
// SIP message with that address is mgsip's, in the dialog of that call;
// the same address may show up later in another dialog when a PBX passes
// SDP through between two lines of this mgsip, and that is not the call's.
func joinCalls(msgs []*message) callJoin {
	owner := map[string]string{} // gateway media address -> MGCP call
	for _, m := range msgs {
		if m.proto == "mgcp" && !m.mgcpCmd && m.mgcpCall != "" {
			for _, a := range m.media {
				owner[a] = m.mgcpCall
			}
		}
	}
	j := callJoin{mgcpToSIP: map[string][]string{}, sipToMGCP: map[string][]string{}}
	claimed := map[string]bool{}
	seen := map[[2]string]bool{}
	for _, m := range msgs { // in time order
		if m.proto != "sip" || m.sipCall == "" {
			continue
		}
		for _, a := range m.media {
			c, ok := owner[a]
			if !ok || claimed[a] {
				continue
			}
			claimed[a] = true
			if k := [2]string{c, m.sipCall}; !seen[k] {
				seen[k] = true
				j.mgcpToSIP[c] = append(j.mgcpToSIP[c], m.sipCall)
				j.sipToMGCP[m.sipCall] = append(j.sipToMGCP[m.sipCall], c)
			}
		}
	}
	for _, m := range msgs {
		if m.proto == "sip" && m.sipCall != "" && m.note == "" {
			if c := j.sipToMGCP[m.sipCall]; len(c) > 0 {
				m.note = "MGCP call " + strings.Join(c, ", ")
			}
		}
	}
	return j
}

// sides returns the MGCP call ids and SIP Call-IDs of the call named id.
func (j callJoin) sides(id string) (mgcpCalls, sipCalls map[string]bool) {
	mgcpCalls, sipCalls = map[string]bool{}, map[string]bool{}
	for c, s := range j.mgcpToSIP {
		if strings.EqualFold(c, id) {
			mgcpCalls[c] = true
			for _, x := range s {
				sipCalls[x] = true
			}
		}
	}
	for s, c := range j.sipToMGCP {
		if s == id {
			sipCalls[s] = true
			for _, x := range c {
				mgcpCalls[x] = true
			}
		}
	}
	if len(mgcpCalls) == 0 && len(sipCalls) == 0 {
		// Not joined: the id alone (a local call, or SDP not captured).
		mgcpCalls[id], sipCalls[id] = true, true
	}
	return mgcpCalls, sipCalls
}

// callFilter keeps the SIP messages of the call's Call-IDs, the MGCP
// messages with its call ids, and the endpoint's other MGCP messages
// (RQNT, NTFY) between the call's first and last MGCP message there.
func callFilter(msgs []*message, mg, sc map[string]bool) func(*message) bool {
	type span struct{ from, to time.Time }
	spans := map[string]*span{}
	for _, m := range msgs {
		if m.proto == "mgcp" && mg[m.mgcpCall] && m.endpoint != "" {
			s := spans[m.endpoint]
			if s == nil {
				s = &span{m.at, m.at}
				spans[m.endpoint] = s
			}
			s.to = m.at
		}
	}
	return func(m *message) bool {
		if m.proto == "sip" {
			return sc[m.sipCall]
		}
		if mg[m.mgcpCall] {
			return true
		}
		s := spans[m.endpoint]
		return s != nil && !m.at.Before(s.from) && !m.at.After(s.to)
	}
}
