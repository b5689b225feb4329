package chanmgcp

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options say what the generated files point at.
type Options struct {
	// SIPUsers is the PBX side to write: "pjsip" (default) or "sip".
	SIPUsers string
	// PBXHost and PBXPort are where the lines register (default
	// 127.0.0.1:5060, Asterisk on the same machine).
	PBXHost string
	PBXPort int
	// SIPListen is mgsip's SIP listener (default 0.0.0.0:5070: Asterisk
	// keeps 5060).
	SIPListen string
	// Source names the input in the generated files' headers.
	Source string
	// Secrets are values already issued (an env file of an earlier run):
	// a line keeps its secret, so that re-running the import does not
	// invalidate the PBX side.
	Secrets map[string]string
	// Rand is the source of new secrets (default crypto/rand).
	Rand io.Reader
	// DigitMap is the digit map of the generated dial plans (default
	// DefaultDigitMap). chan_mgcp matched each digit against the
	// Asterisk dial plan; mgsip pushes a digit map to the gateway.
	DigitMap string
}

// Result is what an import produces.
type Result struct {
	Config []byte // the mgsip configuration (YAML)
	PBX    []byte // pjsip.conf or sip.conf accounts for the lines
	Env    []byte // NAME=secret lines the configuration refers to
	// Notes list every setting that was not carried over, or was carried
	// over with a different meaning, with its place in the input.
	Notes                   []Note
	Gateways, Lines, Trunks int
}

// lineState is the per-line settings of chan_mgcp: each "line =>" takes
// the values set so far in its category (they carry on to the next line
// until changed), as chan_mgcp's build_gateway does.
type lineState struct {
	context        string
	cidName        string
	cidNum         string
	callWaiting    bool
	threeWay       bool
	transfer       bool
	callForward    bool
	dtmf           string // rfc4733, info, or "" (left to mgsip's default)
	directMedia    bool
	nat            bool
	mailbox        string
	hasVoicemail   bool
	immediate      bool
	callGroup      string
	pickupGroup    string
	accountCode    string
	language       string
	musicOnHold    string
	setVars        []string
	codecs         []string // Asterisk names, in order
	firstDigit     time.Duration
	interDigit     time.Duration
	matchDigit     time.Duration
	ncs            bool
	timersFromLine bool
	// setAt is where each key of this state was last set (Entry.Key ->
	// its place), so that a setting that cannot be carried over for a
	// line or trunk is named with its file:line.
	setAt map[string]Pos
}

// clone copies st with its own slices and map.
func (st lineState) clone() lineState {
	st.setVars = append([]string(nil), st.setVars...)
	st.codecs = append([]string(nil), st.codecs...)
	st.setAt = maps.Clone(st.setAt)
	return st
}

// explicit says where one of keys was set in this state, if it was.
func (st lineState) explicit(keys ...string) (Pos, bool) {
	var at Pos
	found := false
	for _, k := range keys {
		if p, ok := st.setAt[k]; ok && (!found || p.File > at.File || p.File == at.File && p.Line > at.Line) {
			at, found = p, true
		}
	}
	return at, found
}

type line struct {
	gw        *gateway
	endpoint  string
	trunk     bool
	st        lineState
	pos       Pos
	user      string
	secretEnv string
	plan      string
}

type gateway struct {
	section  string
	name     string
	host     string
	port     int
	wildcard string
	lines    []*line
	codecs   []string
	ncs      bool
	pos      Pos
}

// asteriskCodecs maps Asterisk's codec names to the SDP encoding names
// mgsip uses (RFC 3551 §6 and the dynamic ones it knows).
var asteriskCodecs = map[string]string{
	"ulaw": "PCMU", "alaw": "PCMA", "g729": "G729", "gsm": "GSM", "g723": "G723",
	"g722": "G722", "g726": "G726-32", "ilbc": "iLBC",
}

// allCodecs is "allow = all", in the order Asterisk lists them.
var allCodecs = []string{"ulaw", "alaw", "gsm", "g726", "g723", "g729", "g722", "ilbc"}

