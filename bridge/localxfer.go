package bridge

// Transfer and three-way calling from and to locally switched calls.
//
// A flash during an answered local call holds the other line's leg (the
// connection goes inactive; the other line has no SIP dialog to be told)
// and gives dial tone, as for a SIP call (transfer.go). The number dialled
// is called at once as a consultation: through the PBX when it routes
// there, or to the line that has it when it routes locally. A flash
// while talking to the consulted party joins the three on the gateway
// (threeway.go: both connections confrnce), whatever each leg is.
//
// Hanging up transfers the held party A to the consulted party C. mgsip
// is the B2BUA of every SIP leg here, so only SIP held and SIP consulted
// needs a REFER (transfer.go, with Replaces); the other combinations are
// done inside mgsip:
//
//   - A local, C local: the two other lines are linked to each other (each
//     connection modified with the other's description); C may still be
//     ringing (blind): its answer then connects it to A.
//   - one leg local, the other SIP (answered): the SIP leg, its dialog and
//     call state are handed over to the other line: that line's
//     connection gets the far end's description and a re-INVITE gives the
//     far end that connection's description (RFC 3264 §8: a new offer in
//     the dialog moves the media), so RTP flows between the gateway
//     endpoint and the far end; the dialog's events go to that line's
//     goroutine from then on (dialogRoute).
//   - A local, C SIP still ringing (blind): C is cancelled and A's line is
//     asked to call C's number from its own account, as if it had received
//     a REFER (referred.go); its progress comes back as referring status,
//     and a failure rings this phone back for A (transferFailed).
//   - A SIP, C local still ringing (blind): C is given up and A is REFERed
//     to C's number at the PBX, as for any blind transfer.
//
// A REFER received on a SIP call whose target routes locally (referred.go)
// calls that line; its answer moves the phone's connection to a local
// call with it (NOTIFY 200, then BYE), a busy line gives NOTIFY 486.
//
// The lines involved never wait for each other: each hand-over or link is
// a post, and a line that finds its leg gone when the post arrives ends
// what it was handed (BYE, or a hang-up post to the other line).

