package metrics

import (
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
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

func TestClusterCollector(t *testing.T) {
	st := ClusterState{Changes: map[string]uint64{"acquired": 3, "fenced": 2}, Owned: 4, LeaseValid: true, ValidFor: 1500 * time.Millisecond,
		Fences: 1, Redirects: 5, FencedDrops: 6, CallWrites: 7, CallWritesRefused: 8, CallWriteErrors: 9}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewClusterCollector(func() ClusterState { return st }))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			got[name] = v
		}
	}
	for name, want := range map[string]float64{
		"mgsip_cluster_ownership_changes_total{change=acquired}": 3, "mgsip_cluster_ownership_changes_total{change=fenced}": 2,
		"mgsip_cluster_ownership_changes_total{change=lost}": 0, "mgsip_cluster_ownership_changes_total{change=released}": 0,
		"mgsip_cluster_ownership_changes_total{change=resumed}": 0,
		"mgsip_cluster_gateways_owned":                          4, "mgsip_cluster_lease_valid": 1, "mgsip_cluster_lease_valid_seconds": 1.5,
		"mgsip_cluster_fence_events_total": 1, "mgsip_cluster_redirects_total": 5, "mgsip_cluster_fenced_commands_total": 6,
		"mgsip_cluster_call_state_writes_total{result=ok}": 7, "mgsip_cluster_call_state_writes_total{result=refused}": 8,
		"mgsip_cluster_call_state_writes_total{result=error}": 9,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if len(got) != 14 {
		t.Errorf("%d series: %v", len(got), got)
	}
	st.LeaseValid = false
	fams, _ = reg.Gather()
	for _, f := range fams {
		if f.GetName() == "mgsip_cluster_lease_valid" && f.GetMetric()[0].GetGauge().GetValue() != 0 {
			t.Error("a fenced node reports its lease valid")
		}
	}
}
