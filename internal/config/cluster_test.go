package config

import (
	"testing"
	"time"
)

func TestClusterSection(t *testing.T) {
	env := func(name string) (string, bool) {
		switch name {
		case "MGSIP_NODE":
			return "node-b", true
		case "NODE_IP":
			return "10.0.0.2", true
		case "ETCD_PASSWORD":
			return "pw", true
		}
		return "", false
	}
	conf := `cluster:
  endpoints: [http://10.0.0.5:2379, http://10.0.0.6:2379]
  node: ${MGSIP_NODE}
  mgcp_address: ${NODE_IP}:2727
  sip_address: ${NODE_IP}:5060
  username: mgsip
  password: ${ETCD_PASSWORD}
  preference:
    gw: [node-a, node-b]
gateways:
  - name: gw
    domain: gw.example
`
	cfg, err := Load("c.yaml", []byte(conf), env)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.File.Cluster
	if !c.Enabled() || c.Node != "node-b" || c.MGCPAddress != "10.0.0.2:2727" || c.SIPAddress != "10.0.0.2:5060" ||
		c.Password.Reveal() != "pw" || c.LeaseTTL != 5*time.Second || c.Prefix != "/mgsip/" ||
		c.NotifiedEntity() != "mgsip@10.0.0.2:2727" || len(c.Preference["gw"]) != 2 {
		t.Fatalf("cluster section: %+v", c)
	}

	alone, err := Load("c.yaml", []byte("gateways:\n  - name: gw\n    domain: gw.example\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if alone.File.Cluster.Enabled() {
		t.Fatal("a file without a cluster section configures a cluster")
	}
}
