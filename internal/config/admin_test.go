package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const oneGateway = "gateways:\n  - name: g\n    domain: g.example\n"

// TestAdminSectionAccepted: what a careful operator writes loads, with the
// values the daemon will use.
func TestAdminSectionAccepted(t *testing.T) {
	for name, tt := range map[string]struct {
		yaml   string
		listen string
		mode   os.FileMode
	}{
		"default":              {"", "127.0.0.1:8080", 0o600},
		"localhost no token":   {"admin:\n  listen: localhost:9000\n", "localhost:9000", 0o600},
		"ipv6 loopback":        {"admin:\n  listen: \"[::1]:9000\"\n", "[::1]:9000", 0o600},
		"127/8":                {"admin:\n  listen: 127.1.2.3:9000\n", "127.1.2.3:9000", 0o600},
		"public with token":    {"admin:\n  listen: 0.0.0.0:8080\n  token: 0123456789abcdef\n", "0.0.0.0:8080", 0o600},
		"unix socket no token": {"admin:\n  listen: unix:/run/mgsip/admin.sock\n  socket_mode: 0660\n", "unix:/run/mgsip/admin.sock", 0o660},
		"unix quoted mode":     {"admin:\n  listen: unix:/run/a.sock\n  socket_mode: \"0640\"\n", "unix:/run/a.sock", 0o640},
		"both tokens": {"admin:\n  token: 0123456789abcdef-full\n  read_only_token: 0123456789abcdef-read\n",
			"127.0.0.1:8080", 0o600},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := Load("a.yaml", []byte(tt.yaml+oneGateway), testEnv)
			if err != nil {
				t.Fatal(err)
			}
			a := cfg.File.Admin
			if a.Listen != tt.listen || a.Mode != tt.mode || a.AuthFailRate != 1 || a.AuthFailBurst != 10 {
				t.Errorf("got %+v", a)
			}
		})
	}
}

// TestAdminProblemsNeverQuoteTokens: a bad token is described, never shown.
func TestAdminProblemsNeverQuoteTokens(t *testing.T) {
	for _, y := range []string{
		"admin:\n  token: tooshort-secret\n",
		"admin:\n  token: \"has a space 0123456789\"\n",
		"admin:\n  token: same-secret-0123456789\n  read_only_token: same-secret-0123456789\n",
		"admin:\n  read_only_token: ro-secret-0123456789\n",
	} {
		_, err := Load("a.yaml", []byte(y+oneGateway), testEnv)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("%q loaded: %v", y, err)
		}
		for _, s := range []string{"tooshort-secret", "has a space", "same-secret", "ro-secret"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("problem quotes the token: %s", err)
			}
		}
	}
}

// TestEmptyConfigRefused: an empty file, one of comments only, or one that
// configures peers but no gateway, line or trunk is refused, unless the
// file says allow_empty: true or the caller passes AllowEmpty.
func TestEmptyConfigRefused(t *testing.T) {
	for name, data := range map[string]string{
		"zero bytes":     "",
		"white space":    "\n\n   \n",
		"comments only":  "# nothing yet\n",
		"empty document": "---\n",
		"peers only":     "peers:\n  - name: pbx\n    host: 192.0.2.1\n    auth: ip\n",
		"null lists":     "gateways: []\nlines: []\ntrunks: []\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load("e.yaml", []byte(data), testEnv)
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.Contains(err.Error(), "configures no gateway, line or trunk") {
				t.Fatalf("got %v", err)
			}
			if _, err := Load("e.yaml", []byte(data), testEnv, AllowEmpty(true)); err != nil {
				t.Errorf("with AllowEmpty: %v", err)
			}
			if _, err := Load("e.yaml", []byte(data), testEnv, AllowEmpty(false)); err == nil {
				t.Error("AllowEmpty(false) allowed it")
			}
			if _, err := Load("e.yaml", []byte(strings.TrimPrefix(data, "---\n")+"\nallow_empty: true\n"), testEnv); err != nil {
				t.Errorf("with allow_empty: true in the file: %v", err)
			}
		})
	}
	// A file with something in it is not affected.
	if _, err := Load("g.yaml", []byte(oneGateway), testEnv); err != nil {
		t.Fatal(err)
	}
}
