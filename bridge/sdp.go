package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/pion/sdp/v3"
)

// SDP translation between the gateway's connection descriptors and the
// SIP side, with pion/sdp for every parse and build. The gateway's and the
// far end's media addresses pass through untouched: media flows directly.

// ErrNoCommonCodec: the two sides share no audio codec.
var ErrNoCommonCodec = errors.New("bridge: no codec in common")

// staticPayloads names the static RTP payload types of RFC 3551 §6 that
// gateways send without an rtpmap.
var staticPayloads = map[string]string{
	"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722", "15": "G728", "18": "G729",
}

// codecName returns the encoding name of payload type pt in md.
func codecName(md *sdp.MediaDescription, pt string) string {
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		num, rest, ok := strings.Cut(a.Value, " ")
		if ok && num == pt {
			name, _, _ := strings.Cut(rest, "/")
			return name
		}
	}
	return staticPayloads[pt]
}

// isDTMF reports whether the encoding carries RFC 4733 events.
func isDTMF(name string) bool { return strings.EqualFold(name, "telephone-event") }

// audio returns the first audio m-line.
func audio(s *sdp.SessionDescription) (*sdp.MediaDescription, error) {
	for _, md := range s.MediaDescriptions {
		if md.MediaName.Media == "audio" {
			return md, nil
		}
	}
	return nil, errors.New("bridge: SDP has no audio stream")
}

func parseSDP(b []byte) (*sdp.SessionDescription, error) {
	// Some gateways put letters in the o= session id or version (RFC 4566
	// §5.2 wants digits), which pion refuses; mgsip replaces that line
	// anyway. Mended before the parse, so that such a gateway's every
	// SDP is not parsed twice.
	if fixed, ok := numericOrigin(b); ok {
		b = fixed
	}
	var s sdp.SessionDescription
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("bridge: bad SDP: %w", err)
	}
	return &s, nil
}

// numericOrigin returns b with the non-numeric session id and version of
// its first o= line replaced by 0, or false when they are numbers (or
// there is no o= line of six fields).
func numericOrigin(b []byte) ([]byte, bool) {
	for start := 0; start < len(b); {
		end := bytes.IndexByte(b[start:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += start
		}
		line := b[start:end]
		if !bytes.HasPrefix(line, []byte("o=")) {
			start = end + 1
			continue
		}
		f := strings.Fields(string(bytes.TrimSuffix(line[2:], []byte("\r"))))
		if len(f) != 6 {
			return nil, false
		}
		changed := false
		for _, j := range []int{1, 2} {
			if _, err := strconv.ParseUint(f[j], 10, 64); err != nil {
				f[j], changed = "0", true
			}
		}
		if !changed {
			return nil, false
		}
		out := make([]byte, 0, len(b)+4)
		out = append(out, b[:start]...)
		out = append(out, "o="+strings.Join(f, " ")+"\r"...)
		return append(out, b[end:]...), true
	}
	return nil, false
}

// filterCodecs keeps the payload types whose encodings are in allowed, in
// allowed's order (empty allowed keeps all in their order), plus
// telephone-event; attributes of dropped payload types go too. It returns
// the encoding names kept.
func filterCodecs(md *sdp.MediaDescription, allowed []string) ([]string, error) {
	type pt struct{ num, name string }
	var all []pt
	for _, f := range md.MediaName.Formats {
		all = append(all, pt{f, codecName(md, f)})
	}
	var keep []pt
	if len(allowed) == 0 {
		keep = all
	} else {
		for _, want := range allowed {
			for _, p := range all {
				if strings.EqualFold(p.name, want) && !isDTMF(p.name) {
					keep = append(keep, p)
				}
			}
		}
		for _, p := range all {
			if isDTMF(p.name) {
				keep = append(keep, p)
			}
		}
	}
	names := []string{}
	kept := map[string]bool{}
	formats := []string{}
	audioCodecs := 0
	for _, p := range keep {
		if kept[p.num] {
			continue
		}
		kept[p.num] = true
		formats = append(formats, p.num)
		names = append(names, p.name)
		if !isDTMF(p.name) {
			audioCodecs++
		}
	}
	if audioCodecs == 0 {
		return nil, ErrNoCommonCodec
	}
	md.MediaName.Formats = formats
	attrs := md.Attributes[:0]
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap", "fmtp", "rtcp-fb":
			num, _, _ := strings.Cut(a.Value, " ")
			if !kept[num] {
				continue
			}
		}
		attrs = append(attrs, a)
	}
	md.Attributes = attrs
	return names, nil
}

