// Package sip is mgsip's SIP side: listeners, per-line registrations and
// dialogs on top of sipgo. This file holds its configuration.
package sip

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Config configures the SIP stack.
type Config struct {
	// Listeners default to one UDP listener on 0.0.0.0:5060.
	Listeners []Listener `yaml:"listeners"`
	// UserAgent is sent in User-Agent and Server headers (default "mgsip").
	UserAgent string `yaml:"user_agent"`
	// RegisterRate is the ceiling of REGISTER exchanges per second
	// (default 2000). Below it the pace adapts to the registrar: it
	// starts at 50/s, grows while every REGISTER is answered and halves
	// on 503, 500, 408 or no answer (pace.go).
	RegisterRate float64 `yaml:"register_rate"`
	// DropUnknown silently drops requests from addresses that are not a
	// configured peer and carry no valid credentials, instead of answering
	// 403 (useful against scanners).
	DropUnknown bool `yaml:"drop_unknown"`
	// Trace logs every SIP message sent and received.
	Trace bool `yaml:"trace"`
	// SessionExpires is the session interval mgsip asks for in its INVITEs
	// (RFC 4028 session timers; default 1800 s, negative: do not ask).
	SessionExpires time.Duration `yaml:"session_expires"`
	// MinSE is the smallest session interval accepted from a peer; shorter
	// ones are refused with 422 (RFC 4028 §8.1; default 90 s, the RFC floor).
	MinSE time.Duration `yaml:"min_se"`
	// Limits are the per-source rate limits on the SIP listeners.
	Limits Limits `yaml:"limits"`
	// SocketBuffer is the receive and send buffer, in bytes, asked of the
	// kernel for each UDP listener (DefaultSocketBuffer, 4 MiB; -1 keeps
	// the kernel's default). Linux grants at most net.core.rmem_max and
	// wmem_max.
	SocketBuffer int `yaml:"socket_buffer"`
}

// Limits are token buckets applied to requests as they arrive, before
// sipgo parses them or builds a transaction. A rate of 0 takes the
// default; a negative rate turns that limit off. A burst of 0 is twice the
// rate (at least 1). ACKs are never limited and never answered.
type Limits struct {
	// PeerRate is requests per second from one configured peer's IP
	// address; beyond it (and PeerBurst) requests get 503 with Retry-After.
	PeerRate  float64 `yaml:"peer_rate"`
	PeerBurst int     `yaml:"peer_burst"`
	// LineInviteRate is new INVITEs (no To tag) per second to one
	// Request-URI user, so that a flood at one line neither reaches the
	// bridge nor eats the peer's budget for calls to the others; beyond it
	// they get 503 with Retry-After.
	LineInviteRate  float64 `yaml:"line_invite_rate"`
	LineInviteBurst int     `yaml:"line_invite_burst"`
	// StrangerRate is the 403s per second sent to one unknown IP address
	// (without drop_unknown); requests beyond it are dropped.
	StrangerRate  float64 `yaml:"stranger_rate"`
	StrangerBurst int     `yaml:"stranger_burst"`
	// RetryAfter is the Retry-After of the 503 (whole seconds, default 5s).
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Listener is one SIP transport listener.
type Listener struct {
	// Transport is udp (default), tcp or tls.
	Transport string `yaml:"transport"`
	// Listen is host:port to bind (default 0.0.0.0:5060, :5061 for tls).
	Listen string `yaml:"listen"`
	// Advertise is host[:port] put in Via and Contact when mgsip is
	// behind NAT; default: the bound address.
	Advertise string `yaml:"advertise"`
	// Cert and Key are PEM files, required for tls.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Defaults.
const (
	DefaultUserAgent    = "mgsip"
	DefaultRegisterRate = 2000
	// DefaultSessionExpires and DefaultMinSE follow RFC 4028 §4 and §5.
	DefaultSessionExpires = 1800 * time.Second
	DefaultMinSE          = 90 * time.Second
	// Rate limit defaults: a PBX may send bursts of NOTIFYs (MWI) and
	// calls for thousands of lines (mgsip sets up 1,500 calls/s on two
	// cores, docs/benchmarks.md: a peer within that is never refused); a
	// phone line does not ring more than a few times a second; a stranger
	// needs few answers to learn it is not welcome.
	DefaultPeerRate       = 5000
	DefaultLineInviteRate = 5
	DefaultStrangerRate   = 5
	DefaultRetryAfter     = 5 * time.Second
)

// WithDefaults returns the config with unset fields defaulted.
func (c Config) WithDefaults() Config {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Transport: "udp", Listen: "0.0.0.0:5060"}}
	}
	ls := make([]Listener, len(c.Listeners))
	for i, l := range c.Listeners {
		l.Transport = strings.ToLower(l.Transport)
		if l.Transport == "" {
			l.Transport = "udp"
		}
		if l.Listen == "" {
			l.Listen = "0.0.0.0:5060"
			if l.Transport == "tls" {
				l.Listen = "0.0.0.0:5061"
			}
		}
		ls[i] = l
	}
	c.Listeners = ls
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	if c.RegisterRate == 0 {
		c.RegisterRate = DefaultRegisterRate
	}
	if c.SessionExpires == 0 {
		c.SessionExpires = DefaultSessionExpires
	}
	if c.MinSE == 0 {
		c.MinSE = DefaultMinSE
	}
	c.Limits = c.Limits.withDefaults()
	if c.SocketBuffer == 0 {
		c.SocketBuffer = DefaultSocketBuffer
	}
	return c
}

