package cluster

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is the cluster as etcd has it, plus this node's own view, for
// `mgsip cluster status`.
type Status struct {
	Self string `json:"self"`
	// Fenced: this node's lease renewal is overdue; it commands nothing.
	Fenced bool `json:"fenced"`
	// ValidFor is how long this node may still command its gateways
	// without another renewal.
	ValidFor time.Duration `json:"valid_for"`
	Draining bool          `json:"draining"`
	Nodes    []NodeStatus  `json:"nodes"`
	// Unowned lists the configured gateways nobody owns.
	Unowned []string `json:"unowned,omitempty"`
	// OrphanCalls counts stored calls of gateways nobody owns (waiting
	// for a takeover).
	OrphanCalls int `json:"orphan_calls,omitempty"`
	// InvalidCalls counts stored call records no takeover can use (the
	// next owner of their gateway deletes them); they are not in Calls or
	// OrphanCalls.
	InvalidCalls int `json:"invalid_calls,omitempty"`
	// Ignored lists the keys the nodes do not take as they stand: node
	// keys that do not decode or have no lease (no member), gateway keys
	// that do not decode or have no lease (a node frees them).
	Ignored []IgnoredKey `json:"ignored,omitempty"`
}

// NodeStatus is one live node.
type NodeStatus struct {
	NodeInfo
	Lease int64 `json:"lease"`
	// TTL is what remains of the node's lease at etcd (-1: unknown).
	TTL      time.Duration `json:"ttl"`
	Gateways []string      `json:"gateways"`
	Calls    int           `json:"calls"`
}

// Status reads the cluster's state from etcd.
func (n *Node) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout()+n.cfg.DialTimeout)
	defer cancel()
	resp, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(n.cfg.Prefix+"nodes/", clientv3.WithPrefix()),
		clientv3.OpGet(n.cfg.Prefix+"gateways/", clientv3.WithPrefix()),
		clientv3.OpGet(n.cfg.Prefix+"calls/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return Status{}, fmt.Errorf("cluster: status: %w", err)
	}
	nodes, owners, ignored := n.parseSnapshot(resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs)
	calls := map[string]int{}
	invalid := 0
	callsPrefix := n.cfg.Prefix + "calls/"
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		rest := strings.TrimPrefix(string(kv.Key), callsPrefix)
		gw, _, _ := strings.Cut(rest, "/")
		g, err := url.PathUnescape(gw)
		if err != nil {
			invalid++
			continue
		}
		if _, bad := n.checkStored(g, string(kv.Key), kv.Value); bad != nil {
			invalid++
			continue
		}
		calls[g]++
	}

	n.mu.Lock()
	st := Status{Self: n.cfg.Name, Draining: n.draining, InvalidCalls: invalid, Ignored: ignored}
	now := time.Now()
	st.Fenced = n.lease != 0 && !now.Before(n.validUntil)
	if n.entitledLocked(now) {
		st.ValidFor = n.validUntil.Sub(now)
	}
	gateways := slices.Clone(n.gateways)
	n.mu.Unlock()

	byNode := map[string]*NodeStatus{}
	for name, info := range nodes {
		ns := &NodeStatus{NodeInfo: info, Lease: int64(info.lease), TTL: -1, Gateways: []string{}}
		if ns.Lease != 0 {
			if ttl, err := n.cli.TimeToLive(ctx, clientv3.LeaseID(ns.Lease)); err == nil && ttl.TTL >= 0 {
				ns.TTL = time.Duration(ttl.TTL) * time.Second
			}
		}
		byNode[name] = ns
	}
	for gw, o := range owners {
		if staleOwner(o, nodes, 0) {
			continue // listed in Ignored; a node frees it
		}
		ns, ok := byNode[o.Node]
		if !ok {
			// Owned under a lease whose node key is gone: show the owner
			// anyway, it is what gateways are driven by.
			ns = &NodeStatus{NodeInfo: NodeInfo{Name: o.Node}, Lease: int64(o.lease), TTL: -1, Gateways: []string{}}
			byNode[o.Node] = ns
		}
		ns.Gateways = append(ns.Gateways, gw)
		ns.Calls += calls[gw]
	}
	owned := func(gw string) bool { o, ok := owners[gw]; return ok && !staleOwner(o, nodes, 0) }
	for gw, c := range calls {
		if !owned(gw) {
			st.OrphanCalls += c
		}
	}
	for _, g := range gateways {
		if !owned(g) {
			st.Unowned = append(st.Unowned, g)
		}
	}
	for _, ns := range byNode {
		slices.Sort(ns.Gateways)
		st.Nodes = append(st.Nodes, *ns)
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}
