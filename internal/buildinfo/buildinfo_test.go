package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/mgsip/mgsip", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-12-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	dirty := *stamped
	dirty.Settings = append([]debug.BuildSetting{}, stamped.Settings...)
	dirty.Settings[3].Value = "true"
	installed := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.2.0"}}

	cases := []struct {
		name          string
		bi            *debug.BuildInfo
		ver, rev, day string
		want          Info
	}{
		{"nothing known", nil, "", "", "", Info{Version: "dev"}},
		{"vcs stamps", stamped, "", "", "", Info{"dev", "0123456789abcdef", "2026-12-01T12:00:00Z", "go1.26.8"}},
		{"dirty tree", &dirty, "", "", "", Info{"dev", "0123456789abcdef-dirty", "2026-12-01T12:00:00Z", "go1.26.8"}},
		{"go install @version", installed, "", "", "", Info{Version: "0.2.0", GoVersion: "go1.26.8"}},
		{"ldflags win", stamped, "v1.2.3", "fedcba", "2027-01-01T00:00:00Z", Info{"1.2.3", "fedcba", "2027-01-01T00:00:00Z", "go1.26.8"}},
		{"ldflags version only", stamped, "1.2.3", "", "", Info{"1.2.3", "0123456789abcdef", "2026-12-01T12:00:00Z", "go1.26.8"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := resolve(c.bi, c.ver, c.rev, c.day)
			if c.want.GoVersion == "" {
				c.want.GoVersion = got.GoVersion // runtime.Version() of this test binary
			}
			if got != c.want {
				t.Fatalf("resolve = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	got := Info{"1.0.0", "abc", "2026-12-01T12:00:00Z", "go1.26.8"}.String()
	if want := "mgsip 1.0.0 (commit abc, built 2026-12-01T12:00:00Z, go1.26.8)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if got := (Info{Version: "dev", GoVersion: "go1"}).String(); !strings.Contains(got, "commit unknown, built unknown") {
		t.Fatalf("String = %q", got)
	}
}

// TestLinkerOverride builds a program with -ldflags -X and checks that the
// values reach Get: the names the Makefile uses are the ones in this file.
func TestLinkerOverride(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"fmt\"\n\n\t\"github.com/mgsip/mgsip/internal/buildinfo\"\n)\n\nfunc main() { fmt.Println(buildinfo.Get()) }\n"
	// The program lives in this module (internal/ is importable only from
	// inside it), in a temporary directory under the package.
	pdir, err := os.MkdirTemp(".", "ldtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pdir) })
	if err := os.WriteFile(filepath.Join(pdir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	pkg := "github.com/mgsip/mgsip/internal/buildinfo"
	ld := "-X " + pkg + ".version=9.8.7 -X " + pkg + ".revision=cafe -X " + pkg + ".date=2030-01-02T03:04:05Z"
	out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "./"+pdir).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "mgsip 9.8.7 (commit cafe, built 2030-01-02T03:04:05Z, go") {
		t.Fatalf("output %q", out)
	}
}
