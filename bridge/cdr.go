package bridge

import (
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// CDR is the call detail record of one call leg, as written to the CDR
// file and served by the admin API: snake_case keys, times in UTC with
// milliseconds, durations as numbers with their unit in the key.
type CDR struct {
	// Seq numbers the records of one CDR store in the order they were
	// recorded (internal/cdr sets it; 0 elsewhere).
	Seq             uint64    `json:"seq,omitempty"`
	Start           CDRTime   `json:"start"`
	Answer          CDRTime   `json:"answer,omitzero"`
	End             CDRTime   `json:"end"`
	DurationMS      int64     `json:"duration_ms"`       // start to end
	SetupMS         int64     `json:"setup_ms,omitzero"` // start to answer
	TalkMS          int64     `json:"talk_ms"`           // answer to end
	BillableSeconds int64     `json:"billable_seconds"`  // talk time rounded up to the second
	Line            string    `json:"line"`
	Gateway         string    `json:"gateway"`
	Endpoint        string    `json:"endpoint"`
	Direction       string    `json:"direction"`
	Calling         string    `json:"calling"`
	Called          string    `json:"called"`
	Dialled         string    `json:"dialled,omitempty"`
	SIPCallID       string    `json:"sip_call_id,omitempty"`
	MGCPCallID      string    `json:"mgcp_call_id"`
	MGCPConnection  string    `json:"mgcp_connection_id,omitempty"`
	Codec           string    `json:"codec,omitempty"`
	PtimeMS         int       `json:"ptime_ms,omitzero"`
	Answered        bool      `json:"answered"`
	Result          string    `json:"result"`
	SIPStatus       int       `json:"sip_status,omitzero"`
	Q850Cause       int       `json:"q850_cause"`
	MGCPCode        int       `json:"mgcp_code,omitzero"`
	Local           bool      `json:"local"`
	Waiting         bool      `json:"waiting"`
	Transfer        bool      `json:"transfer"`
	RTP             *RTPStats `json:"rtp,omitempty"`
}

// RTPStats are the gateway's connection statistics from the DLCX answer
// (RFC 3435 §3.2.2.13 ConnectionParameters), as numbers; a statistic the
// gateway did not report is absent.
type RTPStats struct {
	PacketsSent     *int64 `json:"packets_sent,omitempty"`     // PS
	OctetsSent      *int64 `json:"octets_sent,omitempty"`      // OS
	PacketsReceived *int64 `json:"packets_received,omitempty"` // PR
	OctetsReceived  *int64 `json:"octets_received,omitempty"`  // OR
	PacketsLost     *int64 `json:"packets_lost,omitempty"`     // PL
	JitterMS        *int64 `json:"jitter_ms,omitempty"`        // JI
	LatencyMS       *int64 `json:"latency_ms,omitempty"`       // LA
}

// CDRTime is a UTC time with milliseconds in JSON.
type CDRTime time.Time

const cdrTimeLayout = "2006-01-02T15:04:05.000Z"

func (t CDRTime) IsZero() bool { return time.Time(t).IsZero() }

func (t CDRTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(cdrTimeLayout) + `"`), nil
}

func (t *CDRTime) UnmarshalJSON(b []byte) error {
	v, err := time.Parse(`"`+cdrTimeLayout+`"`, string(b))
	if err != nil {
		return err
	}
	*t = CDRTime(v)
	return nil
}

// CDR builds the record's call detail record.
func (r CallRecord) CDR() CDR {
	// Times at the precision they are written with, so that the durations
	// add up to what a reader computes from the times.
	r.Start, r.Answer, r.End = msUTC(r.Start), msUTC(r.Answer), msUTC(r.End)
	c := CDR{Start: CDRTime(r.Start), Answer: CDRTime(r.Answer), End: CDRTime(r.End),
		DurationMS: r.End.Sub(r.Start).Milliseconds(), Line: r.Line, Gateway: r.Gateway, Endpoint: r.Endpoint,
		Direction: r.Direction, Calling: r.Calling, Called: r.Called, Dialled: r.Dialled, SIPCallID: r.SIPCallID,
		MGCPCallID: r.MGCPCall, MGCPConnection: r.ConnectionID, Answered: r.Answered, Result: r.Result,
		SIPStatus: r.SIPStatus, MGCPCode: r.MGCPCode, Local: r.Direction == "local", Waiting: r.Waiting, Transfer: r.Transfer}
	if r.Answered && !r.Answer.IsZero() {
		talk := r.End.Sub(r.Answer)
		c.SetupMS = r.Answer.Sub(r.Start).Milliseconds()
		c.TalkMS = talk.Milliseconds()
		c.BillableSeconds = int64((talk + time.Second - 1) / time.Second)
	}
	if r.Answered { // no codec was chosen for a call never answered
		c.Codec, c.PtimeMS = codecOf(r.AnswerSDP)
		if c.Codec == "" || c.PtimeMS == 0 {
			// The gateway's SDP only fills what the answer lacks, so it
			// is parsed only then.
			if gc, gp := codecOf(r.GatewaySDP); c.Codec == "" {
				c.Codec, c.PtimeMS = gc, gp
			} else {
				c.PtimeMS = gp
			}
		}
	}
	c.Q850Cause = q850Of(r)
	c.RTP = rtpStats(r.Stats)
	return c
}

