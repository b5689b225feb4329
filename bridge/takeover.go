package bridge

// Takeover (docs/cluster.md, "Takeover, step by step"): a node that
// acquires a gateway from another node keeps the calls the other node
// stored. Each line with a stored call audits its endpoint, keeps the
// connection the call names and deletes the others, rebuilds the call
// around the restored SIP dialog, sends the gateway a request carrying
// this node's N:, and the far end a target refresh carrying this node's
// Contact. A stored call whose connection is gone is ended towards the far
// end (BYE with a Q.850 reason).

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/pion/sdp/v3"
	"github.com/sirupsen/logrus"
)

// reasonTakeoverLost is the Reason of the BYE for a stored call that
// could not be kept (RFC 3326; Q.850 cause 41, temporary failure).
const reasonTakeoverLost = `Q.850;cause=41;text="call lost when another mgsip node took the gateway over"`

// GatewayAcquired is GatewayOwned(name, true) for a gateway this node
// took over with the calls its previous owner stored (the daemon loads
// them from the cluster's store). Lines with a stored call keep it; the
// others are audited and armed as at start. All lines are registered with
// this node's Contact at once. It waits only for room in the lines' input
// queues (never for the network).
func (b *Bridge) GatewayAcquired(name string, calls []StoredCall) {
	gw := b.cfg.Rules.Load().Gateway(name)
	if gw == nil {
		return
	}
	b.mu.Lock()
	running := b.ctx != nil
	if !running && len(calls) > 0 {
		// Run consults Config.Owns when it starts the lines, and keeps
		// these calls then.
		if b.pending == nil {
			b.pending = map[string][]StoredCall{}
		}
		b.pending[name] = calls
	}
	b.mu.Unlock()
	if !running {
		return
	}
	byEndpoint := map[string][]StoredCall{}
	for _, c := range calls {
		if c.Gateway == name {
			k := strings.ToLower(c.Endpoint)
			byEndpoint[k] = append(byEndpoint[k], c)
		}
	}
	for _, l := range b.linesOf(gw) {
		stored := byEndpoint[strings.ToLower(l.ep.Local)]
		delete(byEndpoint, strings.ToLower(l.ep.Local))
		f := func() {
			if l.call != nil || l.other != nil {
				// The line still has calls of its own: those stay, and
				// stored calls that are not among them are stale.
				var stale []StoredCall
				for _, sc := range stored {
					if !l.hasCall(sc.CallID) {
						stale = append(stale, sc)
					}
				}
				l.dropStored(stale, "the line has other calls")
				return
			}
			if len(stored) == 0 {
				l.begin()
				return
			}
			l.takeOver(stored)
		}
		// In order with what GatewayOwned(name, false) queued before.
		l.postWait(f)
		if b.regs != nil && b.cfg.Register && l.rule.Peer != nil && l.rule.Peer.Register {
			// Registers now, with this node's Contact.
			b.regs.Add(l.account())
		}
	}
	for _, stored := range byEndpoint {
		b.endUnserved(gw, stored)
	}
}

