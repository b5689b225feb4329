package daemon

import (
	"context"
	"os"
	"slices"
	"strings"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/sirupsen/logrus"
)

// ReloadReport is what a reload did, for the admin API (POST
// /api/v1/reload), the CLI and the log: every change of the file is
// applied or named.
type ReloadReport struct {
	Status string `json:"status"` // "reloaded"
	// Lines: added, removed (retired once idle), changed (idle: the new
	// rule applies now) and deferred (a call in progress: when it ends).
	Lines bridge.ApplyReport `json:"lines"`
	// Applied are the other keys that changed and took effect now
	// (log.level, mgcp.trace, a peer's or gateway's settings, routes...).
	Applied []string `json:"applied"`
	// NeedsRestart are keys that changed in the file and take effect
	// only when mgsip restarts (sockets, timers, the admin API, trunk
	// groups); they stay listed until then.
	NeedsRestart []string `json:"needs_restart"`
	// Ignored are keys that changed but that the command line overrides.
	Ignored []string `json:"ignored"`
}

// normalize makes every list of the answer a list ([] in JSON, never
// null, so that scripts can iterate without a check) and puts the lines in
// the order people read them (aaln/2 before aaln/10).
func (r *ReloadReport) normalize() {
	list := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		slices.SortFunc(l, func(a, b string) int {
			switch {
			case bridge.NaturalLess(a, b):
				return -1
			case bridge.NaturalLess(b, a):
				return 1
			}
			return 0
		})
		return l
	}
	changes := func(m map[string][]string) map[string][]string {
		if m == nil {
			m = map[string][]string{}
		}
		for id, what := range m {
			if what == nil {
				m[id] = []string{}
			}
		}
		return m
	}
	r.Lines.Added = list(r.Lines.Added)
	r.Lines.Removed = list(r.Lines.Removed)
	r.Lines.Changed = changes(r.Lines.Changed)
	r.Lines.Deferred = changes(r.Lines.Deferred)
	if r.Applied == nil {
		r.Applied = []string{}
	}
	if r.NeedsRestart == nil {
		r.NeedsRestart = []string{}
	}
	if r.Ignored == nil {
		r.Ignored = []string{}
	}
}

// appliedAtOnce says whether a changed key takes effect on reload; the
// rest need a restart. The rule sections apply through the swapped rules
// and the bridge (lines are replaced when idle; see bridge.Update); trunk
// groups keep their channels' rules until a restart.
func appliedAtOnce(key string) bool {
	top, _, _ := strings.Cut(key, ".")
	top, _, _ = strings.Cut(top, "[")
	switch top {
	case "log", "peers", "gateways", "quirks", "lines", "hunt_groups", "dial_plans", "rewrites", "routes":
		return true
	}
	return key == "mgcp.trace" || key == "sip.trace" || strings.HasPrefix(key, "cluster.preference")
}

// LogTimeFormat stamps log lines with milliseconds (RFC 3339).
const LogTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// reload re-reads the file and swaps the rules in if they are valid; it
// applies what can change while running and names the rest.
func (d *daemon) reload(ctx context.Context) (*ReloadReport, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	path := d.configPath
	sdNotify(d.log, "RELOADING=1\nMONOTONIC_USEC="+monotonicUsec())
	defer sdNotify(d.log, "READY=1")
	cfg, err := config.LoadFile(path, os.LookupEnv, config.AllowEmpty(d.allowEmpty))
	if err != nil {
		d.metrics.Reloads.WithLabelValues("rejected").Inc()
		d.log.WithFields(logrus.Fields{"config": path, "problems": strings.Split(err.Error(), "\n")}).
			Error("reload rejected, keeping the running rules")
		return nil, err
	}
	d.metrics.ReloadOK()
	rep := &ReloadReport{Status: "reloaded", Applied: []string{}, NeedsRestart: []string{}}
	// What changed since the last reload is applied or named; what
	// changed since the start and needs a restart stays named.
	for _, key := range config.Diff(d.current, cfg.File) {
		switch {
		case strings.HasPrefix(key, "log.") && d.logFromFlags:
			rep.Ignored = append(rep.Ignored, key+" (set on the command line)")
		case appliedAtOnce(key):
			rep.Applied = append(rep.Applied, key)
		}
	}
	for _, key := range config.Diff(d.started, cfg.File) {
		if !appliedAtOnce(key) {
			rep.NeedsRestart = append(rep.NeedsRestart, key)
		}
	}
	d.applyLive(cfg.File)
	d.current = cfg.File
	d.rules.Swap(cfg.Rules)
	d.setAllowed(ctx, cfg.Rules)
	if d.bridge != nil {
		rep.Lines = d.bridge.Update(cfg.Rules)
	}
	if d.node != nil {
		// The cluster section itself (etcd, node name, addresses) takes
		// effect at the next start; the gateways and preferences now.
		names := make([]string, 0, len(cfg.Rules.Gateways))
		for _, g := range cfg.Rules.Gateways {
			names = append(names, g.Name)
		}
		d.node.SetGateways(names, cfg.File.Cluster.Preference)
	}
	rep.normalize()
	d.metrics.SetNeedsRestart(rep.NeedsRestart)
	f := logrus.Fields{"config": path, "lines_added": len(rep.Lines.Added), "lines_removed": len(rep.Lines.Removed),
		"lines_changed": len(rep.Lines.Changed), "lines_deferred": len(rep.Lines.Deferred)}
	if len(rep.Applied) > 0 {
		f["applied"] = strings.Join(rep.Applied, ",")
	}
	d.log.WithFields(f).Info("configuration reloaded: " + config.SummaryLine(cfg.Rules.Summary()))
	if len(rep.NeedsRestart) > 0 {
		d.log.WithField("config", path).Warn("needs restart: " + strings.Join(rep.NeedsRestart, ", "))
	}
	if len(rep.Ignored) > 0 {
		d.log.WithField("config", path).Warn("not applied: " + strings.Join(rep.Ignored, ", "))
	}
	return rep, nil
}

// applyLive applies the keys that change without a restart and are not
// rules: the log level and format, the wire trace switches.
func (d *daemon) applyLive(f config.File) {
	if !d.logFromFlags {
		if lvl, err := logrus.ParseLevel(orDefault(f.Log.Level, "info")); err == nil {
			d.log.SetLevel(lvl)
		}
		switch strings.ToLower(f.Log.Format) {
		case "json":
			if _, ok := d.log.Formatter.(*logrus.JSONFormatter); !ok {
				d.log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: LogTimeFormat})
			}
		case "", "text":
			if _, ok := d.log.Formatter.(*logrus.TextFormatter); !ok {
				d.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: LogTimeFormat})
			}
		}
	}
	if f.MGCP.Trace != d.current.MGCP.Trace {
		d.tap.TraceMGCP.Store(f.MGCP.Trace)
	}
	if f.SIP.Trace != d.current.SIP.Trace {
		d.tap.TraceSIP.Store(f.SIP.Trace)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
