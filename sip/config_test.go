package sip

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	d := Config{}.WithDefaults()
	if len(d.Listeners) != 1 || d.Listeners[0] != (Listener{Transport: "udp", Listen: "0.0.0.0:5060"}) || d.UserAgent != "mgsip" || d.RegisterRate != DefaultRegisterRate {
		t.Fatalf("defaults %+v", d)
	}
	if tls := (Config{Listeners: []Listener{{Transport: "TLS", Cert: "c", Key: "k"}}}).WithDefaults(); tls.Listeners[0].Listen != "0.0.0.0:5061" || tls.Listeners[0].Transport != "tls" {
		t.Fatalf("tls defaults %+v", tls.Listeners[0])
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	bad := Config{RegisterRate: -1, Listeners: []Listener{
		{Transport: "sctp", Listen: "0.0.0.0:5060"},
		{Listen: "nohost"},
		{Listen: "0.0.0.0:5062", Advertise: ":5062"},
		{Transport: "tls", Listen: "0.0.0.0:5061"},
		{Listen: "0.0.0.0:5063", Cert: "c"},
		{Listen: "0.0.0.0:5064"}, {Listen: "0.0.0.0:5064"},
	}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`sip.listeners[0].transport: must be udp, tcp or tls, not "sctp"`,
		`sip.listeners[1].listen: "nohost" is not host:port`,
		`sip.listeners[2].advertise: ":5062" has no host`,
		`sip.listeners[3]: tls needs cert and key`,
		`sip.listeners[4]: cert and key only apply to tls`,
		`sip.listeners[6].listen: udp 0.0.0.0:5064 is listed twice`,
		`sip.register_rate: must not be negative`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

func TestLimitsDefaultsAndValidation(t *testing.T) {
	d := Config{}.WithDefaults().Limits
	want := Limits{PeerRate: 5000, PeerBurst: 10000, LineInviteRate: 5, LineInviteBurst: 10, StrangerRate: 5, StrangerBurst: 10, RetryAfter: 5 * time.Second}
	if d != want {
		t.Fatalf("defaults %+v, want %+v", d, want)
	}
	if off := (Config{Limits: Limits{PeerRate: -1}}).WithDefaults().Limits; off.PeerRate != -1 || off.PeerBurst != 0 {
		t.Fatalf("a negative rate turns the limit off: %+v", off)
	}
	if small := (Config{Limits: Limits{StrangerRate: 0.1}}).WithDefaults().Limits; small.StrangerBurst != 1 {
		t.Fatalf("burst of a small rate: %+v", small)
	}
	err := Config{Limits: Limits{PeerBurst: -1, LineInviteBurst: -2, StrangerBurst: -3, RetryAfter: 1500 * time.Millisecond}}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"sip.limits.peer_burst: must not be negative",
		"sip.limits.line_invite_burst: must not be negative",
		"sip.limits.stranger_burst: must not be negative",
		"sip.limits.retry_after: must be whole seconds, at least 1s, not 1.5s",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

func TestSocketBufferDefaultsAndValidation(t *testing.T) {
	if d := (Config{}).WithDefaults(); d.SocketBuffer != DefaultSocketBuffer {
		t.Errorf("default socket_buffer %d, want %d", d.SocketBuffer, DefaultSocketBuffer)
	}
	for _, ok := range []int{-1, MinSocketBuffer, 8 << 20, MaxSocketBuffer} {
		if err := (Config{SocketBuffer: ok}).Validate(); err != nil {
			t.Errorf("socket_buffer %d: %v", ok, err)
		}
	}
	for _, bad := range []int{-2, 1, MinSocketBuffer - 1, MaxSocketBuffer + 1} {
		err := (Config{SocketBuffer: bad}).Validate()
		if err == nil || !strings.Contains(err.Error(), "sip.socket_buffer: must be -1") {
			t.Errorf("socket_buffer %d: %v", bad, err)
		}
	}
}
