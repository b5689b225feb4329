package bridge

import (
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/sip"
)

// SIP peer reachability, as far as the bridge knows it: the daemon's
// OPTIONS probes report it (SetPeerReachable), an INVITE the peer never
// answered marks it down for PeerDownFor, any answer marks it up, and a
// line whose registration at that peer gets no answer counts it down for
// that line. A call to a peer known down goes to local fallback or
// congestion at once instead of waiting for SIP Timer B in silence.

type peerHealth struct {
	probedDown bool      // the last OPTIONS probe failed
	downUntil  time.Time // an INVITE went unanswered
}

// SetPeerReachable records the outcome of a probe of the named peer.
func (b *Bridge) SetPeerReachable(name string, up bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.peerHealthOf(name)
	h.probedDown = !up
	if up {
		h.downUntil = time.Time{}
	}
}

func (b *Bridge) peerHealthOf(name string) *peerHealth {
	h := b.peers[name]
	if h == nil {
		h = &peerHealth{}
		b.peers[name] = h
	}
	return h
}

// notePeer records what a call learnt of its peer.
func (b *Bridge) notePeer(p *mapping.PeerRule, up bool) {
	if p == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.peerHealthOf(p.Name)
	if up {
		h.downUntil = time.Time{}
	} else {
		h.downUntil = time.Now().Add(b.cfg.PeerDownFor)
	}
}

// peerDown reports whether calls from l to p should not wait for it.
func (b *Bridge) peerDown(p *mapping.PeerRule, l *line) bool {
	b.mu.Lock()
	h := b.peers[p.Name]
	down := h != nil && (h.probedDown || time.Now().Before(h.downUntil))
	b.mu.Unlock()
	if down {
		return true
	}
	if b.regs != nil && l.rule.Peer == p && p.Register && b.cfg.Register {
		if st, ok := b.regs.Status(l.rule.ID); ok && st.State == sip.RegRetrying && st.Code == 0 {
			return true // its REGISTERs go unanswered
		}
	}
	return false
}

// prackMode is a peer's use of reliable provisional responses (RFC 3262);
// a call with no known peer does not ask for them.
func prackMode(p *mapping.PeerRule) sip.PRACKMode {
	if p == nil {
		return sip.PRACKOff
	}
	m, _ := sip.ParsePRACKMode(p.PRACK) // checked when the rules were compiled
	return m
}
