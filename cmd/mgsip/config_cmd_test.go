package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const invalidConfigs = "../../internal/config/testdata/invalid/"

// TestCheckConfigSecretsNeverPrinted: check-config output, valid and
// invalid, never shows a secret.
func TestCheckConfigSecretsNeverPrinted(t *testing.T) {
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
	code, out, errOut := runCLI(t, "", "check-config", path)
	if code != 0 || strings.Contains(out+errOut, secret) {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	bad := strings.Replace(conf, "domain: g.example", "domain: g.example\n    port: nope", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, "", "check-config", path)
	if code != 1 || strings.Contains(out+errOut, secret) {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
}

func TestCheckConfigCLI(t *testing.T) {
	t.Setenv("MGSIP_TEST_PASS", "x")
	code, out, _ := runCLI(t, "", "check-config", "../../configs/demo.yaml")
	if code != 0 || !strings.HasPrefix(out, "../../configs/demo.yaml: ok: 1 gateway(s), 2 line(s)") {
		t.Fatalf("exit %d: %s", code, out)
	}
	code, out, _ = runCLI(t, "", "check-config", invalidConfigs+"line_unknown_gateway.yaml")
	if code != 1 || !strings.Contains(out, `line_unknown_gateway.yaml:8: lines[0].gateway: no gateway named "gw9"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	if code, _, _ := runCLI(t, "", "check-config", "/nonexistent.yaml"); code != 2 {
		t.Errorf("missing file: exit %d", code)
	}
}

func TestRunRefusesBadConfigBeforeBinding(t *testing.T) {
	code, _, errOut := runCLI(t, "", "run", "--config", invalidConfigs+"gateway_bad_ptime.yaml")
	if code != 1 || !strings.Contains(errOut, "gateways[0].ptime") || !strings.Contains(errOut, "nothing started") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
