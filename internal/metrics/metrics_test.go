package metrics

import (
	"testing"

	"github.com/mgsip/mgsip/internal/buildinfo"
)

func TestBuildInfo(t *testing.T) {
	m := New()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := buildinfo.Get()
	for _, f := range fams {
		if f.GetName() != "mgsip_build_info" {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("mgsip_build_info has %d series, want 1", len(f.GetMetric()))
		}
		s := f.GetMetric()[0]
		got := map[string]string{}
		for _, l := range s.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if got["version"] != want.Version || got["revision"] != want.Revision || got["goversion"] != want.GoVersion {
			t.Fatalf("labels %v, want version %q revision %q goversion %q", got, want.Version, want.Revision, want.GoVersion)
		}
		if got["goversion"] == "" || s.GetGauge().GetValue() != 1 {
			t.Fatalf("series %v", s)
		}
		return
	}
	t.Fatal("no mgsip_build_info")
}
