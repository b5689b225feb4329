// Package config loads mgsip's YAML configuration file: strict decoding,
// every section checked, the mapping rules compiled, and each problem
// reported with its line and key path.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"go.yaml.in/yaml/v3"
)

// File is the whole configuration file. Each package owns its part.
type File struct {
	Log    Log         `yaml:"log"`
	MGCP   mgcp.Config `yaml:"mgcp"`
	SIP    sip.Config  `yaml:"sip"`
	Admin  Admin       `yaml:"admin"`
	Trace  Trace       `yaml:"trace"`
	Daemon Daemon      `yaml:"daemon"`
	Calls  Calls       `yaml:"calls"`
	CDR    CDR         `yaml:"cdr"`
	// Cluster: several nodes on etcd (docs/cluster.md); absent: alone.
	Cluster Cluster `yaml:"cluster"`
	// AllowEmpty lets a file with no gateways, lines or trunks load (a
	// daemon with nothing to do); without it such a file is refused, so
	// that an empty or truncated file cannot unregister every line.
	AllowEmpty     bool `yaml:"allow_empty"`
	mapping.Config `yaml:",inline"`
}

// Trace is the trace section: pcap file and HEP collector.
type Trace struct {
	// HEP is a Homer collector (host:port, HEPv3 over UDP); empty: off.
	HEP string `yaml:"hep"`
	// HEPNodeID identifies this mgsip to the collector (default 2427).
	HEPNodeID uint32 `yaml:"hep_node_id"`
	// HEPNodeName names this mgsip to the collector (HEP chunk 0x0013);
	// empty: left out.
	HEPNodeName string `yaml:"hep_node_name"`
	// HEPPassword is the collector's capture password (chunk 0x000e;
	// ${ENV} allowed); empty: left out.
	HEPPassword mapping.Secret `yaml:"hep_password"`
	// Pcap is a file every MGCP and SIP message is written to; empty: off.
	Pcap string `yaml:"pcap"`
	// PcapMaxBytes starts a new file past this size (default 100 MB);
	// PcapKeep files are kept (default 5, at least 2). A capture left by
	// the previous run is rotated, never truncated.
	PcapMaxBytes int64 `yaml:"pcap_max_bytes"`
	PcapKeep     int   `yaml:"pcap_keep"`
}

// Daemon is the daemon section.
type Daemon struct {
	// DrainTimeout is how long SIGTERM waits for calls to end before
	// hanging them up (default 30s).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Ready says when /readyz answers 200 besides "not draining".
	Ready Ready `yaml:"ready"`
	// GOGC is the garbage collector's target (Go's GOGC): the heap may
	// grow by this percentage over the live heap before the next
	// collection. Default DefaultGOGC; -1 turns the proportional
	// collector off, which needs MemoryLimitMB. The GOGC environment
	// variable, when set, wins.
	GOGC int `yaml:"gogc"`
	// MemoryLimitMB is Go's soft memory limit (GOMEMLIMIT) in MiB: the
	// collector runs as often as it must to stay under it. 0: none. The
	// GOMEMLIMIT environment variable, when set, wins.
	MemoryLimitMB int64 `yaml:"memory_limit_mb"`
}

// DefaultGOGC is daemon.gogc's default: Go's own. A higher value trades
// memory for CPU: 200 halves the collections under call load and cuts the
// collector's share of mgsip's CPU by about 4 points, but an idle daemon
// then holds up to three times its live heap instead of twice, which
// breaks the idle-line memory budget (docs/benchmarks.md, "GC policy").
const DefaultGOGC = 100

// Ready is what /readyz requires.
type Ready struct {
	// SIPPeers: "any" (default: at least one probed peer answers OPTIONS,
	// or none is probed) or "ignore".
	SIPPeers string `yaml:"sip_peers"`
	// Gateways: "ignore" (default), "any" (at least one gateway up) or
	// "all" (no gateway marked down).
	Gateways string `yaml:"gateways"`
}

// CDR says where call detail records go (internal/cdr).
type CDR struct {
	// File is the JSON-lines file; "" keeps the records in memory only.
	File string `yaml:"file"`
	// MaxSizeMB rotates the file at this size (default 100).
	MaxSizeMB int `yaml:"max_size_mb"`
	// MaxFiles is how many rotated files are kept (default 10).
	MaxFiles int `yaml:"max_files"`
	// Keep is how many records the API serves from memory (default 10000).
	Keep int `yaml:"keep"`
}

