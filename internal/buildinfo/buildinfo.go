// Package buildinfo says which mgsip this is: the version, the commit it
// was built from and when, and the Go toolchain. The values come from the
// VCS stamps Go records in the binary (debug.ReadBuildInfo: vcs.revision,
// vcs.time, vcs.modified) and from the module version when built with
// `go install module@version`; `-ldflags -X` overrides each of them (the
// Makefile sets all three, so a build from a tarball without .git still
// knows its version).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set with -ldflags "-X github.com/mgsip/mgsip/internal/buildinfo.version=...".
var (
	version  string
	revision string
	date     string
)

// Info describes one build.
type Info struct {
	// Version is the release ("0.1.0"), a pseudo-version, or "dev".
	Version string `json:"version"`
	// Revision is the commit id; it ends in "-dirty" when the work tree
	// had uncommitted changes. Empty when unknown.
	Revision string `json:"revision"`
	// Date is the commit (or build) time, RFC 3339. Empty when unknown.
	Date string `json:"date"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version"`
}

// Get returns the build's information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(bi, version, revision, date)
}

// resolve merges the build info with the link-time overrides.
func resolve(bi *debug.BuildInfo, ldVersion, ldRevision, ldDate string) Info {
	in := Info{Version: "dev", GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			in.Version = strings.TrimPrefix(v, "v")
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.time":
				in.Date = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && in.Revision != "" {
			in.Revision += "-dirty"
		}
	}
	if ldVersion != "" {
		in.Version = strings.TrimPrefix(ldVersion, "v")
	}
	if ldRevision != "" {
		in.Revision = ldRevision
	}
	if ldDate != "" {
		in.Date = ldDate
	}
	return in
}

// String is the one line `mgsip version` prints.
func (in Info) String() string {
	rev := in.Revision
	if rev == "" {
		rev = "unknown"
	}
	d := in.Date
	if d == "" {
		d = "unknown"
	}
	return fmt.Sprintf("mgsip %s (commit %s, built %s, %s)", in.Version, rev, d, in.GoVersion)
}