// endUnserved ends stored calls of an endpoint no line of this node
// serves (this node's configuration lacks the line, or it changed): nobody
// can keep them, but the far end still has the dialog and the gateway the
// connection (the endpoint exists there even when it is not configured
// here). Each call gets what a call not kept gets in a takeover: a BYE on
// its restored dialog with Reason Q.850 cause 41 (RFC 3326), a DLCX of its
// connection (RFC 3435 §2.3.8), its state deleted and a call record. It
// does not wait for the network.
func (b *Bridge) endUnserved(gw *mapping.GatewayRule, stored []StoredCall) {
	for _, sc := range stored {
		log := b.log.WithFields(logrus.Fields{"gateway": gw.Name, "endpoint": sc.Endpoint, "call": sc.CallID,
			"sip_call_id": sc.Dialog.CallID, "connection": sc.ConnectionID})
		log.Warn("stored call of an endpoint without a line: ending it (BYE to the far end, DLCX to the gateway)")
		if b.persist != nil {
			b.persist.remove(sc.Gateway, sc.Endpoint, sc.CallID, true)
		}
		ep := mgcp.EndpointName{Local: sc.Endpoint, Domain: gw.Domain}
		if sc.ConnectionID != "" {
			b.sends.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := b.cfg.CallAgent.DeleteConnection(ctx, b.gatewayAddr(gw), ep,
					mgcp.Parameters{CallID: sc.CallID, ConnectionID: sc.ConnectionID})
				b.noteMGCP(gw, err)
				if err != nil && !isCode(err, mgcp.CodeIncorrectConnectionID) {
					log.WithError(err).Warn("connection of a stored call without a line not deleted")
				}
			})
		}
		if b.cfg.SIP != nil {
			if d, err := b.cfg.SIP.RestoreDialog(sc.Dialog); err != nil {
				log.WithError(err).Warn("dialog of a stored call without a line cannot be restored: no BYE")
			} else {
				b.sends.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = d.ByeWithReason(ctx, reasonTakeoverLost)
				})
			}
		}
		b.record(CallRecord{Line: sc.Line, Direction: sc.Direction, Number: sc.Number, SIPCallID: sc.Dialog.CallID,
			MGCPCall: sc.CallID, Answered: true, Result: "call lost in a takeover: no line for the endpoint", Start: sc.Start,
			Answer: sc.Answered, End: time.Now(), Gateway: gw.Name, Endpoint: ep.String(),
			ConnectionID: sc.ConnectionID, SIPStatus: 200, ByeReason: reasonTakeoverLost})
	}
}

// endPendingUnserved ends the stored calls GatewayAcquired left for Run
// that no line took when Run started the lines (their endpoints have no
// line here).
func (b *Bridge) endPendingUnserved() {
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	rules := b.cfg.Rules.Load()
	for name, stored := range pending {
		if gw := rules.Gateway(name); gw != nil && len(stored) > 0 && b.owns(gw) {
			b.endUnserved(gw, stored)
		}
	}
}

// hasCall reports whether the line has a call with MGCP call id id.
func (l *line) hasCall(id string) bool {
	for _, c := range []*call{l.call, l.other} {
		if c != nil && strings.EqualFold(c.id, id) {
			return true
		}
	}
	return false
}

// pendingCalls takes the stored calls GatewayAcquired left for Run for
// the line's endpoint.
func (b *Bridge) pendingCalls(l *line) []StoredCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out, rest []StoredCall
	for _, c := range b.pending[l.rule.Gateway.Name] {
		if strings.EqualFold(c.Endpoint, l.ep.Local) {
			out = append(out, c)
		} else {
			rest = append(rest, c)
		}
	}
	if len(out) > 0 {
		b.pending[l.rule.Gateway.Name] = rest
	}
	return out
}

