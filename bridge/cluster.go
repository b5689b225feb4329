package bridge

import "github.com/mgsip/mgsip/mapping"

// Several mgsip nodes on etcd (docs/cluster.md): Config.Owns says which
// gateways this node drives, and GatewayOwned tells the bridge when that
// changes. The bridge itself knows nothing of etcd.

// owns says whether this node drives gw (always, without Config.Owns).
func (b *Bridge) owns(gw *mapping.GatewayRule) bool { return b.cfg.Owns == nil || b.cfg.Owns(gw) }

// GatewayOwned tells the bridge that this node acquired (owned) or lost a
// gateway. Acquired: its idle lines are audited and armed (their requests
// carry this node's N:) and registered, as at start; GatewayAcquired does
// the same and keeps the calls the previous owner stored. Lost: its
// lines' registrations are removed, so that the new owner's Contact is
// the one the PBX keeps, and their calls are forgotten without a BYE or
// a DLCX: the new owner keeps them (takeover.go). Config.Owns already
// says no, so no keepalive or new line start goes to the gateway (the
// daemon also drops this node's commands to it at the socket). It waits
// only for room in the lines' input queues (never for the network), so
// that what it queues is in order with a GatewayAcquired that follows.
func (b *Bridge) GatewayOwned(name string, owned bool) {
	if owned {
		b.GatewayAcquired(name, nil)
		return
	}
	gw := b.cfg.Rules.Load().Gateway(name)
	if gw == nil {
		return
	}
	b.mu.Lock()
	running := b.ctx != nil
	b.mu.Unlock()
	if !running {
		return
	}
	lines := b.linesOf(gw)
	for _, l := range lines {
		if b.regs != nil {
			b.regs.Remove(l.rule.ID)
		}
	}
	b.lost(lines, name)
}