// Direction is an SDP stream direction (RFC 3264 §5.1).
type Direction string

// Directions.
const (
	SendRecv Direction = "sendrecv"
	SendOnly Direction = "sendonly"
	RecvOnly Direction = "recvonly"
	Inactive Direction = "inactive"
)

// direction reads the stream's direction (media level, then session
// level; sendrecv by default). An old-style hold (c= 0.0.0.0, RFC 3264
// §8.4) counts as sendonly from the holder.
func direction(s *sdp.SessionDescription, md *sdp.MediaDescription) Direction {
	for _, attrs := range [][]sdp.Attribute{md.Attributes, s.Attributes} {
		for _, a := range attrs {
			switch Direction(a.Key) {
			case SendRecv, SendOnly, RecvOnly, Inactive:
				return Direction(a.Key)
			}
		}
	}
	c := md.ConnectionInformation
	if c == nil {
		c = s.ConnectionInformation
	}
	if c != nil && c.Address != nil && c.Address.Address == "0.0.0.0" {
		return SendOnly
	}
	return SendRecv
}

// setDirection replaces the stream's direction attribute.
func setDirection(s *sdp.SessionDescription, md *sdp.MediaDescription, d Direction) {
	drop := func(attrs []sdp.Attribute) []sdp.Attribute {
		out := attrs[:0]
		for _, a := range attrs {
			switch Direction(a.Key) {
			case SendRecv, SendOnly, RecvOnly, Inactive:
				continue
			}
			out = append(out, a)
		}
		return out
	}
	s.Attributes = drop(s.Attributes)
	md.Attributes = append(drop(md.Attributes), sdp.NewPropertyAttribute(string(d)))
}

// ModeFor is the gateway connection mode that mirrors the far end's
// direction: what the far end sends we receive (RFC 3435 §3.2.2.6).
func ModeFor(remote Direction) mgcp.ConnectionMode {
	switch remote {
	case SendOnly:
		return mgcp.ModeRecvOnly
	case RecvOnly:
		return mgcp.ModeSendOnly
	case Inactive:
		return mgcp.ModeInactive
	}
	return mgcp.ModeSendRecv
}

// Origin keeps the o= line mgsip presents to the SIP side for one call:
// one session id, a version that grows whenever the description changes
// (RFC 3264 §8).
type Origin struct {
	SessionID uint64
	Version   uint64
	last      []byte
}

// Translated is the result of a translation.
type Translated struct {
	SDP       []byte
	Codecs    []string  // encoding names kept, in order
	Direction Direction // of the source description
	Mode      mgcp.ConnectionMode
	Ptime     int // a=ptime, 0 when absent
}

