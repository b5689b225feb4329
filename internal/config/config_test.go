package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testEnv provides every variable the example configs reference.
func testEnv(name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, "LINE_SECRET_"):
		return "s3cr3t-" + strings.TrimPrefix(name, "LINE_SECRET_"), true
	case name == "MGSIP_ADMIN_TOKEN", name == "FS_LINE_PASSWORD", name == "PROVIDER_PASSWORD":
		return "s3cr3t-" + strings.ToLower(name), true
	}
	return "", false
}

func TestExampleConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("example configs: %v %v", files, err)
	}
	want := map[string]struct{ lines, trunks, channels int }{
		"demo.yaml": {2, 0, 0}, "asterisk.yaml": {25, 0, 0}, "freeswitch.yaml": {8, 0, 0}, "sip-trunk.yaml": {0, 1, 24},
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := LoadFile(f, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Rules.Summary()
			w, ok := want[filepath.Base(f)]
			if !ok {
				t.Fatalf("no expectation for %s", f)
			}
			if s.Lines != w.lines || s.Trunks != w.trunks || s.TrunkChannels != w.channels {
				t.Errorf("summary %+v", s)
			}
		})
	}
	// Spot checks of what the examples mean.
	cfg, err := LoadFile("../../configs/asterisk.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Rules.LineByEndpoint("aaln/24", "vg224.example.net")
	if l == nil || l.User != "2024" || l.Password.Reveal() != "s3cr3t-24" || l.Peer.Name != "asterisk" || l.Gateway.Quirks.Profile != "cisco-ios" {
		t.Errorf("aaln/24: %+v", l)
	}
	if h := cfg.Rules.LineBySIPUser("asterisk", "2099"); h == nil || h.Features.Hotline != "2000" || h.Features.HotlineDelay != 3*time.Second {
		t.Errorf("hotline line: %+v", h)
	}
	tr, err := LoadFile("../../configs/sip-trunk.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	target, ok := tr.Rules.RouteInbound("provider", "15551230042")
	if !ok || target.Trunk == nil || target.Trunk.Name != "pstn" {
		t.Errorf("DID routing: %+v", target)
	}
	if got := tr.Rules.Peer("provider").ToSIP.Apply("2125551234"); got != "+12125551234" {
		t.Errorf("caller id rewrite: %q", got)
	}
	if got := tr.Rules.Trunk("pstn").ToMGCP.Apply("+15551230042"); got != "5551230042" {
		t.Errorf("DID rewrite: %q", got)
	}
}

// TestInvalidConfigFixtures checks the exact message for each kind of
// configuration error (testdata/invalid/NAME.yaml -> NAME.err).
func TestInvalidConfigFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) < 40 {
		t.Fatalf("only %d fixtures", len(files))
	}
	update := os.Getenv("MGSIP_UPDATE_GOLDEN") == "1"
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := LoadFile(f, testEnv)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("loaded without a configuration error: %v", err)
			}
			got := strings.ReplaceAll(ce.Error(), f, name+".yaml") + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if update {
				_ = os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing %s (MGSIP_UPDATE_GOLDEN=1 writes it): %v", golden, err)
			}
			if got != string(want) {
				t.Errorf("got:\n%swant:\n%s", got, want)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	const secret = "hunter2-very-secret"
	conf := `admin:
  token: ` + secret + `
peers:
  - name: pbx
    host: 192.0.2.1
    account:
      user: acme
      password: ` + secret + `
gateways:
  - name: g
    domain: g.example
lines:
  - gateway: g
    endpoint: aaln/1
    user: "100"
    password: ` + secret + `
`
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(path, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Rules.Lines[0]
	js, _ := json.Marshal(l.Password)
	for _, s := range []string{fmt.Sprintf("%v %+v %s", cfg.File, cfg.File, l.Password), fmt.Sprintf("%#v", cfg.File.Peers), string(js)} {
		if strings.Contains(s, secret) {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if l.Password.Reveal() != secret {
		t.Error("Reveal lost the value")
	}
	bad := strings.Replace(conf, "domain: g.example", "domain: g.example\n    port: nope", 1)
	_, err = Load("bad.yaml", []byte(bad), testEnv)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v", err)
	}
}

// FuzzLoadConfig feeds arbitrary bytes to the loader: it must never panic,
// and every failure must be a *Error with problems.
func FuzzLoadConfig(f *testing.F) {
	for _, pattern := range []string{"../../configs/*.yaml", "testdata/invalid/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Load("fuzz.yaml", data, testEnv)
		if err == nil {
			return
		}
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("error %T without problems: %v", err, err)
		}
	})
}