// Calls holds the call timers of the bridge (0: the default).
type Calls struct {
	// RingTimeout: an incoming call nobody answers gets 480 after it
	// (default 60s).
	RingTimeout time.Duration `yaml:"ring_timeout"`
	// NoAnswerTimeout: an outgoing call the far end lets ring is
	// cancelled after it and the caller hears reorder (default 3m).
	NoAnswerTimeout time.Duration `yaml:"no_answer_timeout"`
	// ToneTimeout: how long an off-hook phone hears reorder or busy
	// after a call before the off-hook warning (default 30s).
	ToneTimeout time.Duration `yaml:"tone_timeout"`
	// PeerDownFor: how long a SIP peer that let an INVITE go unanswered
	// counts as down, so that calls go to local fallback or congestion
	// at once (default 30s).
	PeerDownFor time.Duration `yaml:"peer_down_for"`
}

// Log is the log section.
type Log struct {
	Level  string `yaml:"level"`  // default info
	Format string `yaml:"format"` // text (default) or json
}

// Problem is one problem with its place in the file.
type Problem struct {
	Line   int // 0 when unknown
	Column int // 0 when unknown (only YAML syntax errors have one)
	Path   string
	Reason string
}

// Error lists every problem of a configuration file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.format(e.File))
	}
	return b.String()
}

func (p Problem) format(file string) string {
	loc := file
	if p.Line > 0 {
		loc += ":" + strconv.Itoa(p.Line)
		if p.Column > 0 {
			loc += ":" + strconv.Itoa(p.Column)
		}
	}
	if p.Path == "" {
		return loc + ": " + p.Reason
	}
	return loc + ": " + p.Path + ": " + p.Reason
}

// Loaded is a configuration that passed every check.
type Loaded struct {
	File  File
	Rules *mapping.Rules
}

// Option changes how a file is loaded.
type Option func(*loadOptions)

type loadOptions struct {
	allowEmpty bool
}

// AllowEmpty accepts a file that configures nothing, as the file's own
// allow_empty key does (the --allow-empty flag of check-config and run).
func AllowEmpty(yes bool) Option { return func(o *loadOptions) { o.allowEmpty = o.allowEmpty || yes } }