import (
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// lid is the id the other line knows a local leg by (the MGCP call id of
// its connection, unless the leg was created to take over another call's
// connection).
func (c *call) lid() string {
	if c.localID != "" {
		return c.localID
	}
	return c.id
}

// legByPeer finds the line's local leg whose other line names it id.
func (l *line) legByPeer(id string) *call {
	for _, c := range []*call{l.call, l.other} {
		if c != nil && !c.ended && c.peer != nil && c.peerID == id {
			return c
		}
	}
	return nil
}

// answeredLocal reports an answered local call a flash may hold.
func (c *call) answeredLocal() bool {
	return c != nil && c.peer != nil && c.xferOf == nil && !c.answered.IsZero()
}

// consultLocal calls a line of this mgsip as the consultation call; false
// when no other line has the number (the number is then a blind-transfer
// target, as before).
func (l *line) consultLocal(digits, number string) bool {
	callee := l.b.lineByUser(number)
	if callee == nil || callee == l {
		return false
	}
	l.transfer = transferState{}
	l.consult = true
	c := &call{id: l.b.newCallID(), number: number, dialled: digits, start: time.Now(), origin: newOrigin(), direction: "local"}
	l.localCall(c, number)
	return true
}

// transferLocal runs when the phone hangs up while consulting with at
// least one local leg (a: held, c: consulted); false when the case is
// the plain SIP one (transfer.go) or the line cannot transfer.
func (l *line) transferLocal() bool {
	a, c := l.other, l.call
	if !l.consulting() || (a.peer == nil && c.peer == nil) || !l.rule.Features.Transfer {
		return false
	}
	rang := c.answered.IsZero()
	switch {
	case a.peer != nil && c.peer != nil:
		l.relink(a, c)
	case a.peer != nil && c.dialog != nil && rang:
		// Blind: A's line calls C's number itself.
		c.result = "cancelled: the held call is transferred to it"
		l.endCall(c.result, false)
		l.consult = false
		l.referHeld(a, c.number, nil)
	case a.dialog != nil && c.peer != nil && rang:
		// Blind to a ringing local line: REFER A to its number.
		c.result = "given up: the held call is transferred to its number"
		l.endCall(c.result, false)
		l.consult = false
		l.referHeld(a, c.number, nil)
	case a.peer != nil && c.dialog != nil:
		l.handOrRing(c, a)
	case a.dialog != nil && c.peer != nil:
		l.handOrRing(a, c)
	default:
		return false
	}
	if l.call == nil && l.other == nil {
		l.arm()
	}
	return true
}

// relink connects the other lines of this line's two local legs to each
// other and ends both legs here (their connections are deleted). The
// link is made in a chain, so that no hang-up can overtake it: A's line
// learns its new other line first and tells C's line, which answers with
// its own description.
func (l *line) relink(a, c *call) {
	z, y := a.peer, c.peer
	aID, cID, cn, cname, an := a.lid(), c.lid(), c.number, c.name, a.number
	z.postWait(func() { z.relinkTo(aID, y, cID, cn, cname) })
	l.log.WithFields(logrus.Fields{"held": an, "to": cn}).Info("local transfer: the two lines linked")
	for _, x := range []*call{a, c} {
		x.peer = nil // they are told: no hang-up post
		x.transfer = true
	}
	a.result = "transferred locally to " + cn
	c.result = "transferred: connected to " + an
	l.consult = false
	l.endCallOf(a, a.result, false)
	l.endCallOf(c, c.result, false)
}

// relinkTo: the line that held this line's leg (named id) transferred it
// to the leg peerID of line peer.
func (l *line) relinkTo(id string, peer *line, peerID, number, name string) {
	c := l.legByPeer(id)
	if c == nil {
		// Hung up meanwhile (the hang-up went to the transferring line,
		// which had let go): peer's leg still names the transferor's id.
		peer.postWait(func() { peer.onLocalHangup(peerID) })
		return
	}
	c.peer, c.peerID, c.number, c.name, c.transfer = peer, peerID, number, name, true
	me, sdp, user, uname := c.lid(), c.gwSDP, l.rule.User, l.rule.DisplayName
	peer.postWait(func() { peer.relinked(peerID, l, me, sdp, user, uname) })
}

// relinked: the other end of a local transfer (relinkTo) names itself:
// this line's leg id now talks to leg peerID of line peer, whose
// connection description is sdp; this line answers with its own.
func (l *line) relinked(id string, peer *line, peerID string, sdp []byte, number, name string) {
	c := l.legByPeer(id)
	if c == nil {
		peer.postWait(func() { peer.onLocalHangup(id) })
		return
	}
	c.peer, c.peerID, c.number, c.name, c.transfer = peer, peerID, number, name, true
	me, mine := c.lid(), c.gwSDP
	peer.postWait(func() { peer.onLocalMedia(me, mine) })
	l.linkMedia(c, sdp)
}

// onLocalMedia: the other line of a relinked leg sent its description.
func (l *line) onLocalMedia(id string, sdp []byte) {
	if c := l.legByPeer(id); c != nil {
		l.linkMedia(c, sdp)
	}
}

// linkMedia points local leg c's connection at the other line's.
func (l *line) linkMedia(c *call, sdp []byte) {
	c.peerSDP = sdp
	tr, err := ToGateway(sdp, l.rule.Gateway.Codecs)
	if err == nil {
		err = l.modifyConnection(c, c.mode, tr.SDP)
	}
	if err != nil {
		l.endAndSettle(c, "transfer: "+err.Error())
	}
}

// endAndSettle ends call c of a transfer that could not be completed (a
// local leg: the other line hears the hang-up; a call taken over that
// could not move its media: BYE) and, when it was the active call, takes
// up the other call or plays reorder.
func (l *line) endAndSettle(c *call, why string) {
	active := c == l.call
	c.result = why
	l.endCallOf(c, why, false)
	if active {
		if l.other != nil {
			l.afterActiveEnded(!l.offHook)
			return
		}
		l.settle("L/ro")
	}
}

// handOrRing hands s over (handSIP) or, when it cannot be, ends the
// consultation and rings the phone again for the held party.
func (l *line) handOrRing(s, lc *call) {
	if !l.handSIP(s, lc) {
		l.endCall("hung up", false)
		l.afterActiveEnded(true)
	}
}

// handSIP hands the SIP leg s over to the other line of this line's local
// leg lc: that line takes the dialog and the call state, and both of this
// line's legs end here (connections deleted, no BYE, no hang-up post).
func (l *line) handSIP(s, lc *call) bool {
	to, r := lc.peer, s.route
	if r == nil || s.dialog == nil || s.xfer != nil || s.referring {
		return false
	}
	nc := &call{direction: s.direction, number: s.number, name: s.name, dialog: s.dialog, origin: s.origin, codecs: s.codecs,
		done: s.done, cancel: s.cancel, sipq: s.sipq, drained: s.drained, peerRule: s.peerRule, start: time.Now(),
		transfer: true, sipStatus: s.sipStatus, route: r, offers: s.offers, stopOffers: s.stopOffers}
	s.done, s.cancel, s.sipq, s.drained, s.offers, s.stopOffers = nil, nil, nil, nil, nil, nil
	s.handed, s.transfer, lc.transfer = true, true, true
	remote := s.dialog.RemoteSDP()
	id := lc.lid()
	to.postWait(func() { to.takeSIP(id, nc, remote) })
	r.handTo(to, nc) // behind the hand-over in the new owner's queue
	l.log.WithFields(logrus.Fields{"sip_party": s.number, "line": lc.number}).Info("transfer: SIP leg handed to the local line")
	lc.peer = nil
	s.result = "transferred locally to " + lc.number
	lc.result = "transferred: connected to " + s.number
	l.consult = false
	l.endCallOf(s, s.result, false)
	l.endCallOf(lc, lc.result, false)
	return true
}

// takeSIP: the line that talked to this one hands over a SIP leg: it
// replaces this line's local leg named id, on that leg's connection, in
// the leg's place: the active call (talking, or ringing the phone back
// for it), or the held one.
func (l *line) takeSIP(id string, nc *call, remote []byte) {
	lc := l.legByPeer(id)
	l.b.dialogs.Store(nc.dialog, l)
	active := lc != nil && lc == l.call && !lc.answered.IsZero() &&
		(l.state == stConnected || (l.state == stRinging && lc.recall))
	held := lc != nil && lc == l.other && !lc.referring && !lc.answered.IsZero()
	if lc == nil || lc.connID == "" || (!active && !held) {
		// The party of this line hung up meanwhile, or its leg is in no
		// state to take a call (still ringing, being transferred itself):
		// the far end hears a BYE; the leg, whose other line has let
		// go, ends as if that line hung up.
		nc.result = "transferred to a line that could not take it"
		l.endCallOf(nc, nc.result, false)
		if lc != nil {
			l.onLocalHangup(id)
		}
		return
	}
	nc.id, nc.connID, nc.gwSDP, nc.conn, nc.mode = lc.id, lc.connID, lc.gwSDP, lc.conn, lc.mode
	nc.recall, nc.waiting = lc.recall, lc.waiting
	lc.connID = ""
	lc.peer = nil
	lc.transfer = true
	lc.result = "transferred: now talking to " + nc.number
	state := l.state
	l.endCallOf(lc, lc.result, true)
	if held {
		l.other = nc
		l.count(nc)
	} else {
		l.adopt(nc)
		l.state = state
		if nc.recall {
			// The phone rings for the held party (its transfer failed):
			// it rings on for the call that took that party's place.
			nc.ring = append([]mgcp.Event{signal("L/rg")}, l.callerIDOf(nc)...)
			l.callAfter(nc, l.b.cfg.RingTimeout, func() {
				if l.state == stRinging && l.call == nc && nc.recall {
					l.failCall(nc, "no answer", "L/ro")
				}
			})
		}
	}
	nc.answered = time.Now() // answered long ago; this line's record of it starts now
	l.log.WithField("number", nc.number).Info("transfer: took over a SIP call")
	tr, err := ToGateway(remote, l.rule.Gateway.Codecs)
	if err == nil {
		err = l.modifyConnection(nc, nc.mode, tr.SDP)
	}
	if err != nil {
		l.endAndSettle(nc, "transfer: "+err.Error())
		return
	}
	dir := SendRecv
	if nc.mode == mgcp.ModeInactive {
		dir = SendOnly // held here: the far end stays on hold
	}
	l.moveMedia(nc, dir)
}

// moveMedia re-offers the gateway connection of c in its dialog (a
// re-INVITE) and applies the far end's answer; a refused offer leaves
// the far end sending to a connection that is gone, so the call ends.
func (l *line) moveMedia(c *call, dir Direction) {
	tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, dir)
	if err != nil {
		l.endAndSettle(c, err.Error())
		return
	}
	d := c.dialog
	l.reinvite(c, tr.SDP, func(ans []byte, err error) {
		l.postWait(func() {
			if c.ended || c.dialog != d {
				return
			}
			if err != nil {
				l.log.WithError(err).Info("re-INVITE after a transfer failed")
				l.endAndSettle(c, "re-INVITE after the transfer failed")
				return
			}
			if g, err := ToGateway(ans, l.rule.Gateway.Codecs); err == nil && len(ans) > 0 {
				_ = l.modifyConnection(c, c.mode, g.SDP)
			}
		})
	})
}