// Keys chan_mgcp knows that have no mgsip equivalent, with the reason
// printed for each occurrence.
var unmappedKeys = map[string]string{
	"tos": "QoS marks are set by the system (e.g. nftables), not by mgsip", "tos_audio": "media does not pass through mgsip",
	"cos": "QoS marks are set by the system, not by mgsip", "cos_audio": "media does not pass through mgsip",
	"jbenable": "media does not pass through mgsip: jitter buffers are the PBX's", "jbforce": "jitter buffers are the PBX's",
	"jbmaxsize": "jitter buffers are the PBX's", "jbresyncthreshold": "jitter buffers are the PBX's",
	"jbimpl": "jitter buffers are the PBX's", "jbtargetextra": "jitter buffers are the PBX's", "jblog": "jitter buffers are the PBX's",
	"amaflags":           "CDR flags are the PBX's (set them on the PBX endpoint)",
	"callreturn":         "call return (*69) is a PBX feature: the digits go to the PBX as dialed",
	"adsi":               "ADSI is not supported",
	"singlepath":         "not needed: mgsip sends media directly between the gateway and the far end",
	"pktcgatealloc":      "PacketCable DQoS gates are not supported",
	"hangupongateremove": "PacketCable DQoS gates are not supported",
	"slowsequence":       "not needed: mgsip keeps the RFC 3435 lock-step per endpoint and sends one request at a time",
	"externip":           "set sip.listeners[].advertise and the gateways' view of mgcp.listen instead",
	"parkinglot":         "parking is the PBX's: set it on the PBX endpoint",
	"callerid_name":      "not a chan_mgcp setting",
}

// lineKeys are the per-line settings lineSetting knows.
var lineKeys = map[string]bool{
	"context": true, "callerid": true, "callwaiting": true, "threewaycalling": true, "transfer": true,
	"cancallforward": true, "canreinvite": true, "directmedia": true, "nat": true, "mailbox": true,
	"hasvoicemail": true, "immediate": true, "ncs": true, "dtmfmode": true, "callgroup": true,
	"pickupgroup": true, "accountcode": true, "language": true, "musiconhold": true, "mohinterpret": true,
	"mohsuggest": true, "setvar": true, "clearvars": true, "allow": true, "disallow": true,
	"firstdigittimeout": true, "gendigittimeout": true, "matchdigittimeout": true,
}

// DefaultDigitMap collects any digits until the inter-digit timer
// (gendigittimeout) runs out, or up to a '#'. Write one that knows your
// numbering plan so that calls start without waiting (RFC 3435 §2.1.5).
const DefaultDigitMap = "([0-9*].#|[0-9*].T)"

// parseCallerID splits a chan_mgcp callerid value the way Asterisk's
// ast_callerid_split reads it: `"Name" <number>` (the name may hold
// backslash-escaped quotes and backslashes), `Name <number>`, `<number>`,
// a quoted name alone, or a bare number (digits, '*', '#', '+') or bare
// name. Anything else is an error, so that the setting is reported instead
// of being carried over mangled.
func parseCallerID(v string) (name, num string, err error) {
	s := strings.TrimSpace(v)
	var rest string
	switch {
	case strings.HasPrefix(s, `"`):
		var b strings.Builder
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
				continue
			}
			if s[i] == '"' {
				end = i
				break
			}
			b.WriteByte(s[i])
		}
		if end < 0 {
			return "", "", fmt.Errorf("the quoted name is not closed")
		}
		name, rest = strings.TrimSpace(b.String()), strings.TrimSpace(s[end+1:])
	case strings.Contains(s, "<"):
		i := strings.IndexByte(s, '<')
		name, rest = strings.TrimSpace(s[:i]), s[i:]
		if strings.ContainsAny(name, `"\`) {
			return "", "", fmt.Errorf("a name with quotes must be quoted as a whole (\"Name\" <number>)")
		}
	default:
		if strings.ContainsAny(s, `"<>\`) {
			return "", "", fmt.Errorf("not \"Name\" <number>")
		}
		if isPhoneNumber(s) {
			return "", s, nil
		}
		return s, "", nil
	}
	if rest == "" {
		return name, "", nil
	}
	if rest[0] != '<' || !strings.HasSuffix(rest, ">") {
		return "", "", fmt.Errorf("%q after the name: want <number>", rest)
	}
	num = strings.TrimSpace(rest[1 : len(rest)-1])
	if num != "" && !validUser(num) {
		return "", "", fmt.Errorf("number %q has characters a SIP user cannot have", num)
	}
	return name, num, nil
}

