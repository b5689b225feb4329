package bridge

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/sirupsen/logrus"
)

// Gateway health: consecutive MGCP timeouts (each one already the end of
// RFC 3435 §3.5.3's retransmissions) mark a gateway down; its lines are
// unregistered and incoming calls for them get 480. An AUEP keepalive
// runs every gateway's keepalive interval while it is idle, and every
// min(keepalive, 10 s) while it is down; the first answer brings it back:
// its lines are audited, re-armed and registered again.

// downAfter is how many timeouts in a row mark a gateway down. Each is
// already the end of a command's retransmissions, so one is enough: a
// gateway that let a live command time out is not offered calls.
const downAfter = 1

type gatewayHealth struct {
	drained  bool // no new calls (admin drain/disable)
	down     bool
	timeouts int
	lastOK   time.Time
	probing  bool
}

// GatewayStatus reports a gateway's health.
type GatewayStatus struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	Down    bool      `json:"down"`
	Drained bool      `json:"drained"`
	LastOK  time.Time `json:"last_ok"`
}

// Gateways reports every configured gateway's health.
func (b *Bridge) Gateways() []GatewayStatus {
	rules := b.cfg.Rules.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []GatewayStatus
	for _, g := range rules.Gateways {
		h := b.health[g.Name]
		st := GatewayStatus{Name: g.Name, Address: b.gatewayAddrLocked(g)}
		if h != nil {
			st.Down, st.Drained, st.LastOK = h.down, h.drained, h.lastOK
		}
		out = append(out, st)
	}
	return out
}

func (b *Bridge) healthOf(gw *mapping.GatewayRule) *gatewayHealth {
	h := b.health[gw.Name]
	if h == nil {
		h = &gatewayHealth{lastOK: time.Now()}
		b.health[gw.Name] = h
	}
	return h
}

// gatewayDown reports whether a gateway is marked down.
func (b *Bridge) gatewayDown(gw *mapping.GatewayRule) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.health[gw.Name]
	return h != nil && h.down
}

// noteMGCP records the outcome of a command sent to a gateway.
func (b *Bridge) noteMGCP(gw *mapping.GatewayRule, err error) {
	b.mu.Lock()
	h := b.healthOf(gw)
	if !errors.Is(err, mgcp.ErrTimeout) {
		// Any answer, even an error code, proves the gateway is there.
		h.timeouts = 0
		h.lastOK = time.Now()
		b.mu.Unlock()
		return
	}
	h.timeouts++
	goingDown := h.timeouts >= downAfter && !h.down
	if goingDown {
		h.down = true
	}
	b.mu.Unlock()
	if goingDown {
		b.markDown(gw)
	}
}

// linesOf returns the lines and trunk channels of a gateway.
func (b *Bridge) linesOf(gw *mapping.GatewayRule) []*line {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*line
	for _, l := range b.lines {
		if l.rule.Gateway.Name == gw.Name {
			out = append(out, l)
		}
	}
	return out
}

func (b *Bridge) markDown(gw *mapping.GatewayRule) {
	b.log.WithField("gateway", gw.Name).Warn("gateway does not answer; marked down, its lines unregistered")
	if b.regs == nil {
		return
	}
	for _, l := range b.linesOf(gw) {
		if l.trunk == nil {
			b.regs.Remove(l.rule.ID)
		}
	}
}

func (b *Bridge) markUp(gw *mapping.GatewayRule) {
	b.log.WithField("gateway", gw.Name).Info("gateway answers again; re-auditing and re-arming its lines")
	for _, l := range b.linesOf(gw) {
		b.stormPost(l, l.onGatewayBack)
	}
}

// keepalive runs until ctx ends, probing gateways as described above.
func (b *Bridge) keepalive(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rules := b.cfg.Rules.Load()
		for _, gw := range rules.Gateways {
			interval := gw.Keepalive
			if interval <= 0 {
				continue
			}
			b.mu.Lock()
			h := b.healthOf(gw)
			wait := interval
			if h.down {
				wait = min(interval, 10*time.Second)
			}
			due := !h.probing && time.Since(h.lastOK) >= wait
			if due {
				h.probing = true
				h.lastOK = time.Now() // paces the next probe while this one runs
			}
			b.mu.Unlock()
			if due {
				go b.probe(ctx, gw)
			}
		}
	}
}

// probe audits one endpoint of the gateway (its first line or channel).
func (b *Bridge) probe(ctx context.Context, gw *mapping.GatewayRule) {
	defer func() {
		b.mu.Lock()
		b.healthOf(gw).probing = false
		b.mu.Unlock()
	}()
	if !b.owns(gw) {
		return // another node drives it
	}
	var ep mgcp.EndpointName
	for _, l := range b.linesOf(gw) {
		if ep.Local == "" || strings.Compare(l.ep.Local, ep.Local) < 0 {
			ep = l.ep
		}
	}
	if ep.Local == "" {
		return
	}
	wasDown := b.gatewayDown(gw)
	_, err := b.cfg.CallAgent.AuditEndpoint(ctx, b.gatewayAddr(gw), ep)
	if ctx.Err() != nil {
		return
	}
	b.noteMGCP(gw, err)
	if err != nil && errors.Is(err, mgcp.ErrTimeout) {
		b.log.WithFields(logrus.Fields{"gateway": gw.Name, "endpoint": ep.String()}).Debug("keepalive unanswered")
		return
	}
	if wasDown {
		b.mu.Lock()
		h := b.healthOf(gw)
		h.down = false
		b.mu.Unlock()
		b.markUp(gw)
	}
}