// LoadFile reads and checks a configuration file.
func LoadFile(path string, lookupEnv func(string) (string, bool), opts ...Option) (*Loaded, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Load(path, data, lookupEnv, opts...)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Load decodes data strictly, validates every section, compiles the
// rules, and reports each problem with its line and key path.
func Load(name string, data []byte, lookupEnv func(string) (string, bool), opts ...Option) (*Loaded, error) {
	var lo loadOptions
	for _, o := range opts {
		o(&lo)
	}
	cerr := &Error{File: name}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// A syntax error leaves no tree to check further: say where it is.
		p := yamlProblem(err.Error(), nil)
		if m := unknownAnchor.FindStringSubmatch(p.Reason); m != nil {
			p.Line, p.Column = anchorPosition(data, m[1])
		} else {
			p.Line, p.Column = syntaxPosition(data, p.Line, p.Reason)
		}
		cerr.Problems = append(cerr.Problems, p)
		return nil, cerr
	}
	index := newPathIndex(&root)
	var fc File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// Type errors do not stop decoding: the rest of the file is still
	// checked, but problems under a path that already has a type error
	// are left out (they would only describe its zero value).
	var typed []string
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			cerr.Problems = append(cerr.Problems, yamlProblem(err.Error(), index))
			return nil, cerr
		}
		for _, msg := range te.Errors {
			p := yamlProblem(msg, index)
			cerr.Problems = append(cerr.Problems, p)
			if p.Path != "" && !strings.HasPrefix(p.Reason, "unknown key") {
				typed = append(typed, p.Path)
			}
		}
	}
	add := func(path, reason string) {
		for _, t := range typed {
			if path == t || strings.HasPrefix(path, t+".") || strings.HasPrefix(path, t+"[") {
				return
			}
		}
		cerr.Problems = append(cerr.Problems, Problem{Line: index.line(path), Path: path, Reason: reason})
	}
	addJoined := func(err error) {
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			path, reason, ok := strings.Cut(line, ": ")
			if !ok {
				path, reason = "", line
			}
			add(path, reason)
		}
	}
	switch strings.ToLower(fc.Log.Level) {
	case "", "trace", "debug", "info", "warn", "warning", "error":
	default:
		add("log.level", fmt.Sprintf("must be trace, debug, info, warn or error, not %q", fc.Log.Level))
	}
	switch strings.ToLower(fc.Log.Format) {
	case "", "text", "json":
	default:
		add("log.format", fmt.Sprintf("must be text or json, not %q", fc.Log.Format))
	}
	checkAdmin(&fc.Admin, add, lookupEnv)
	checkCluster(&fc.Cluster, fc.Gateways, add, lookupEnv)
	if fc.Trace.HEP != "" {
		if _, _, err := net.SplitHostPort(fc.Trace.HEP); err != nil {
			add("trace.hep", fmt.Sprintf("%q is not host:port", fc.Trace.HEP))
		}
	}
	if pw, err := mapping.ExpandEnv(string(fc.Trace.HEPPassword), lookupEnv); err != nil {
		add("trace.hep_password", err.Error())
	} else {
		fc.Trace.HEPPassword = mapping.Secret(pw)
	}
	if len(fc.Trace.HEPNodeName) > 255 {
		add("trace.hep_node_name", "must be at most 255 characters")
	}
	if fc.Trace.PcapMaxBytes < 0 {
		add("trace.pcap_max_bytes", "must not be negative")
	}
	if fc.Trace.PcapKeep < 0 || fc.Trace.PcapKeep == 1 {
		add("trace.pcap_keep", "must be at least 2: the file being written and the one before, so that a restart keeps the last run's capture")
	}
	if fc.Daemon.DrainTimeout < 0 {
		add("daemon.drain_timeout", "must not be negative")
	}
	switch g := fc.Daemon.GOGC; {
	case g == -1 && fc.Daemon.MemoryLimitMB <= 0:
		add("daemon.gogc", "-1 (collector off) needs daemon.memory_limit_mb, or the heap grows without bound")
	case g == -1, g == 0, g >= 10 && g <= 10000:
	default:
		add("daemon.gogc", fmt.Sprintf("must be between 10 and 10000, or -1 with daemon.memory_limit_mb, not %d", g))
	}
	if fc.Daemon.MemoryLimitMB < 0 {
		add("daemon.memory_limit_mb", "must not be negative")
	} else if fc.Daemon.MemoryLimitMB > 0 && fc.Daemon.MemoryLimitMB < 64 {
		add("daemon.memory_limit_mb", fmt.Sprintf("%d MiB is too small to run in (at least 64)", fc.Daemon.MemoryLimitMB))
	}
	switch fc.Daemon.Ready.SIPPeers {
	case "", "any", "ignore":
	default:
		add("daemon.ready.sip_peers", fmt.Sprintf("must be any or ignore, not %q", fc.Daemon.Ready.SIPPeers))
	}
	switch fc.Daemon.Ready.Gateways {
	case "", "ignore", "any", "all":
	default:
		add("daemon.ready.gateways", fmt.Sprintf("must be ignore, any or all, not %q", fc.Daemon.Ready.Gateways))
	}
	for key, v := range map[string]time.Duration{"calls.ring_timeout": fc.Calls.RingTimeout,
		"calls.no_answer_timeout": fc.Calls.NoAnswerTimeout, "calls.tone_timeout": fc.Calls.ToneTimeout} {
		if v < 0 || (v > 0 && v < time.Second) {
			add(key, "must be at least 1s (or absent for the default)")
		}
	}
	if fc.Calls.PeerDownFor < 0 {
		add("calls.peer_down_for", "must not be negative")
	}
	for key, v := range map[string]int{"cdr.max_size_mb": fc.CDR.MaxSizeMB, "cdr.max_files": fc.CDR.MaxFiles, "cdr.keep": fc.CDR.Keep} {
		if v < 0 {
			add(key, "must not be negative")
		}
	}
	if fc.CDR.Keep > 1_000_000 {
		add("cdr.keep", "must be at most 1000000")
	}
	addJoined(fc.MGCP.Validate())
	addJoined(fc.SIP.Validate())
	rules, err := mapping.New(fc.Config, mapping.Options{
		CheckDigitMap: func(s string) error { _, err := mgcp.CompileDigitMap(s); return err },
		LookupEnv:     lookupEnv,
	})
	var me *mapping.Error
	if errors.As(err, &me) {
		for _, p := range me.Problems {
			add(p.Path, p.Reason)
		}
	} else if err != nil {
		add("", err.Error())
	}
	// Checked last, so that it is the one problem of an empty file and
	// does not pile onto the problems of a file under construction.
	if len(cerr.Problems) == 0 && len(fc.Gateways) == 0 && len(fc.Lines) == 0 && len(fc.Trunks) == 0 &&
		!fc.AllowEmpty && !lo.allowEmpty {
		add("", ErrEmpty.Error())
	}
	if len(cerr.Problems) > 0 {
		sort.SliceStable(cerr.Problems, func(i, j int) bool { return cerr.Problems[i].Line < cerr.Problems[j].Line })
		return nil, cerr
	}
	fc.MGCP = fc.MGCP.WithDefaults()
	fc.SIP = fc.SIP.WithDefaults()
	fc.Admin = fc.Admin.withDefaults()
	if fc.Trace.HEPNodeID == 0 {
		fc.Trace.HEPNodeID = 2427
	}
	if fc.Trace.PcapMaxBytes == 0 {
		fc.Trace.PcapMaxBytes = 100 << 20
	}
	if fc.Trace.PcapKeep == 0 {
		fc.Trace.PcapKeep = 5
	}
	if fc.Daemon.DrainTimeout == 0 {
		fc.Daemon.DrainTimeout = 30 * time.Second
	}
	if fc.Daemon.GOGC == 0 {
		fc.Daemon.GOGC = DefaultGOGC
	}
	return &Loaded{File: fc, Rules: rules}, nil
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+) (`.*` )?into (\\S+)$")
)