// isPhoneNumber is Asterisk's ast_isphonenumber: digits, '*', '#', '+'.
func isPhoneNumber(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9') && strings.IndexByte("*#+", s[i]) < 0 {
			return false
		}
	}
	return true
}

// quoteCallerID writes a caller id as pjsip.conf and sip.conf read it
// (ast_callerid_split): the name quoted with '"' and '\' escaped.
func quoteCallerID(name, num string) string {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name)
	if num == "" {
		return `"` + esc + `"`
	}
	return `"` + esc + `" <` + num + `>`
}

// Convert maps a parsed mgcp.conf to mgsip.
func Convert(f *File, opts Options) (*Result, error) {
	if opts.SIPUsers == "" {
		opts.SIPUsers = "pjsip"
	}
	if opts.SIPUsers != "pjsip" && opts.SIPUsers != "sip" {
		return nil, fmt.Errorf("--sip-users: want pjsip or sip, not %q", opts.SIPUsers)
	}
	if opts.PBXHost == "" {
		opts.PBXHost = "127.0.0.1"
	}
	if opts.PBXPort == 0 {
		opts.PBXPort = 5060
	}
	if opts.SIPListen == "" {
		opts.SIPListen = "0.0.0.0:5070"
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.DigitMap == "" {
		opts.DigitMap = DefaultDigitMap
	}
	c := &converter{opts: opts, res: &Result{}, names: map[string]bool{}, users: map[string]bool{}}
	c.res.Notes = append(c.res.Notes, f.Problems...)
	// chan_mgcp starts every category with directmedia on (DIRECTMEDIA
	// in chan_mgcp.c, reset by build_gateway); the PBX endpoints get
	// direct_media only where canreinvite/directmedia was set, since
	// PJSIP's and chan_sip's default (yes) is the same.
	c.general = lineState{callWaiting: true, threeWay: true, transfer: true, directMedia: true, codecs: []string{"ulaw"},
		firstDigit: 16 * time.Second, interDigit: 8 * time.Second, matchDigit: 3 * time.Second}
	for _, s := range f.Sections {
		if strings.EqualFold(s.Name, "general") && !s.Template {
			c.generalSection(s)
		}
	}
	for _, s := range f.Sections {
		if strings.EqualFold(s.Name, "general") || s.Template {
			continue
		}
		if err := c.gatewaySection(s); err != nil {
			return nil, err
		}
	}
	c.finishGateways()
	if err := c.assign(); err != nil {
		return nil, err
	}
	c.res.Config = c.writeConfig()
	if opts.SIPUsers == "pjsip" {
		c.res.PBX = c.writePJSIP()
	} else {
		c.res.PBX = c.writeChanSIP()
	}
	c.res.Env = c.writeEnv()
	sort.SliceStable(c.res.Notes, func(i, j int) bool {
		a, b := c.res.Notes[i].Pos, c.res.Notes[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	// A template's entry is read once per category that inherits it:
	// say it once.
	notes := c.res.Notes[:0]
	for i, n := range c.res.Notes {
		if i > 0 && n == c.res.Notes[i-1] {
			continue
		}
		notes = append(notes, n)
	}
	c.res.Notes = notes
	return c.res, nil
}

type converter struct {
	opts     Options
	res      *Result
	general  lineState
	listen   string // mgcp.listen
	gateways []*gateway
	names    map[string]bool
	users    map[string]bool
	plans    []plan
	secrets  []secret
}

type plan struct {
	name         string
	first, inter time.Duration
}

type secret struct{ name, value string }

func (c *converter) note(pos Pos, key, format string, a ...any) {
	c.res.Notes = append(c.res.Notes, Note{Pos: pos, Key: key, Reason: fmt.Sprintf(format, a...)})
}

func (c *converter) generalSection(s *Section) {
	host, port := "0.0.0.0", "2727"
	for _, e := range s.Entries {
		switch e.Key {
		case "port":
			if _, err := strconv.Atoi(e.Value); err != nil {
				c.note(e.Pos, e.Key, "%q is not a port number; kept 2727", e.Value)
				continue
			}
			port = e.Value
		case "bindaddr":
			if net.ParseIP(e.Value) == nil {
				c.note(e.Pos, e.Key, "%q is not an IP address; kept 0.0.0.0", e.Value)
				continue
			}
			host = e.Value
		case "allow", "disallow", "firstdigittimeout", "gendigittimeout", "matchdigittimeout":
			c.lineSetting(&c.general, e, true)
		default:
			_, unmapped := unmappedKeys[e.Key]
			switch {
			case unmapped || strings.HasPrefix(e.Key, "jb"):
				c.lineSetting(&c.general, e, true) // noted as not mapped
			case e.Key == "canreinvite" || e.Key == "directmedia":
				c.note(e.Pos, e.Key, "chan_mgcp ignores it in [general] (every gateway category starts with directmedia on); set it in the gateway's category; not carried over")
			case lineKeys[e.Key]:
				// chan_mgcp's reload_config reads only the keys above in
				// [general]; a per-line setting there applied to no line.
				c.note(e.Pos, e.Key, "chan_mgcp ignores per-line settings in [general]; set it in the gateway's category; not carried over")
			default:
				c.note(e.Pos, e.Key, "not a chan_mgcp setting mgsip knows; not mapped")
			}
		}
	}
	c.listen = net.JoinHostPort(host, port)
}

func boolValue(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "y", "t", "1", "on":
		return true, true
	case "no", "false", "n", "f", "0", "off":
		return false, true
	}
	return false, false
}

func msValue(v string) (time.Duration, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n) * time.Millisecond, true
}

// lineSetting applies one per-line setting to st; it reports whether the
// key is one.
func (c *converter) lineSetting(st *lineState, e Entry, general bool) (handled bool) {
	setBool := func(dst *bool) {
		b, ok := boolValue(e.Value)
		if !ok {
			c.note(e.Pos, e.Key, "%q is not yes or no; ignored", e.Value)
			return
		}
		*dst = b
	}
	if _, unmapped := unmappedKeys[e.Key]; !unmapped {
		defer func() {
			if handled {
				if st.setAt == nil {
					st.setAt = map[string]Pos{}
				}
				st.setAt[e.Key] = e.Pos
			}
		}()
	}
	switch e.Key {
	case "context":
		st.context = e.Value
	case "callerid":
		if strings.EqualFold(e.Value, "asreceived") || e.Value == "" {
			if e.Value != "" {
				c.note(e.Pos, e.Key, "asreceived: mgsip presents the caller id the PBX sends, which is the same thing")
			}
			st.cidName, st.cidNum = "", ""
			break
		}
		name, num, err := parseCallerID(e.Value)
		if err != nil {
			c.note(e.Pos, e.Key, "%s: %v; not carried over (the lines after it have no caller id)", e.Value, err)
			st.cidName, st.cidNum = "", ""
			break
		}
		st.cidName, st.cidNum = name, num
	case "callwaiting":
		setBool(&st.callWaiting)
	case "threewaycalling":
		setBool(&st.threeWay)
	case "transfer":
		setBool(&st.transfer)
	case "cancallforward":
		setBool(&st.callForward)
		if st.callForward {
			c.note(e.Pos, e.Key, "call forwarding is the PBX's: *72/*73 reach it as dialed numbers; enable the feature codes there")
		}
	case "canreinvite", "directmedia":
		setBool(&st.directMedia)
	case "nat":
		setBool(&st.nat)
		if st.nat {
			c.note(e.Pos, e.Key, "mgsip answers a gateway at the address its commands come from only with address: learn (host=dynamic); with a fixed host, give the address mgsip sees")
		}
	case "mailbox":
		st.mailbox = e.Value
	case "hasvoicemail":
		setBool(&st.hasVoicemail)
	case "immediate":
		setBool(&st.immediate)
	case "ncs":
		setBool(&st.ncs)
	case "dtmfmode":
		switch strings.ToLower(e.Value) {
		case "rfc2833":
			st.dtmf = "rfc4733"
		case "none", "inband", "hybrid":
			// The PBX side gets it; mgsip has no in-band mode of its own.
			st.dtmf = "inband"
			if strings.EqualFold(e.Value, "none") {
				st.dtmf = "none"
			}
			c.note(e.Pos, e.Key, "%s: mgsip relays digits during a call as RFC 4733 events or SIP INFO; in-band tones pass in the audio untouched, so only the PBX endpoint's dtmf_mode is set (%s)", e.Value, st.dtmf)
		default:
			c.note(e.Pos, e.Key, "%q is not none, rfc2833, inband or hybrid; ignored", e.Value)
		}
	case "callgroup":
		st.callGroup = e.Value
	case "pickupgroup":
		st.pickupGroup = e.Value
	case "accountcode":
		st.accountCode = e.Value
	case "language":
		st.language = e.Value
	case "musiconhold", "mohinterpret", "mohsuggest":
		st.musicOnHold = e.Value
	case "setvar":
		st.setVars = append(st.setVars, e.Value)
	case "clearvars":
		st.setVars = nil
	case "allow", "disallow":
		c.codecSetting(st, e)
	case "firstdigittimeout", "gendigittimeout", "matchdigittimeout":
		d, ok := msValue(e.Value)
		if !ok {
			c.note(e.Pos, e.Key, "%q is not a number of milliseconds; ignored", e.Value)
			break
		}
		switch e.Key {
		case "firstdigittimeout":
			st.firstDigit = d
		case "gendigittimeout":
			st.interDigit = d
		default:
			st.matchDigit = d
			c.note(e.Pos, e.Key, "mgsip's digit map has one inter-digit timer (T, from gendigittimeout); a number that matches but could go on waits for it too")
		}
		if !general {
			st.timersFromLine = true
		}
	default:
		if reason, ok := unmappedKeys[e.Key]; ok {
			c.note(e.Pos, e.Key, "not mapped: %s", reason)
			return true
		}
		return false
	}
	return true
}

func (c *converter) codecSetting(st *lineState, e Entry) {
	for _, name := range strings.Split(e.Value, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		if name == "all" {
			if e.Key == "allow" {
				st.codecs = append([]string(nil), allCodecs...)
			} else {
				st.codecs = nil
			}
			continue
		}
		if _, ok := asteriskCodecs[name]; !ok {
			c.note(e.Pos, e.Key, "codec %q has no mgsip name; left out", name)
			continue
		}
		kept := st.codecs[:0:0]
		for _, have := range st.codecs {
			if have != name {
				kept = append(kept, have)
			}
		}
		st.codecs = kept
		if e.Key == "allow" {
			st.codecs = append(st.codecs, name)
		}
	}
}

var nameSafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func (c *converter) gatewaySection(s *Section) error {
	// A second category of the same name adds to the first gateway, as
	// chan_mgcp's build_gateway finds the gateway by name and reuses it.
	var g *gateway
	for _, have := range c.gateways {
		if strings.EqualFold(have.section, s.Name) {
			g = have
			c.note(s.Pos, "", "a second [%s]: merged into the gateway of %s, as chan_mgcp does", s.Name, have.pos)
		}
	}
	fresh := g == nil
	if fresh {
		name := nameSafe.ReplaceAllString(s.Name, "-")
		if name != s.Name {
			c.note(s.Pos, "", "gateway [%s] is named %q in mgsip (names take letters, digits, '.', '_' and '-')", s.Name, name)
		}
		for base, n := name, 2; c.names[name]; n++ {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		c.names[name] = true
		g = &gateway{section: s.Name, name: name, port: 2427, pos: s.Pos}
	}
	st := c.general.clone()
	st.timersFromLine = false
	// chan_mgcp gives a line the settings made before it: one after the
	// last line or trunk of the category applies to nothing.
	lastLine := -1
	for i, e := range s.Entries {
		if e.Key == "line" || e.Key == "trunk" {
			lastLine = i
		}
	}
	for i, e := range s.Entries {
		switch e.Key {
		case "host":
			g.host = e.Value
		case "port":
			p, err := strconv.Atoi(e.Value)
			if err != nil || p <= 0 || p > 65535 {
				c.note(e.Pos, e.Key, "%q is not a port; kept 2427", e.Value)
				continue
			}
			g.port = p
		case "wcardep":
			// mgsip audits with a wildcard when the quirk profile says the
			// gateway takes one (the generic profile does).
			g.wildcard = e.Value
		case "line", "trunk":
			ep := strings.TrimSpace(e.Value)
			if ep == "" || strings.ContainsAny(ep, "@ \t") {
				c.note(e.Pos, e.Key, "%q is not a local endpoint name; left out", ep)
				continue
			}
			l := &line{gw: g, endpoint: ep, trunk: e.Key == "trunk", st: st.clone(), pos: e.Pos}
			replaced := false
			for i, have := range g.lines {
				if strings.EqualFold(have.endpoint, ep) {
					c.note(e.Pos, e.Key, "%s is defined again: this definition replaces the one of %s, as in chan_mgcp", ep, have.pos)
					g.lines[i] = l
					replaced = true
				}
			}
			if !replaced {
				g.lines = append(g.lines, l)
			}
		default:
			if !c.lineSetting(&st, e, false) {
				c.note(e.Pos, e.Key, "not a chan_mgcp setting mgsip knows; not mapped")
				continue
			}
			if _, unmapped := unmappedKeys[e.Key]; !unmapped && lastLine >= 0 && i > lastLine {
				c.note(e.Pos, e.Key, "after the last line or trunk of [%s]: chan_mgcp applies a setting to the lines defined after it, so this one applies to none; not carried over", s.Name)
			}
		}
	}
	if g.host == "" {
		c.note(s.Pos, "host", "[%s] has no host: taken as dynamic (mgsip learns the address from the gateway's RSIP)", s.Name)
		g.host = "dynamic"
	}
	if !fresh {
		return nil
	}
	c.gateways = append(c.gateways, g)
	return nil
}

// finishGateways drops the gateways without a line and settles what mgsip
// sets per gateway.
func (c *converter) finishGateways() {
	kept := c.gateways[:0]
	for _, g := range c.gateways {
		if len(g.lines) == 0 {
			c.note(g.pos, "", "[%s] has no line or trunk: left out", g.section)
			continue
		}
		c.settle(g)
		kept = append(kept, g)
	}
	c.gateways = kept
}

// trunkNotCarried are the per-line settings a trunk channel cannot keep:
// the channels of a gateway are one mgsip trunk group (no per-channel
// features or caller id) and one PBX endpoint (GW-trunk)
// that the import writes with context, codecs and direct media only.
var trunkNotCarried = []string{"callerid", "language", "accountcode", "callgroup", "pickupgroup",
	"musiconhold", "mohinterpret", "mohsuggest", "setvar", "mailbox", "hasvoicemail", "dtmfmode", "immediate",
	"callwaiting", "threewaycalling", "transfer", "cancallforward"}

// trunkNotes names what the trunk channels of g set and cannot keep.
func (c *converter) trunkNotes(g *gateway) {
	var first *line
	for _, l := range g.lines {
		if !l.trunk {
			continue
		}
		for _, k := range trunkNotCarried {
			if at, ok := l.st.setAt[k]; ok {
				c.note(at, k, "trunk channels are one mgsip trunk group and one PBX endpoint (%s-trunk) without per-channel settings; not carried over for the trunks of [%s]", g.name, g.section)
			}
		}
		if first == nil {
			first = l
			continue
		}
		if l.st.context != first.st.context {
			c.note(l.pos, "context", "the PBX endpoint %s-trunk has one context: %s keeps %s of %s (not %s)", g.name, l.endpoint, contextOr(first.st.context), first.endpoint, contextOr(l.st.context))
		}
		if l.st.directMedia != first.st.directMedia {
			c.note(l.pos, "directmedia", "the PBX endpoint %s-trunk has one direct_media: %s follows %s", g.name, l.endpoint, first.endpoint)
		}
	}
}

func (c *converter) settle(g *gateway) {
	c.trunkNotes(g)
	g.codecs = g.lines[0].st.codecs
	g.ncs = g.lines[0].st.ncs
	for _, l := range g.lines[1:] {
		if strings.Join(l.st.codecs, ",") != strings.Join(g.codecs, ",") {
			c.note(l.pos, "allow", "mgsip sets codecs per gateway: %s keeps the codecs of the first line (%s); the PBX endpoint has its own", l.endpoint, strings.Join(g.codecs, ","))
		}
		if l.st.ncs != g.ncs {
			c.note(l.pos, "ncs", "mgsip sets the protocol profile per gateway: %s follows the first line", l.endpoint)
		}
	}
	if len(g.codecs) == 0 {
		c.note(g.lines[0].pos, "allow", "no codec left for this gateway; mgsip's default (PCMU, PCMA) applies")
	}
}

var envSafe = regexp.MustCompile(`[^A-Z0-9]+`)

// assign gives every line its SIP user, secret and dial plan.
func (c *converter) assign() error {
	planFor := func(st lineState) string {
		for _, p := range c.plans {
			if p.first == st.firstDigit && p.inter == st.interDigit {
				return p.name
			}
		}
		name := "chan_mgcp"
		if len(c.plans) > 0 {
			name = fmt.Sprintf("chan_mgcp-%d", len(c.plans)+1)
		}
		c.plans = append(c.plans, plan{name: name, first: st.firstDigit, inter: st.interDigit})
		return name
	}
	planFor(c.general)
	for _, g := range c.gateways {
		for _, l := range g.lines {
			if l.trunk {
				c.res.Trunks++
				continue
			}
			c.res.Lines++
			l.plan = planFor(l.st)
			user := l.st.cidNum
			if user == "" || !validUser(user) || c.users[user] {
				if user != "" && c.users[user] {
					c.note(l.pos, "callerid", "number %s is already the SIP user of another line; this one is %s", user, fallbackUser(g, l))
				}
				user = fallbackUser(g, l)
			}
			c.users[user] = true
			l.user = user
			l.secretEnv = "LINE_SECRET_" + strings.Trim(envSafe.ReplaceAllString(strings.ToUpper(g.name+"_"+l.endpoint), "_"), "_")
			v, ok := c.opts.Secrets[l.secretEnv]
			if !ok || v == "" {
				b := make([]byte, 12)
				if _, err := io.ReadFull(c.opts.Rand, b); err != nil {
					return fmt.Errorf("generating a secret: %w", err)
				}
				v = hex.EncodeToString(b)
			}
			c.secrets = append(c.secrets, secret{l.secretEnv, v})
		}
	}
	c.res.Gateways = len(c.gateways)
	return nil
}

func fallbackUser(g *gateway, l *line) string {
	return nameSafe.ReplaceAllString(g.name+"-"+l.endpoint, "-")
}

func validUser(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || strings.IndexByte("@:;<>\"/?", s[i]) >= 0 {
			return false
		}
	}
	return s != ""
}

// q quotes a YAML scalar: JSON strings are valid YAML.
func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func dur(d time.Duration) string { return d.String() }

func (c *converter) secretOf(env string) string {
	for _, s := range c.secrets {
		if s.name == env {
			return s.value
		}
	}
	return ""
}

// Import reads the mgcp.conf at path (with its includes) and converts it.
func Import(path string, opts Options) (*Result, error) {
	f, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	if opts.Source == "" {
		opts.Source = path
	}
	return Convert(f, opts)
}

// ParseEnv reads NAME=value lines (an env file as systemd's
// EnvironmentFile= takes it: "#" comments, no quoting needed).
func ParseEnv(data []byte) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		m[strings.TrimSpace(k)] = v
	}
	return m
}