// msUTC is t in UTC to the millisecond (zero stays zero).
func msUTC(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Millisecond)
}

// codecOf reads the codec (the first payload of the audio stream: in an
// answer, the one both sides chose, RFC 3264 §6.1) and the packetization
// time from a description.
func codecOf(b []byte) (string, int) {
	if len(b) == 0 {
		return "", 0
	}
	d, err := parseSDP(b)
	if err != nil {
		return "", 0
	}
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" || len(m.MediaName.Formats) == 0 {
			continue
		}
		pt := m.MediaName.Formats[0]
		// The payload type's a=rtpmap (RFC 4566 §6: "a=rtpmap:<payload
		// type> <encoding name>/<clock rate>"), read directly: pion's
		// GetCodecForPayloadType builds the map of every codec of the
		// description first, a fifth of the cost of a call's record.
		name := ""
		for _, a := range m.Attributes {
			if a.Key != "rtpmap" {
				continue
			}
			if v, ok := strings.CutPrefix(a.Value, pt+" "); ok {
				name, _, _ = strings.Cut(strings.TrimSpace(v), "/")
				break
			}
		}
		if name == "" {
			name = staticCodec[pt]
		}
		ptime := 0
		if v, ok := m.Attribute("ptime"); ok {
			ptime, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		return name, ptime
	}
	return "", 0
}

// staticCodec names the static payload types a gateway may use without an
// rtpmap (RFC 3551 §6).
var staticCodec = map[string]string{"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722", "18": "G729"}

// q850Of is the ISDN cause of the leg: the one our BYE carried, else
// normal clearing for an answered call, else the cause RFC 3398 §8.2.6.1
// maps the final SIP status to.
func q850Of(r CallRecord) int {
	if i := strings.Index(r.ByeReason, "cause="); i >= 0 {
		v := r.ByeReason[i+len("cause="):]
		if j := strings.IndexAny(v, ";, "); j >= 0 {
			v = v[:j]
		}
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	if r.Answered {
		return 16 // normal call clearing
	}
	if n, ok := sipToQ850[r.SIPStatus]; ok {
		return n
	}
	switch {
	case r.SIPStatus >= 400 && r.SIPStatus < 500:
		return 21 // call rejected
	case r.SIPStatus >= 500 && r.SIPStatus < 600:
		return 41 // temporary failure
	case r.SIPStatus >= 600:
		return 21
	case r.MGCPCode != 0 || r.GatewayFailed:
		return 41 // the gateway failed the call
	}
	return 16 // a local call or attempt ended by the user
}

// sipToQ850 is RFC 3398 §8.2.6.1's table (SIP status to ISUP cause); 487
// (the caller gave up) is normal clearing.
var sipToQ850 = map[int]int{
	400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102, 410: 22,
	413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127, 480: 18, 481: 41, 482: 25,
	483: 25, 484: 28, 485: 1, 486: 17, 487: 16, 488: 127, 500: 41, 501: 79, 502: 38, 503: 41, 504: 102,
	505: 127, 513: 127, 600: 17, 603: 21, 604: 1, 606: 58,
}

// rtpStats reads the DLCX statistics (PS, OS, PR, OR, PL, JI, LA).
func rtpStats(ps []mgcp.ConnParam) *RTPStats {
	if len(ps) == 0 {
		return nil
	}
	s := &RTPStats{}
	fields := map[string]**int64{"PS": &s.PacketsSent, "OS": &s.OctetsSent, "PR": &s.PacketsReceived,
		"OR": &s.OctetsReceived, "PL": &s.PacketsLost, "JI": &s.JitterMS, "LA": &s.LatencyMS}
	any := false
	for _, p := range ps {
		f, ok := fields[strings.ToUpper(p.Name)]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(p.Value), 10, 64)
		if err != nil {
			continue
		}
		*f = &n
		any = true
	}
	if !any {
		return nil
	}
	return s
}

// markAnswered notes the answer of a call leg (its record's answer time,
// the calls-set-up metric).
func (l *line) markAnswered(c *call) {
	c.answered = time.Now()
	l.casAnswered()
	if f := l.b.cfg.OnAnswer; f != nil {
		f(l.rule.ID, c.direction)
	}
}