// takeOver keeps the stored calls of the line's endpoint that the gateway
// still has (one: the line's active call; a second one, held or waiting,
// is ended).
func (l *line) takeOver(stored []StoredCall) {
	log := l.log.WithField("takeover", true)
	ctx, cancel := context.WithTimeout(l.ops, 30*time.Second)
	res, err := l.b.cfg.CallAgent.AuditEndpoint(ctx, l.gw(), l.ep, "I", "ES")
	cancel()
	l.b.noteMGCP(l.rule.Gateway, err)
	if err != nil {
		// Nothing can be kept without knowing what the gateway has: the
		// stored calls end, and the line is audited as after a restart.
		l.mgcpFailed(err, "takeover audit failed")
		l.dropStored(stored, "takeover audit failed")
		l.resynchronise(false)
		return
	}
	conns := res.ConnectionIDs()
	offHook := false
	for _, e := range res.EventStates {
		offHook = offHook || e.Is("L", "hd")
	}
	// The call to keep: the one talking (send-receive) first.
	slices.SortStableFunc(stored, func(a, b StoredCall) int {
		return boolRank(a.Mode == string(mgcp.ModeSendRecv)) - boolRank(b.Mode == string(mgcp.ModeSendRecv))
	})
	var keep *StoredCall
	var drop []StoredCall
	for i := range stored {
		sc := &stored[i]
		has := slices.ContainsFunc(conns, func(id string) bool { return strings.EqualFold(id, sc.ConnectionID) })
		if keep == nil && sc.ConnectionID != "" && (has || !l.rule.Gateway.Quirks.AuditConnection) {
			keep = sc
			continue
		}
		drop = append(drop, *sc)
	}
	for _, id := range conns {
		if keep == nil || !strings.EqualFold(id, keep.ConnectionID) {
			log.WithField("connection", id).Info("deleting a connection no stored call keeps")
			l.deleteStale(id)
		}
	}
	l.dropStored(drop, "no connection on the gateway")
	l.retries = 0
	l.armed, l.notified = "", false // the gateway holds the old owner's request
	l.offHook = offHook && l.trunk == nil
	if keep != nil && !l.rebuild(*keep) {
		keep = nil
	}
	if keep == nil {
		if l.offHook {
			l.playTone("L/ro")
			return
		}
		l.arm()
		return
	}
	if !l.offHook && l.trunk == nil {
		// Hung up while nobody drove the gateway: its NTFY went to the
		// dead node.
		l.onOnHook()
	}
}

func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

// rebuild makes sc the line's connected call: the dialog restored on this
// node's stack, an MDCX on the kept connection (with the line's request
// and this node's N: when the gateway takes embedded requests; otherwise
// the RQNT that follows the input carries it), then the target refresh.
// false: the call could not be kept (it is ended).
func (l *line) rebuild(sc StoredCall) bool {
	log := l.log.WithFields(logrus.Fields{"call": sc.CallID, "sip_call_id": sc.Dialog.CallID})
	if l.b.cfg.SIP == nil {
		l.dropStored([]StoredCall{sc}, "no SIP stack")
		return false
	}
	d, err := l.b.cfg.SIP.RestoreDialog(sc.Dialog)
	if err != nil {
		log.WithError(err).Warn("stored dialog cannot be restored; its connection is deleted")
		l.deleteStale(sc.ConnectionID)
		if l.b.persist != nil {
			l.b.persist.remove(sc.Gateway, sc.Endpoint, sc.CallID, true)
		}
		return false
	}
	c := &call{id: sc.CallID, connID: sc.ConnectionID, conn: sc.ConnectionID, gwSDP: sc.GatewaySDP, codecs: sc.Codecs,
		direction: sc.Direction, number: sc.Number, dialog: d, start: sc.Start, answered: sc.Answered,
		mode: mgcp.ConnectionMode(sc.Mode)}
	refresh, origin, err := nextVersion(sc.Dialog.LocalSDP)
	if err != nil {
		refresh, origin = nil, newOrigin()
	}
	c.origin = origin
	if c.start.IsZero() {
		c.start = time.Now()
	}
	if c.answered.IsZero() {
		c.answered = c.start
	}
	mode := c.mode
	if mode == "" {
		mode = mgcp.ModeSendRecv
	}
	l.adopt(c)
	l.state = stConnected
	l.forward(c)
	l.publishConns()
	if err := l.modifyConnection(c, mode, nil); err != nil {
		// 515: the connection went after the audit; anything else: the
		// gateway will not let us drive it. Either way the call ends
		// (DLCX for what is left, BYE with a Q.850 reason).
		log.WithError(err).Info("kept connection refused its MDCX; ending the call")
		if isCode(err, mgcp.CodeIncorrectConnectionID) {
			c.connID = ""
		}
		c.byeReason = reasonTakeoverLost
		c.result = "call lost in a takeover"
		l.endCall(c.result, false)
		return false
	}
	log.Info("call kept from the previous owner of the gateway")
	// RFC 3261 §12.2: the far end's next requests go to the Contact of
	// the target refresh. In order with the call's other requests, and
	// bounded like the call's own re-INVITEs (reinvite): by
	// reinviteTimeout and by the call's end, so that a far end that never
	// answers holds neither the BYE of a hang-up (queued behind it) nor
	// the bridge's shutdown, which waits for the call's sender.
	offers := c.offerCtx()
	l.inOrder(c, func() {
		ctx, cancel := context.WithTimeout(offers, reinviteTimeout)
		defer cancel()
		if err := d.TargetRefresh(ctx, refresh); err != nil {
			log.WithError(err).Warn("target refresh after the takeover failed")
		}
	})
	return true
}