// yamlProblem turns a yaml error message into a problem with a line and,
// where the index knows it, a key path.
func yamlProblem(msg string, index *pathIndex) Problem {
	p := Problem{Reason: strings.TrimPrefix(msg, "yaml: ")}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Reason = m[2]
	}
	if index != nil && p.Line > 0 {
		p.Path = index.pathAt(p.Line)
	}
	if m := unknownField.FindStringSubmatch(p.Reason); m != nil {
		p.Reason = fmt.Sprintf("unknown key %q", m[1]) + unknownKeyHint(p.Path, m[1])
	} else if m := cannotDecode.FindStringSubmatch(p.Reason); m != nil {
		want := strings.TrimPrefix(m[3], "[]")
		switch want {
		case "time.Duration":
			want = "a duration such as 30s or 5m"
		case "mapping.Secret":
			want = "a string"
		}
		if strings.HasPrefix(m[3], "[]") {
			want = "a list of " + want
		}
		got := m[1]
		if m[2] != "" {
			got += " " + strings.TrimSpace(m[2])
		}
		p.Reason = fmt.Sprintf("expected %s, got %s", want, got)
	}
	return p
}

// pathIndex maps key paths ("lines[2].user") to the line they start on,
// and lines back to the deepest key on them.
type pathIndex struct {
	lines  map[string]int
	byLine map[int]string
}

func newPathIndex(root *yaml.Node) *pathIndex {
	ix := &pathIndex{lines: map[string]int{}, byLine: map[int]string{}}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		ix.walk(root.Content[0], "")
	}
	return ix
}

func (ix *pathIndex) note(path string, line int) {
	ix.lines[path] = line
	if prev, ok := ix.byLine[line]; !ok || len(path) > len(prev) {
		ix.byLine[line] = path
	}
}

func (ix *pathIndex) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			ix.note(p, k.Line)
			ix.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			ix.note(p, v.Line)
			ix.walk(v, p)
		}
	case yaml.AliasNode:
		if n.Alias != nil {
			ix.walk(n.Alias, path)
		}
	}
}

// line finds the line of path, or of its nearest ancestor present in the
// file (a missing key is reported where its parent is).
func (ix *pathIndex) line(path string) int {
	for path != "" {
		if l, ok := ix.lines[path]; ok {
			return l
		}
		cut := strings.LastIndexAny(path, ".[")
		if cut <= 0 {
			break
		}
		path = path[:cut]
	}
	return 0
}

// pathAt returns the deepest key path starting on line.
func (ix *pathIndex) pathAt(line int) string { return ix.byLine[line] }

// SummaryLine describes compiled rules in one line, as check-config and
// the daemon's log print them.
func SummaryLine(s mapping.Summary) string {
	return fmt.Sprintf("%d gateway(s), %d line(s), %d trunk group(s) with %d channel(s), %d peer(s), %d route(s), %d dial plan(s), %d rewrite set(s)",
		s.Gateways, s.Lines, s.Trunks, s.TrunkChannels, s.Peers, s.Routes, s.DialPlans, s.Rewrites)
}