// referLocalHeld asks the line of the held local leg c to call number
// itself (a blind transfer of a local party to a SIP number): a REFER
// inside mgsip, answered with referring status posts.
func (l *line) referLocalHeld(c *call, to string) {
	c.referring, c.referTo, c.transfer = true, to, true
	c.referN++
	n := c.referN
	peer, id := c.peer, c.lid()
	peer.postWait(func() { peer.onLocalReferred(id, to) })
	l.arm()
	l.at(l.b.cfg.TransferTimeout, func() {
		if c.referring && c.referN == n {
			l.transferFailed(c, "no final status for the local transfer")
		}
	})
}

// onLocalReferred: the line this line talks to (and which holds it) asks
// it to call number, as a REFER would.
func (l *line) onLocalReferred(id, number string) {
	c := l.legByPeer(id)
	if c == nil {
		return // hung up meanwhile: the transferor hears it
	}
	if c != l.call {
		l.notifyRefer(c, 486, "Busy Here")
		return
	}
	l.onReferred(c, sip.Event{Kind: sip.EventRefer, ReferToUser: number, ReferTo: number})
}

// onLocalReferStatus: the progress of the transfer of this line's local
// leg named id (referLocalHeld).
func (l *line) onLocalReferStatus(id string, status int, reason string) {
	if c := l.legByPeer(id); c != nil {
		l.onReferStatus(c, status, reason, status >= 200)
	}
}