func isCode(err error, code mgcp.ReturnCode) bool {
	var re *mgcp.ResponseError
	return errors.As(err, &re) && re.Response != nil && re.Response.Code == code
}

// dropStored ends stored calls this node cannot keep: a BYE with a Q.850
// reason to the far end of each (its dialog restored for that only), and
// the stored state deleted.
func (l *line) dropStored(stored []StoredCall, why string) {
	for _, sc := range stored {
		l.log.WithFields(logrus.Fields{"call": sc.CallID, "sip_call_id": sc.Dialog.CallID, "why": why}).Info("stored call not kept; hanging up its far end")
		if l.b.persist != nil {
			l.b.persist.remove(sc.Gateway, sc.Endpoint, sc.CallID, true)
		}
		if l.b.cfg.SIP == nil {
			continue
		}
		d, err := l.b.cfg.SIP.RestoreDialog(sc.Dialog)
		if err != nil {
			continue
		}
		l.b.sends.Add(1)
		go func() {
			defer l.b.sends.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = d.ByeWithReason(ctx, reasonTakeoverLost)
		}()
		l.b.record(CallRecord{Line: l.rule.ID, Direction: sc.Direction, Number: sc.Number, SIPCallID: sc.Dialog.CallID,
			MGCPCall: sc.CallID, Answered: true, Result: "call lost in a takeover: " + why, Start: sc.Start, Answer: sc.Answered,
			End: time.Now(), Gateway: l.rule.Gateway.Name, Endpoint: l.ep.String(), ConnectionID: sc.ConnectionID,
			SIPStatus: 200, ByeReason: reasonTakeoverLost})
	}
}

// nextVersion is sdpBody with its origin's version one higher (RFC 3264
// §8: a new offer in the session increments it; the media stay), and
// the origin to go on from.
func nextVersion(body []byte) ([]byte, Origin, error) {
	if len(body) == 0 {
		return nil, Origin{}, errors.New("bridge: no stored SDP")
	}
	var s sdp.SessionDescription
	if err := s.Unmarshal(body); err != nil {
		return nil, Origin{}, err
	}
	s.Origin.SessionVersion++
	out, err := s.Marshal()
	if err != nil {
		return nil, Origin{}, err
	}
	return out, Origin{SessionID: s.Origin.SessionID, Version: s.Origin.SessionVersion, last: out}, nil
}

// forgetCalls drops the line's calls without a word to the gateway or
// the far end: another node owns the gateway now and keeps them (it has
// their stored state). The line waits, unarmed, until the gateway is this
// node's again.
func (l *line) forgetCalls() {
	for _, c := range []*call{l.other, l.call} {
		if c == nil {
			continue
		}
		delete(l.persisted, c) // the new owner's now: not deleted
		c.connID = ""          // kept on the gateway: no DLCX
		if c.dialog != nil {
			c.dialog.Forget() // no BYE, no refresh
		}
		c.result = "moved to another mgsip node"
		l.endCallOf(c, c.result, true)
	}
	l.flush()
	l.stopTone()
	l.gen++
	l.state = stRestarting
	l.armed, l.notified = "", false
}

// lost tells the lines of a gateway this node lost to forget their calls
// (GatewayOwned(name, false)).
func (b *Bridge) lost(lines []*line, gateway string) {
	if b.persist != nil {
		b.persist.forget(gateway)
	}
	for _, l := range lines {
		// Waits for room in the line's queue, so that a GatewayAcquired
		// that follows comes after it.
		l.postWait(func() {
			if l.call != nil || l.other != nil {
				l.forgetCalls()
			}
		})
	}
}
