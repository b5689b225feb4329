package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mgsip/mgsip/mapping"
)

// ErrEmpty: the file configures nothing (no gateway, line or trunk).
var ErrEmpty = errors.New("configures no gateway, line or trunk (an empty or truncated file?); " +
	"set allow_empty: true in the file, or give --allow-empty, to run without any")

// MinTokenLength is the shortest admin token accepted: 16 characters of a
// random string are far beyond reach of the throttled guessing the API
// allows.
const MinTokenLength = 16

// Admin is the admin API section. docs/security.md explains each choice.
type Admin struct {
	// Listen is the API's address: host:port (default 127.0.0.1:8080), or
	// unix:/path for a unix socket.
	Listen string `yaml:"listen"`
	// Token, when set, is required as a bearer token for every /api and
	// /metrics request. It is required when Listen is not loopback.
	Token mapping.Secret `yaml:"token"`
	// ReadOnlyToken may read (GET: /metrics, the lists) but not act.
	ReadOnlyToken mapping.Secret `yaml:"read_only_token"`
	// TLSCert and TLSKey (PEM files) make the API speak HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// SocketMode is the unix socket's file mode, in octal (default 0600).
	SocketMode string `yaml:"socket_mode"`
	// AllowedHosts are Host header values accepted without a token besides
	// the loopback names (a DNS rebinding defence).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// AuthFailRate (per second) and AuthFailBurst bound the failed
	// authentications one source address may make; past them it gets 429
	// (defaults 1/s and 10).
	AuthFailRate  float64 `yaml:"auth_fail_rate"`
	AuthFailBurst int     `yaml:"auth_fail_burst"`
	// Pprof serves Go's runtime profiles (CPU, heap, allocations, mutex,
	// block, goroutines) under /debug/pprof/, behind the same guards as
	// the API and, when tokens are set, to the full token only. Off by
	// default; meant for measuring (docs/benchmarks.md).
	Pprof bool `yaml:"pprof"`

	// Mode is SocketMode parsed.
	Mode os.FileMode `yaml:"-"`
}

// UnixSocket returns the socket path when Listen is unix:/path.
func (a Admin) UnixSocket() (string, bool) {
	return strings.CutPrefix(a.Listen, "unix:")
}

// IsLoopback reports whether a host:port listens on loopback only.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (a Admin) withDefaults() Admin {
	if a.Listen == "" {
		a.Listen = "127.0.0.1:8080"
	}
	if a.Mode == 0 {
		a.Mode = 0o600
	}
	if a.AuthFailRate == 0 {
		a.AuthFailRate = 1
	}
	if a.AuthFailBurst == 0 {
		a.AuthFailBurst = 10
	}
	return a
}

// checkAdmin expands the tokens' ${ENV} references and checks the
// section. No message quotes a token.
func checkAdmin(a *Admin, add func(path, reason string), lookupEnv func(string) (string, bool)) {
	expand := func(key string, s *mapping.Secret) {
		v, err := mapping.ExpandEnv(string(*s), lookupEnv)
		if err != nil {
			add("admin."+key, err.Error())
			*s = ""
			return
		}
		*s = mapping.Secret(v)
		switch {
		case v == "":
		case len(v) < MinTokenLength:
			add("admin."+key, fmt.Sprintf("must be at least %d characters long", MinTokenLength))
		case strings.ContainsAny(v, " \t\r\n"):
			add("admin."+key, "must not contain white space")
		}
	}
	expand("token", &a.Token)
	expand("read_only_token", &a.ReadOnlyToken)
	if a.ReadOnlyToken != "" && a.ReadOnlyToken == a.Token {
		add("admin.read_only_token", "must differ from admin.token")
	}
	if a.ReadOnlyToken != "" && a.Token == "" {
		add("admin.read_only_token", "needs admin.token as well (without it the API is open and a read-only token means nothing)")
	}
	if path, ok := a.UnixSocket(); ok {
		if !filepath.IsAbs(path) {
			add("admin.listen", fmt.Sprintf("unix socket path %q must be absolute", path))
		}
		if a.TLSCert != "" || a.TLSKey != "" {
			add("admin.tls_cert", "TLS is for a TCP listener; a unix socket is protected by its file mode")
		}
	} else if a.Listen != "" {
		if _, _, err := net.SplitHostPort(a.Listen); err != nil {
			add("admin.listen", fmt.Sprintf("%q is not host:port or unix:/path", a.Listen))
		} else if !IsLoopback(a.Listen) && a.Token == "" {
			// Anybody who reaches the port could hang up calls and read
			// every line's state.
			add("admin.listen", fmt.Sprintf("%q is not a loopback address: set admin.token (or listen on 127.0.0.1, ::1 or a unix socket)", a.Listen))
		}
	}
	if a.SocketMode != "" {
		m, err := strconv.ParseUint(a.SocketMode, 8, 32)
		switch {
		case err != nil || m > 0o777:
			add("admin.socket_mode", fmt.Sprintf("%q is not an octal file mode such as 0660", a.SocketMode))
		case m&0o007 != 0:
			add("admin.socket_mode", fmt.Sprintf("%s lets every local user in; give the group access instead (such as 0660)", a.SocketMode))
		case m&0o600 != 0o600:
			add("admin.socket_mode", fmt.Sprintf("%s does not let mgsip's own user read and write it", a.SocketMode))
		default:
			a.Mode = os.FileMode(m)
		}
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		add("admin.tls_key", "tls_cert and tls_key go together")
	}
	for key, f := range map[string]string{"tls_cert": a.TLSCert, "tls_key": a.TLSKey} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			add("admin."+key, fmt.Sprintf("cannot read %s: %v", f, errors.Unwrap(err)))
		}
	}
	if a.AuthFailRate < 0 {
		add("admin.auth_fail_rate", "must not be negative")
	}
	if a.AuthFailBurst < 0 {
		add("admin.auth_fail_burst", "must not be negative")
	}
	for i, h := range a.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			add(fmt.Sprintf("admin.allowed_hosts[%d]", i), fmt.Sprintf("%q is not a host name", h))
		}
	}
}