// referredLocal: a REFER received on call c names a number that routes to
// a line of this mgsip: that line is called; its answer moves the phone's
// connection to a local call with it.
func (l *line) referredLocal(c *call, number string) {
	callee := l.b.lineByUser(number)
	if callee == l {
		// Transferred to itself: the line is busy in this very call.
		l.log.WithField("number", number).Info("transfer target: the line's own number")
		l.notifyRefer(c, 486, "Busy Here (transfer to the line's own number)")
		return
	}
	if callee == nil {
		l.log.WithField("number", number).Info("transfer target: no local line with that number")
		l.notifyRefer(c, 404, "Not Found")
		return
	}
	offer := l.b.newCallID()
	nc := &call{id: c.id, localID: offer, number: number, direction: "local", start: time.Now(), peer: callee, peerID: offer,
		xferOf: c, transfer: true}
	c.xfer = nc
	sdp, user, name := c.gwSDP, l.rule.User, l.rule.DisplayName
	caller := l
	l.log.WithField("number", number).Info("transferred to a local line; calling it")
	callee.postWait(func() { callee.onLocalOffer(caller, offer, sdp, user, name) })
}

// referredLocalAnswered: the line called for a REFER answered: the phone's
// connection goes to it, the transferor hears 200 and the old call ends.
func (l *line) referredLocalAnswered(nc *call) {
	c := nc.xferOf
	tr, err := ToGateway(nc.peerSDP, l.rule.Gateway.Codecs)
	if err != nil {
		l.transferLegFailed(c, nc, 488, "Not Acceptable Here", false)
		return
	}
	if err := l.modifyConnection(c, mgcp.ModeSendRecv, tr.SDP); err != nil {
		l.transferLegFailed(c, nc, 500, "Server Internal Error", false)
		return
	}
	l.markAnswered(nc)
	nc.connID, nc.gwSDP, nc.conn, nc.mode = c.connID, c.gwSDP, c.conn, mgcp.ModeSendRecv
	c.connID = ""
	c.xfer, nc.xferOf = nil, nil
	l.notifyRefer(c, 200, "OK")
	c.result = "transferred by the far end to " + nc.number
	l.endCallOf(c, c.result, c.gone)
	l.adopt(nc)
	l.state = stConnected
}
