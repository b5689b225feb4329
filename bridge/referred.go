package bridge

// A REFER received for a line's call (RFC 3515): the PBX or the far end
// transfers the line to someone else. The REFER passes a gate first
// (referGate, on the SIP stack's goroutine, reading what the line
// published): a line that cannot be transferred now refuses it (603 with
// features.transfer off, 491 while a transfer of the line is already
// under way, 486 while it has a second call; a line not simply talking
// accepts and reports 486 in the final NOTIFY).
// Accepted (202 from the sip package; the gate queues the REFER for the
// line before the 202 goes out), the line sends NOTIFY 100, places a
// new INVITE from its own account to the Refer-To number, routed like a
// call the phone dialled, with the Replaces and Referred-By the REFER
// carried (RFC 3891 §3, RFC 3892), and reports its progress in NOTIFYs
// (sipfrag). While it is tried the old call goes on unchanged (the
// transferor may have held it, or hung up already: then the phone's
// connection waits for the new call). Answered, the phone's connection
// is moved to the new call with one MDCX (the new far end's SDP,
// send-receive), the transferor gets NOTIFY 200 and, if still there, a
// BYE. A failure is reported in a final NOTIFY and the old call goes on;
// if the transferor has hung up meanwhile, the phone hears reorder.

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// referPolicy is what a line publishes for the REFER gate: the dialogs
// of its calls and a refusal that does not depend on a moment's state
// (the feature, a second call, a transfer under way). Whether the line
// is talking is left to the line itself: a REFER right behind the ACK
// may come before the line published its answer.
type referPolicy struct {
	dialog *sip.Dialog // the active call's
	other  *sip.Dialog // the held or waiting call's
	status int         // 0: accepted
	reason string
}

// referRefusal says why the line cannot be transferred now (status 0:
// it can).
func (l *line) referRefusal() (int, string) {
	c := l.call
	switch {
	case !l.rule.Features.Transfer || l.trunk != nil:
		return 603, "Decline"
	case c != nil && c.xfer != nil:
		return 491, "Request Pending"
	case c == nil || (c.dialog == nil && c.peer == nil) || l.state != stConnected || l.other != nil || l.transfer.active:
		return 486, "Busy Here"
	}
	return 0, ""
}

// gateRefusal is referRefusal without the reasons that may be a moment
// old at the gate.
func (l *line) gateRefusal() (int, string) {
	c := l.call
	switch {
	case !l.rule.Features.Transfer || l.trunk != nil:
		return 603, "Decline"
	case c != nil && c.xfer != nil:
		return 491, "Request Pending"
	case l.other != nil || l.transfer.active:
		return 486, "Busy Here"
	}
	return 0, ""
}

// publishReferPolicy publishes the gate's answer for the active call.
func (l *line) publishReferPolicy() {
	p := &referPolicy{}
	if l.call != nil {
		p.dialog = l.call.dialog
	}
	if l.other != nil {
		p.other = l.other.dialog
	}
	p.status, p.reason = l.gateRefusal()
	l.referPolicy.Store(p)
}

// referGate answers a REFER before it is accepted (sip.ReferGate) and,
// accepting it, queues it for the line at once: a BYE the transferor
// sends right after the 202 then finds the transfer under way.
func (b *Bridge) referGate(d *sip.Dialog, e sip.Event) (int, string) {
	v, ok := b.dialogs.Load(d)
	if !ok {
		return 603, "Decline" // not a line's call (any more)
	}
	l := v.(*line)
	p := l.referPolicy.Load()
	switch {
	case p != nil && p.status == 603:
		return p.status, p.reason
	case p != nil && p.other == d && d != nil:
		return 486, "Busy Here" // the held or waiting call of the line
	case p != nil && p.dialog == d && p.status != 0:
		return p.status, p.reason
	}
	if !l.post(func() {
		switch {
		case l.call != nil && l.call.dialog == d && !l.call.ended:
			l.onReferred(l.call, e)
		case l.other != nil && l.other.dialog == d && !l.other.ended:
			l.notifyRefer(l.other, 100, "Trying")
			l.notifyRefer(l.other, 486, "Busy Here")
		}
	}) {
		return 503, "Service Unavailable"
	}
	return 0, ""
}

// notifyRefer reports the progress of the transfer c was asked for, in
// order with c's other in-dialog requests (the BYE comes after).
func (l *line) notifyRefer(c *call, status int, reason string) {
	if c.dialog == nil && c.peer != nil && !c.gone {
		// A transfer asked by the other line of a local call (localxfer.go).
		peer, id := c.peer, c.lid()
		peer.postWait(func() { peer.onLocalReferStatus(id, status, reason) })
		return
	}
	if c.dialog == nil || c.gone {
		return
	}
	d := c.dialog
	l.inOrder(c, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.NotifyRefer(ctx, status, reason); err != nil {
			l.log.WithError(err).Debug("NOTIFY of a transfer failed")
		}
	})
}

