package mgcp

import (
	"errors"
	"fmt"
	"time"
)

// Default ports (RFC 3435 §3.5).
const (
	DefaultGatewayPort   = 2427
	DefaultCallAgentPort = 2727
)

// Config holds the transaction-layer settings of a CallAgent. Zero fields
// take the defaults of RFC 3435 §3.5 listed beside them.
type Config struct {
	// ListenAddr is the UDP address Listen binds (default ":2727").
	ListenAddr string `yaml:"listen"`
	// DefaultPort is used when Do is given a host without a port (2427).
	DefaultPort int `yaml:"gateway_port"`

	// InitialRTO is the first retransmission timeout before any round
	// trip was measured (200ms, §3.5.3).
	InitialRTO time.Duration `yaml:"initial_rto"`
	// MinRTO and MaxRTO clamp the timeout computed from measured round
	// trips and its exponential backoff (50ms; 4s, §3.5.3).
	MinRTO time.Duration `yaml:"min_rto"`
	MaxRTO time.Duration `yaml:"max_rto"`
	// TMax bounds the total time a command is retransmitted (20s, §3.5.3).
	TMax time.Duration `yaml:"t_max"`
	// Max1 retransmissions trigger a new name lookup of the peer; after
	// Max2 the transaction fails with ErrTimeout and the peer is marked
	// disconnected (5 and 7, §4.3).
	Max1 int `yaml:"max1"`
	Max2 int `yaml:"max2"`
	// THist is how long responses to received commands are kept to
	// answer retransmissions (30s, §3.5.2).
	THist time.Duration `yaml:"t_hist"`
	// ProvisionalAfter is how long a handler may run before a provisional
	// "100" is sent (100ms: half the peer's initial retransmission timer,
	// so the 100 normally arrives before the peer repeats the command).
	ProvisionalAfter time.Duration `yaml:"provisional_after"`
	// ProvisionalWait is how long Do waits for the final response once a
	// provisional one arrived (default THist).
	ProvisionalWait time.Duration `yaml:"provisional_wait"`

	// MaxDatagram is the largest datagram sent (4000 bytes, §3.5.5).
	MaxDatagram int `yaml:"max_datagram"`
	// MaxPending caps outstanding outgoing transactions (100000).
	MaxPending int `yaml:"max_pending"`
	// MaxInFlight caps incoming commands executing at once; more are
	// answered 409 (10000).
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxCachedPerPeer caps the response cache of one peer (4096).
	MaxCachedPerPeer int `yaml:"max_cached_per_peer"`
	// MaxPeers caps the number of peers tracked (65536).
	MaxPeers int `yaml:"max_peers"`

	// The transaction window of each peer (window.go): how many commands
	// may be outstanding to one gateway at once. It starts at
	// WindowInitial (16), grows while the gateway answers without
	// retransmissions up to WindowMax (256) and shrinks, down to
	// WindowMin (1), when it does not. WindowQueue (100000) commands may
	// wait for a slot; more fail with ErrQueueFull.
	WindowInitial int `yaml:"window_initial"`
	WindowMin     int `yaml:"window_min"`
	WindowMax     int `yaml:"window_max"`
	WindowQueue   int `yaml:"window_queue"`

	// SocketBuffer is the receive and send buffer, in bytes, asked of the
	// kernel for the UDP socket (DefaultSocketBuffer, 4 MiB; -1 keeps the
	// kernel's default). Linux grants at most net.core.rmem_max and
	// wmem_max.
	SocketBuffer int `yaml:"socket_buffer"`

	// Trace logs every datagram sent and received at info level.
	Trace bool `yaml:"trace"`
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = fmt.Sprintf(":%d", DefaultCallAgentPort)
	}
	defi(&c.DefaultPort, DefaultGatewayPort)
	def(&c.InitialRTO, 200*time.Millisecond)
	def(&c.MinRTO, 50*time.Millisecond)
	def(&c.MaxRTO, 4*time.Second)
	def(&c.TMax, 20*time.Second)
	defi(&c.Max1, 5)
	defi(&c.Max2, 7)
	def(&c.THist, 30*time.Second)
	def(&c.ProvisionalAfter, 100*time.Millisecond)
	def(&c.ProvisionalWait, c.THist)
	defi(&c.MaxDatagram, 4000)
	defi(&c.MaxPending, 100000)
	defi(&c.MaxInFlight, 10000)
	defi(&c.MaxCachedPerPeer, 4096)
	defi(&c.MaxPeers, 65536)
	defi(&c.WindowMin, 1)
	defi(&c.WindowMax, 256)
	defi(&c.WindowInitial, min(16, c.WindowMax))
	defi(&c.WindowQueue, 100000)
	defi(&c.SocketBuffer, DefaultSocketBuffer)
	return c
}

// Validate reports every inconsistent setting at once.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("mgcp.%s: %s", key, why)) }
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"initial_rto", c.InitialRTO}, {"min_rto", c.MinRTO}, {"max_rto", c.MaxRTO}, {"t_max", c.TMax},
		{"t_hist", c.THist}, {"provisional_after", c.ProvisionalAfter}, {"provisional_wait", c.ProvisionalWait}} {
		if d.v < 0 {
			bad(d.key, "must not be negative")
		}
	}
	if c.MinRTO > c.MaxRTO {
		bad("min_rto", "must not exceed max_rto")
	}
	if c.InitialRTO > c.MaxRTO {
		bad("initial_rto", "must not exceed max_rto")
	}
	if c.THist < c.TMax {
		bad("t_hist", "must be at least t_max (RFC 3435 §3.5.2)")
	}
	if c.Max1 < 0 || c.Max2 < 1 || c.Max1 > c.Max2 {
		bad("max1", "need 0 <= max1 <= max2 and max2 >= 1")
	}
	if c.MaxDatagram < 512 || c.MaxDatagram > 65507 {
		bad("max_datagram", "must be between 512 and 65507")
	}
	if c.DefaultPort < 1 || c.DefaultPort > 65535 {
		bad("gateway_port", "must be a UDP port")
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"max_pending", c.MaxPending}, {"max_in_flight", c.MaxInFlight}, {"max_cached_per_peer", c.MaxCachedPerPeer}, {"max_peers", c.MaxPeers},
		{"window_initial", c.WindowInitial}, {"window_min", c.WindowMin}, {"window_max", c.WindowMax}, {"window_queue", c.WindowQueue}} {
		if n.v < 1 {
			bad(n.key, "must be positive")
		}
	}
	if c.SocketBuffer != -1 && (c.SocketBuffer < MinSocketBuffer || c.SocketBuffer > MaxSocketBuffer) {
		bad("socket_buffer", fmt.Sprintf("must be -1 (the kernel's default) or between %d and %d bytes, not %d", MinSocketBuffer, MaxSocketBuffer, c.SocketBuffer))
	}
	if c.WindowMin > c.WindowMax || c.WindowInitial < c.WindowMin || c.WindowInitial > c.WindowMax {
		bad("window_initial", "need window_min <= window_initial <= window_max")
	}
	return errors.Join(errs...)
}
