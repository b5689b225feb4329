package daemon

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/metrics"
	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/sirupsen/logrus"
)

// ClusterConfig turns the cluster section into the etcd node's
// configuration (without the daemon's callbacks), for the daemon and for
// `mgsip cluster status`.
func ClusterConfig(cfg *config.Loaded, log *logrus.Entry) (cluster.Config, error) {
	c := cfg.File.Cluster
	cc := cluster.Config{
		Name: c.Node, MGCPAddr: c.NotifiedEntity(), SIPAddr: c.SIPAddress,
		Endpoints: c.Endpoints, Username: c.Username, Password: c.Password.Reveal(),
		Prefix: c.Prefix, TTL: c.LeaseTTL, Preference: c.Preference, Log: log,
	}
	for _, g := range cfg.Rules.Gateways {
		cc.Gateways = append(cc.Gateways, g.Name)
	}
	if c.TLS != (config.ClusterTLS{}) {
		t := &tls.Config{ServerName: c.TLS.ServerName, MinVersion: tls.VersionTLS12}
		if c.TLS.CA != "" {
			pem, err := os.ReadFile(c.TLS.CA)
			if err != nil {
				return cc, fmt.Errorf("cluster.tls.ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cc, fmt.Errorf("cluster.tls.ca: no PEM certificate in %s", c.TLS.CA)
			}
			t.RootCAs = pool
		}
		if c.TLS.Cert != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
			if err != nil {
				return cc, fmt.Errorf("cluster.tls: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = t
	}
	return cc, nil
}

// newClusterNode joins the cluster the configuration describes, wired to
// the bridge: ownership changes start and stop the gateways' lines, and a
// gateway with a call is not handed over.
func (d *daemon) newClusterNode(cfg *config.Loaded) (*cluster.Node, error) {
	cc, err := ClusterConfig(cfg, d.log.WithField("component", "cluster"))
	if err != nil {
		return nil, err
	}
	cc.Idle = d.gatewayIdle
	cc.OnChange = func(c cluster.Change) {
		d.log.WithFields(logrus.Fields{"gateway": c.Gateway, "owned": c.Owned, "reason": c.Reason}).Info("cluster: gateway ownership changed")
		d.ownershipChanged(c)
	}
	return cluster.New(cc)
}

// clusterState is what the cluster metrics report: the node's counters
// and lease, and the daemon's own (521s sent, commands fenced).
func (d *daemon) clusterState() metrics.ClusterState {
	st := d.node.Stats()
	return metrics.ClusterState{Changes: st.Changes, Owned: st.Owned, LeaseValid: st.LeaseValid, ValidFor: st.ValidFor,
		Fences: st.Fences, Redirects: d.redirected.Load(), FencedDrops: d.fencedDrops.Load(),
		CallWrites: st.CallWrites, CallWritesRefused: st.CallWritesRefused, CallWriteErrors: st.CallWriteErrors}
}

// gatewayIdle: no line of the gateway has a call.
func (d *daemon) gatewayIdle(gateway string) bool {
	if d.bridge == nil {
		return true
	}
	for _, st := range d.bridge.Lines() {
		if st.Gateway == gateway && st.Call != nil {
			return false
		}
	}
	return true
}

// owns says whether this node drives gw (always when alone).
func (d *daemon) owns(gw *mapping.GatewayRule) bool {
	return d.node == nil || d.node.Owns(gw.Name)
}

// redirect answers a command for a gateway another node owns with 521
// and N: naming the owner (RFC 3435 §2.3.8: the endpoint is redirected to
// another call agent, given in N:); nil when this node owns it or is
// alone. When no other owner is known (nobody holds the gateway yet, or
// this node is fenced and the gateway is between owners) the answer is
// 400, a transient error: the gateway tries again, and the next owner's
// first command gives it the new N:. A command from an address that is
// not the gateway's is left to the bridge, which refuses it without
// naming anyone.
func (d *daemon) redirect(c *mgcp.Command, trusted func(*mapping.GatewayRule) bool) *mgcp.Response {
	if d.node == nil {
		return nil
	}
	gw := d.rules.Load().GatewayByDomain(c.Endpoint.Domain)
	if gw == nil || d.node.Owns(gw.Name) || !trusted(gw) {
		return nil
	}
	o, ok := d.node.Owner(gw.Name)
	if !ok || o.MGCPAddr == "" || o.Name == d.node.Name() {
		return mgcp.NewResponse(c, mgcp.CodeTransientError)
	}
	r := mgcp.NewResponse(c, mgcp.CodeRedirected)
	r.NotifiedEntity = o.MGCPAddr
	d.redirected.Add(1)
	return r
}

// fencedConn drops the commands this node would send to a gateway it
// does not own: the last check before the wire, so that no line, probe,
// retransmission or operator action of a node that lost a gateway (or is
// fenced) reaches it. Responses pass (a 521 must go out).
type fencedConn struct {
	net.PacketConn
	rules   *mapping.Holder
	owns    func(*mapping.GatewayRule) bool
	dropped *atomic.Uint64
}

// errFenced is what a dropped command's write returns: the transaction
// fails at once instead of retransmitting into the void.
var errFenced = errors.New("cluster: this node does not own the gateway")

func (c fencedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if gw := commandGateway(p, c.rules.Load()); gw != nil && !c.owns(gw) {
		c.dropped.Add(1)
		return 0, errFenced
	}
	return c.PacketConn.WriteTo(p, addr)
}

// commandGateway returns the gateway a command datagram is for, or nil
// for a response or a datagram it cannot tell (RFC 3435 §3.2.1: the
// command line is "verb transaction-id endpoint MGCP version").
func commandGateway(p []byte, r *mapping.Rules) *mapping.GatewayRule {
	line, _, _ := bytes.Cut(p, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 3 || len(f[0]) != 4 || f[0][0] < 'A' || f[0][0] > 'Z' {
		return nil
	}
	ep := f[2]
	at := bytes.LastIndexByte(ep, '@')
	if at < 0 {
		return nil
	}
	return r.GatewayByDomain(string(ep[at+1:]))
}
