package main

import (
	"net/http"
	"net/http/httptest"
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
	// A file that cannot be read is a problem with the file (exit 1, as
	// docs/operations.md says), not a usage error, and the message names it.
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	code, out, errOut := runCLI(t, "", "check-config", missing)
	if code != 1 || out != "" || !strings.Contains(errOut, "cannot read the configuration file "+missing+": no such file or directory") {
		t.Errorf("missing file: exit %d: %q %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "", "run", "--config", missing)
	if code != 1 || !strings.Contains(errOut, "cannot read the configuration file "+missing+": no such file or directory; nothing started") {
		t.Errorf("run with a missing file: exit %d: %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "", "check-config"); code != 2 {
		t.Errorf("check-config without FILE: exit %d, want 2 (usage)", code)
	}
}

func TestRunRefusesBadConfigBeforeBinding(t *testing.T) {
	code, _, errOut := runCLI(t, "", "run", "--config", invalidConfigs+"gateway_bad_ptime.yaml")
	if code != 1 || !strings.Contains(errOut, "gateways[0].ptime") || !strings.Contains(errOut, "nothing started") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestEmptyConfigRefusedByCommands: check-config and run refuse a file
// that configures nothing unless --allow-empty (or allow_empty: true).
func TestEmptyConfigRefusedByCommands(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, "", "check-config", empty)
	if code != 1 || !strings.Contains(out, "configures no gateway, line or trunk") {
		t.Fatalf("check-config: exit %d: %s", code, out)
	}
	if code, out, _ := runCLI(t, "", "check-config", "--allow-empty", empty); code != 0 || !strings.Contains(out, "ok: 0 gateway(s), 0 line(s)") {
		t.Fatalf("check-config --allow-empty: exit %d: %s", code, out)
	}
	code, _, errOut := runCLI(t, "", "run", "--config", empty)
	if code != 1 || !strings.Contains(errOut, "configures no gateway, line or trunk") || !strings.Contains(errOut, "nothing started") {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
}

// TestRunRefusesOpenAdminAPI: an admin API on a public address without a
// token is refused before anything is bound.
func TestRunRefusesOpenAdminAPI(t *testing.T) {
	code, _, errOut := runCLI(t, "", "run", "--config", invalidConfigs+"admin_public_no_token.yaml")
	if code != 1 || !strings.Contains(errOut, "admin.listen") || !strings.Contains(errOut, "set admin.token") ||
		!strings.Contains(errOut, "nothing started") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestAdminTokenNeverInHelp: the token in the environment is not a
// flag's printed default, and a refused token is not echoed.
func TestAdminTokenNeverInHelp(t *testing.T) {
	const secret = "env-secret-token-0123456789"
	t.Setenv("MGSIP_ADMIN_TOKEN", secret)
	for _, c := range []string{"lines", "calls", "gateways", "reload", "hangup", "audit"} {
		code, out, errOut := runCLI(t, "", c, "--help")
		if code != 0 || strings.Contains(out+errOut, secret) || !strings.Contains(out, "--token-file") {
			t.Errorf("%s --help: exit %d\n%s%s", c, code, out, errOut)
		}
	}
	// Against a server that refuses it, the error does not repeat it.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+secret {
			t.Errorf("the environment's token was not sent: %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error": "a valid bearer token is required"}`))
	}))
	defer srv.Close()
	code, out, errOut := runCLI(t, "", "lines", "--admin", srv.URL)
	if code != 1 || strings.Contains(out+errOut, secret) || !strings.Contains(errOut, "401") {
		t.Errorf("exit %d: %s%s", code, out, errOut)
	}
	// --token-file wins over the environment.
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MGSIP_ADMIN_TOKEN", "")
	if code, _, errOut := runCLI(t, "", "lines", "--admin", srv.URL, "--token-file", tf); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("--token-file: exit %d: %s", code, errOut)
	}
}
