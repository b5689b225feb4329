package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mgsip/mgsip/internal/chanmgcp"
)

func TestImportAsterisk(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "mgsip.yaml")
	src := "../../internal/chanmgcp/testdata/site/mgcp.conf"
	code, stdout, stderr := runCLI(t, "", "import", "asterisk", src, "-o", out, "--sip-users", "sip")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, out+": ok: 4 gateway(s), 6 line(s)") {
		t.Fatalf("stdout %q", stdout)
	}
	if !strings.Contains(stderr, "mgcp.conf:35: slowsequence: not mapped") {
		t.Fatalf("stderr lacks the unmapped setting with its line:\n%s", stderr)
	}
	st, err := os.Stat(filepath.Join(dir, "mgsip.env"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mgsip.env: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sip-mgsip.conf")); err != nil {
		t.Fatal(err)
	}
	envData, _ := os.ReadFile(filepath.Join(dir, "mgsip.env"))
	env := chanmgcp.ParseEnv(envData)
	for k, v := range env {
		t.Setenv(k, v)
	}
	if code, stdout, _ := runCLI(t, "", "check-config", out); code != 0 || !strings.Contains(stdout, ": ok: ") {
		t.Fatalf("check-config of the import: exit %d %s", code, stdout)
	}

	// A second run refuses to overwrite, unless --force; the secrets stay.
	if code, _, stderr := runCLI(t, "", "import", "asterisk", src, "-o", out); code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("second run without --force: exit %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "", "import", "asterisk", src, "-o", out, "--sip-users", "sip", "--force"); code != 0 {
		t.Fatalf("--force: exit %d %s", code, stderr)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "mgsip.env"))
	if string(again) != string(envData) {
		t.Fatalf("secrets changed on re-import:\n%s\n---\n%s", envData, again)
	}
	if code, _, _ := runCLI(t, "", "import", "asterisk", src, "-o", out, "--sip-users", "iax", "--force"); code != 2 {
		t.Fatalf("--sip-users iax: exit %d", code)
	}
	if code, _, stderr := runCLI(t, "", "import", "asterisk", filepath.Join(dir, "nope.conf"), "-o", filepath.Join(dir, "x.yaml")); code != 1 || !strings.Contains(stderr, "nope.conf") {
		t.Fatalf("missing input: exit %d %s", code, stderr)
	}
}
