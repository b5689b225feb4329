package bridge

import "github.com/mgsip/mgsip/mapping"

// Several mgsip nodes on etcd (docs/cluster.md): Config.Owns says which
// gateways this node drives, and GatewayOwned tells the bridge when that
// changes. The bridge itself knows nothing of etcd.

// owns says whether this node drives gw (always, without Config.Owns).
func (b *Bridge) owns(gw *mapping.GatewayRule) bool { return b.cfg.Owns == nil || b.cfg.Owns(gw) }

// GatewayOwned tells the bridge that this node acquired (owned) or lost a
// gateway. Acquired: its idle lines are audited and armed (their requests
// carry this node's N:) and registered, as at start. Lost: its lines'
// registrations are removed, so that the new owner's Contact is the one
// the PBX keeps; Config.Owns already says no, so no keepalive or new
// line start goes to the gateway (the daemon also drops this node's
// commands to it at the socket). Calls in progress on a lost gateway are
// not taken over yet (docs/cluster.md, "Not built yet"). It does not
// block.
func (b *Bridge) GatewayOwned(name string, owned bool) {
	gw := b.cfg.Rules.Load().Gateway(name)
	if gw == nil {
		return
	}
	b.mu.Lock()
	running := b.ctx != nil
	b.mu.Unlock()
	if !running {
		return // Run consults Config.Owns when it starts the lines
	}
	for _, l := range b.linesOf(gw) {
		if !owned {
			if b.regs != nil {
				b.regs.Remove(l.rule.ID)
			}
			continue
		}
		l.post(func() {
			if l.call == nil && l.other == nil {
				l.begin()
			}
		})
		if b.regs != nil && b.cfg.Register && l.rule.Peer != nil && l.rule.Peer.Register {
			b.regs.Add(l.account())
		}
	}
}
