package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
)

// Cluster is the `cluster:` section: several mgsip nodes sharing the
// gateways of one file through etcd (docs/cluster.md). Without endpoints
// mgsip runs alone.
type Cluster struct {
	// Endpoints are etcd's client URLs (http://host:port, https://...).
	Endpoints []string `yaml:"endpoints"`
	// Node is this node's name, unique in the cluster (default: the host
	// name). One file serves every node, so it is usually ${MGSIP_NODE}.
	Node string `yaml:"node"`
	// MGCPAddress is the host:port gateways reach this node's call agent
	// at: it goes into N: (the notified entity) and other nodes name it
	// in a 521. Required.
	MGCPAddress string `yaml:"mgcp_address"`
	// SIPAddress is the node's SIP host:port (its Contact), for status.
	SIPAddress string `yaml:"sip_address"`
	// LeaseTTL is the node lease's TTL (default 5s, whole seconds, 1s to
	// 30s): a dead node's gateways move after about this long.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Prefix of the keys in etcd (default /mgsip/).
	Prefix string `yaml:"prefix"`
	// Username and Password for etcd's authentication (both or neither).
	Username string         `yaml:"username"`
	Password mapping.Secret `yaml:"password"`
	// TLS to etcd: CA to check its certificate, Cert and Key to present
	// a client certificate (PEM files).
	TLS ClusterTLS `yaml:"tls"`
	// Preference lists, per gateway name, the nodes that should own it,
	// best first; other gateways are spread by rendezvous hashing.
	Preference map[string][]string `yaml:"preference"`
}

// ClusterTLS is cluster.tls.
type ClusterTLS struct {
	CA         string `yaml:"ca"`
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	ServerName string `yaml:"server_name"`
}

// Enabled says whether the section configures a cluster.
func (c Cluster) Enabled() bool { return len(c.Endpoints) > 0 }

// NotifiedEntity is what the node puts in N: ("mgsip@" + MGCPAddress).
func (c Cluster) NotifiedEntity() string { return "mgsip@" + c.MGCPAddress }

func (c Cluster) isZero() bool {
	return len(c.Endpoints) == 0 && c.Node == "" && c.MGCPAddress == "" && c.SIPAddress == "" && c.LeaseTTL == 0 &&
		c.Prefix == "" && c.Username == "" && c.Password == "" && c.TLS == (ClusterTLS{}) && len(c.Preference) == 0
}

// checkCluster validates and completes the section (environment variables
// in node, addresses and password; the host name as default node name).
func checkCluster(c *Cluster, gateways []mapping.Gateway, add func(path, reason string), lookupEnv func(string) (string, bool)) {
	if c.isZero() {
		return
	}
	expand := func(key string, s *string) {
		v, err := mapping.ExpandEnv(*s, lookupEnv)
		if err != nil {
			add("cluster."+key, err.Error())
			*s = ""
			return
		}
		*s = v
	}
	expand("node", &c.Node)
	expand("mgcp_address", &c.MGCPAddress)
	expand("sip_address", &c.SIPAddress)
	pw := string(c.Password)
	expand("password", &pw)
	c.Password = mapping.Secret(pw)

	if len(c.Endpoints) == 0 {
		add("cluster.endpoints", "required when a cluster section is given (etcd's client URLs)")
	}
	for i, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || u.Path != "" && u.Path != "/" {
			add(fmt.Sprintf("cluster.endpoints[%d]", i), fmt.Sprintf("%q is not http://host:port or https://host:port", e))
		}
	}
	if c.Node == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node = h
		}
	}
	if c.Node == "" {
		add("cluster.node", "required (no host name to default to)")
	} else if strings.ContainsAny(c.Node, "/ \t\r\n") {
		add("cluster.node", fmt.Sprintf("%q must not contain '/' or white space", c.Node))
	}
	checkAddr := func(key, v string, required bool) {
		if v == "" {
			if required {
				add("cluster."+key, "required: the host:port gateways reach this node at (it goes into N:)")
			}
			return
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil || host == "" || port == "" || port == "0" {
			add("cluster."+key, fmt.Sprintf("%q is not host:port", v))
			return
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			add("cluster."+key, fmt.Sprintf("%q is not an address others can reach (advertise the node's own address)", v))
		}
	}
	checkAddr("mgcp_address", c.MGCPAddress, true)
	checkAddr("sip_address", c.SIPAddress, false)
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.LeaseTTL < time.Second || c.LeaseTTL > 30*time.Second || c.LeaseTTL%time.Second != 0 {
		add("cluster.lease_ttl", fmt.Sprintf("%v must be whole seconds from 1s to 30s (default 5s)", c.LeaseTTL))
	}
	if c.Prefix == "" {
		c.Prefix = "/mgsip/"
	}
	if !strings.HasPrefix(c.Prefix, "/") {
		add("cluster.prefix", fmt.Sprintf("%q must start with '/'", c.Prefix))
	}
	if (c.Username == "") != (c.Password == "") {
		add("cluster.username", "username and password go together")
	}
	t := c.TLS
	if (t.Cert == "") != (t.Key == "") {
		add("cluster.tls", "cert and key go together")
	}
	for key, f := range map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			add("cluster.tls."+key, fmt.Sprintf("cannot read %s: %v", f, err))
		}
	}
	if t != (ClusterTLS{}) {
		for i, e := range c.Endpoints {
			if strings.HasPrefix(e, "http://") {
				add(fmt.Sprintf("cluster.endpoints[%d]", i), fmt.Sprintf("%q is plain http although cluster.tls is set", e))
			}
		}
	}
	names := map[string]bool{}
	for _, g := range gateways {
		names[g.Name] = true
	}
	gws := make([]string, 0, len(c.Preference))
	for g := range c.Preference {
		gws = append(gws, g)
	}
	slices.Sort(gws)
	for _, g := range gws {
		if !names[g] {
			add("cluster.preference."+g, "no such gateway")
		}
		for i, n := range c.Preference[g] {
			if n == "" || strings.ContainsAny(n, "/ \t\r\n") {
				add(fmt.Sprintf("cluster.preference.%s[%d]", g, i), fmt.Sprintf("%q is not a node name", n))
			}
		}
	}
}