// ToSIP turns the gateway's LocalConnectionDescriptor into the SDP for the
// SIP side: codecs restricted to allowed in that order (telephone-event
// kept with its payload type), the given direction, our origin.
func ToSIP(gw []byte, o *Origin, allowed []string, dir Direction) (Translated, error) {
	s, err := parseSDP(gw)
	if err != nil {
		return Translated{}, err
	}
	md, err := audio(s)
	if err != nil {
		return Translated{}, err
	}
	names, err := filterCodecs(md, allowed)
	if err != nil {
		return Translated{}, err
	}
	// Only the audio stream crosses; other streams are refused with port 0
	// in an answer, left out of an offer.
	s.MediaDescriptions = []*sdp.MediaDescription{md}
	if md.ConnectionInformation == nil && s.ConnectionInformation == nil {
		return Translated{}, errors.New("bridge: gateway SDP has no c= line")
	}
	setDirection(s, md, dir)
	if s.SessionName == "" {
		s.SessionName = "-"
	}
	if len(s.TimeDescriptions) == 0 {
		s.TimeDescriptions = []sdp.TimeDescription{{}}
	}
	addrType, addr := "IP4", "0.0.0.0"
	if c := firstConn(s, md); c != nil && c.Address != nil {
		addrType, addr = c.AddressType, c.Address.Address
	}
	s.Origin = sdp.Origin{Username: "mgsip", SessionID: o.SessionID, SessionVersion: o.Version,
		NetworkType: "IN", AddressType: addrType, UnicastAddress: addr}
	out, err := s.Marshal()
	if err != nil {
		return Translated{}, err
	}
	if o.last != nil && !bytes.Equal(out, o.last) {
		o.Version++
		s.Origin.SessionVersion = o.Version
		if out, err = s.Marshal(); err != nil {
			return Translated{}, err
		}
	}
	o.last = out
	return Translated{SDP: out, Codecs: names, Direction: dir, Mode: ModeFor(dir), Ptime: ptime(md)}, nil
}

func firstConn(s *sdp.SessionDescription, md *sdp.MediaDescription) *sdp.ConnectionInformation {
	if md.ConnectionInformation != nil {
		return md.ConnectionInformation
	}
	return s.ConnectionInformation
}

func ptime(md *sdp.MediaDescription) int {
	if v, ok := md.Attribute("ptime"); ok {
		n, _ := strconv.Atoi(strings.TrimSpace(v))
		return n
	}
	return 0
}

// ToGateway turns the far end's SDP into the RemoteConnectionDescriptor
// for the gateway: the first audio stream only, codecs restricted to the
// gateway's (in the far end's order, payload types kept, telephone-event
// kept), and the connection mode that mirrors the far end's direction.
func ToGateway(remote []byte, gatewayCodecs []string) (Translated, error) {
	s, err := parseSDP(remote)
	if err != nil {
		return Translated{}, err
	}
	md, err := audio(s)
	if err != nil {
		return Translated{}, err
	}
	if md.MediaName.Port.Value == 0 {
		return Translated{}, errors.New("bridge: the audio stream is refused (port 0)")
	}
	// Keep the far end's preference order among the codecs the gateway has.
	var allowed []string
	if len(gatewayCodecs) > 0 {
		for _, f := range md.MediaName.Formats {
			name := codecName(md, f)
			for _, g := range gatewayCodecs {
				if strings.EqualFold(name, g) {
					allowed = append(allowed, name)
					break
				}
			}
		}
		if len(allowed) == 0 {
			return Translated{}, ErrNoCommonCodec
		}
	}
	names, err := filterCodecs(md, allowed)
	if err != nil {
		return Translated{}, err
	}
	dir := direction(s, md)
	if c := firstConn(s, md); c == nil || c.Address == nil {
		return Translated{}, errors.New("bridge: SDP has no c= line")
	}
	s.MediaDescriptions = []*sdp.MediaDescription{md}
	out, err := s.Marshal()
	if err != nil {
		return Translated{}, err
	}
	return Translated{SDP: out, Codecs: names, Direction: dir, Mode: ModeFor(dir), Ptime: ptime(md)}, nil
}

// Hold returns sdp with its direction replaced (sendonly to hold,
// sendrecv to resume), as a new version of origin o.
func Hold(b []byte, o *Origin, dir Direction) ([]byte, error) {
	t, err := ToSIP(b, o, nil, dir)
	return t.SDP, err
}