func (l Limits) withDefaults() Limits {
	rateBurst := func(r *float64, b *int, def float64) {
		if *r == 0 {
			*r = def
		}
		if *b == 0 && *r > 0 {
			*b = max(1, int(2**r))
		}
	}
	rateBurst(&l.PeerRate, &l.PeerBurst, DefaultPeerRate)
	rateBurst(&l.LineInviteRate, &l.LineInviteBurst, DefaultLineInviteRate)
	rateBurst(&l.StrangerRate, &l.StrangerBurst, DefaultStrangerRate)
	if l.RetryAfter == 0 {
		l.RetryAfter = DefaultRetryAfter
	}
	return l
}

// Validate reports every problem as "sip.key.path: reason".
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	seen := map[string]bool{}
	for i, l := range c.Listeners {
		p := "sip.listeners[" + strconv.Itoa(i) + "]"
		switch l.Transport {
		case "udp", "tcp", "tls":
		default:
			bad(p+".transport", "must be udp, tcp or tls, not %q", l.Transport)
		}
		if err := checkHostPort(l.Listen, true); err != nil {
			bad(p+".listen", "%v", err)
		}
		key := l.Transport + " " + l.Listen
		if seen[key] {
			bad(p+".listen", "%s %s is listed twice", l.Transport, l.Listen)
		}
		seen[key] = true
		if l.Advertise != "" {
			if err := checkHostPort(l.Advertise, false); err != nil {
				bad(p+".advertise", "%v", err)
			}
		}
		if l.Transport == "tls" && (l.Cert == "" || l.Key == "") {
			bad(p, "tls needs cert and key")
		}
		if l.Transport != "tls" && (l.Cert != "" || l.Key != "") {
			bad(p, "cert and key only apply to tls")
		}
	}
	if c.SocketBuffer != -1 && (c.SocketBuffer < MinSocketBuffer || c.SocketBuffer > MaxSocketBuffer) {
		bad("sip.socket_buffer", "must be -1 (the kernel's default) or between %d and %d bytes, not %d", MinSocketBuffer, MaxSocketBuffer, c.SocketBuffer)
	}
	if c.RegisterRate < 0 {
		bad("sip.register_rate", "must not be negative")
	}
	if c.MinSE < time.Second {
		bad("sip.min_se", "must be at least 1s")
	}
	for _, b := range []struct {
		key   string
		burst int
	}{{"peer_burst", c.Limits.PeerBurst}, {"line_invite_burst", c.Limits.LineInviteBurst}, {"stranger_burst", c.Limits.StrangerBurst}} {
		if b.burst < 0 {
			bad("sip.limits."+b.key, "must not be negative")
		}
	}
	if c.Limits.RetryAfter < time.Second || c.Limits.RetryAfter%time.Second != 0 {
		bad("sip.limits.retry_after", "must be whole seconds, at least 1s, not %v", c.Limits.RetryAfter)
	}
	if c.SessionExpires > 0 && c.SessionExpires < c.MinSE {
		bad("sip.session_expires", "%v is below min_se %v", c.SessionExpires, c.MinSE)
	}
	return errors.Join(errs...)
}

// checkHostPort checks "host:port" (port required when needPort).
func checkHostPort(s string, needPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if needPort {
			return fmt.Errorf("%q is not host:port", s)
		}
		host, port = s, ""
	}
	if host == "" && !needPort {
		return fmt.Errorf("%q has no host", s)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q has a bad port", s)
		}
	}
	return nil
}
