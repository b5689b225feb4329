package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/testutil"
)

func TestClusterStatus(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	// Two nodes own gw1 and gw2 (by preference); gw3 is in the file only,
	// so nobody owns it.
	for _, name := range []string{"a", "b"} {
		n, err := cluster.New(cluster.Config{Name: name, MGCPAddr: "mgsip@10.0.0." + name + ":2727", Endpoints: []string{etcd.Endpoint},
			TTL: 2 * time.Second, Gateways: []string{"gw1", "gw2"}, Preference: map[string][]string{"gw1": {"a"}, "gw2": {"b"}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = n.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; _ = n.Close() })
	}
	conf := func(endpoint string) string {
		return fmt.Sprintf(`cluster:
  endpoints: [%s]
  node: cli
  mgcp_address: 127.0.0.1:2727
gateways:
  - {name: gw1, domain: gw1.test, address: 127.0.0.1}
  - {name: gw2, domain: gw2.test, address: 127.0.0.1}
  - {name: gw3, domain: gw3.test, address: 127.0.0.1}
`, endpoint)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.yaml")
	if err := os.WriteFile(path, []byte(conf(etcd.Endpoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The nodes settle: a owns gw1, b gw2.
	var out string
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, stdout, stderr := runCLI(t, "", "cluster", "status", path)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		out = stdout
		if strings.Contains(out, "a: gw1\n") && strings.Contains(out, "b: gw2\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"NODE", "mgsip@10.0.0.a:2727", "a: gw1\n", "b: gw2\n", "unowned: gw3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, stdout, _ := runCLI(t, "", "cluster", "status", "--json", path)
	var js struct {
		Nodes []struct {
			Name     string   `json:"name"`
			Gateways []string `json:"gateways"`
		} `json:"nodes"`
		Unowned []string `json:"unowned"`
	}
	if err := json.Unmarshal([]byte(stdout), &js); code != 0 || err != nil || len(js.Nodes) != 2 || len(js.Unowned) != 1 {
		t.Fatalf("json (exit %d, %v): %s", code, err, stdout)
	}

	alone := filepath.Join(dir, "alone.yaml")
	if err := os.WriteFile(alone, []byte("gateways:\n  - {name: gw1, domain: gw1.test}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "", "cluster", "status", alone); code != 1 || !strings.Contains(stderr, "no cluster section") {
		t.Fatalf("no cluster section: exit %d %s", code, stderr)
	}
	// etcd that does not answer: exit 3 after the timeout.
	down := filepath.Join(dir, "down.yaml")
	if err := os.WriteFile(down, []byte(conf("http://127.0.0.1:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runCLI(t, "", "cluster", "status", "--timeout", "1s", down); code != 3 {
		t.Fatalf("etcd down: exit %d", code)
	}
}