// onReferred: the far end of the active call c asks the line to call
// someone else (the REFER was accepted by the gate).
func (l *line) onReferred(c *call, e sip.Event) {
	l.notifyRefer(c, 100, "Trying") // RFC 3515 §2.4.4: the first NOTIFY, before any other
	if status, reason := l.referRefusal(); status != 0 {
		l.notifyRefer(c, status, reason) // the line changed since the gate
		return
	}
	number := l.rule.ToSIP.Apply(e.ReferToUser)
	rt := l.b.cfg.Rules.Load().RouteOutbound(number)
	log := l.log.WithFields(logrus.Fields{"number": number, "refer_to": e.ReferTo})
	switch {
	case e.ReferToUser != "" && rt != nil && rt.Local:
		l.referredLocal(c, number) // localxfer.go
		return
	case e.ReferToUser == "" || rt == nil || rt.Peer == nil || l.b.cfg.SIP == nil:
		log.Info("transfer target has no SIP route")
		l.notifyRefer(c, 404, "Not Found")
		return
	case l.b.peerDown(rt.Peer, l):
		l.notifyRefer(c, 503, "Service Unavailable")
		return
	}
	nc := &call{id: c.id, number: number, direction: "outgoing", start: time.Now(), origin: newOrigin(), peerRule: rt.Peer, xferOf: c}
	offer, err := ToSIP(c.gwSDP, &nc.origin, l.rule.Gateway.Codecs, SendRecv)
	if err != nil {
		l.notifyRefer(c, 488, "Not Acceptable Here")
		return
	}
	nc.codecs = offer.Codecs
	hdrs := map[string]string{}
	if e.Replaces != "" {
		hdrs["Replaces"] = e.Replaces // RFC 3891 §3: the target replaces that dialog with ours
	}
	if e.ReferredBy != "" {
		hdrs["Referred-By"] = e.ReferredBy // RFC 3892
	}
	ctx, cancel := context.WithCancel(l.ctx)
	nc.cancel = cancel
	d, err := l.b.cfg.SIP.Invite(ctx, sip.Call{From: l.account(), To: number, Peer: net.JoinHostPort(rt.Peer.Host, strconv.Itoa(rt.Peer.Port)),
		Transport: rt.Peer.Transport, SDP: offer.SDP, Headers: hdrs, PRACK: prackMode(rt.Peer)})
	if err != nil {
		cancel()
		log.WithError(err).Info("transfer INVITE failed")
		l.notifyRefer(c, 500, "Server Internal Error")
		return
	}
	log.Info("transferred by the far end; calling the target")
	nc.dialog = d
	c.xfer = nc
	l.forward(nc)
	if t := l.b.cfg.NoAnswerTimeout; t > 0 {
		l.at(t, func() {
			if c.xfer == nc && nc.answered.IsZero() {
				l.transferLegFailed(c, nc, 408, "Request Timeout", false)
			}
		})
	}
}

// onTransferLeg handles the events of the new call placed for a REFER.
func (l *line) onTransferLeg(nc *call, e sip.Event) {
	c := nc.xferOf
	if c == nil || c.xfer != nc {
		return
	}
	switch e.Kind {
	case sip.EventRinging:
		l.b.notePeer(nc.peerRule, true)
		l.notifyRefer(c, 180, "Ringing")
	case sip.EventAnswered:
		l.b.notePeer(nc.peerRule, true)
		tr, err := ToGateway(e.SDP, l.rule.Gateway.Codecs)
		if err != nil {
			nc.answered = time.Now() // so that it gets a BYE
			l.transferLegFailed(c, nc, 488, "Not Acceptable Here", false)
			return
		}
		// Move the phone's audio to the new call (RFC 3435 §2.3.6).
		if err := l.modifyConnection(c, tr.Mode, tr.SDP); err != nil {
			nc.answered = time.Now()
			l.transferLegFailed(c, nc, 500, "Server Internal Error", false)
			return
		}
		l.markAnswered(nc)
		nc.transfer = true
		nc.connID, nc.gwSDP, nc.conn = c.connID, c.gwSDP, c.conn
		c.connID = ""
		c.xfer, nc.xferOf = nil, nil
		l.notifyRefer(c, 200, "OK")
		c.result = "transferred by the far end to " + nc.number
		l.endCallOf(c, c.result, c.gone) // BYE after the NOTIFY; no DLCX: the connection is nc's now
		l.adopt(nc)
		l.state = stConnected
	case sip.EventFailed:
		if nc.dialog != nil && !nc.dialog.Inbound {
			l.b.notePeer(nc.peerRule, e.Status != 0 && e.Status != 408)
		}
		status := e.Status
		if status < 300 {
			status = 500
		}
		reason := e.Reason
		if reason == "" {
			reason = "Failed"
		}
		l.transferLegFailed(c, nc, status, reason, true)
	case sip.EventBye, sip.EventCancelled:
		l.transferLegFailed(c, nc, 487, "Request Terminated", true)
	}
}

// transferLegFailed: the new call of a REFER did not come up. The
// transferor hears why; the old call goes on, unless its far end has
// hung up meanwhile: then the phone hears reorder.
func (l *line) transferLegFailed(c, nc *call, status int, reason string, remoteEnded bool) {
	c.xfer, nc.xferOf = nil, nil
	nc.result = "transfer target: " + strconv.Itoa(status) + " " + reason
	l.endCallOf(nc, nc.result, remoteEnded)
	l.notifyRefer(c, status, reason)
	if c.gone && l.call == c {
		c.result = "far end hung up; transfer failed"
		l.endCall(c.result, true)
		if l.other != nil {
			l.afterActiveEnded(!l.offHook)
			return
		}
		l.settle("L/ro")
	}
}
