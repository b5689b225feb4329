package bridge

// Three-way calling through an ad-hoc conference at the PBX, for gateways
// that cannot mix (quirk profile conference: false, or a refused confrnce
// MDCX) on lines with features.conference_uri. Instead of dropping C, the
// line joins the three at the PBX (Asterisk ConfBridge, FreeSWITCH
// conference), the conference number acting as the focus of RFC 4579's
// ad-hoc conference:
//
//  1. INVITE the conference number (routed like a dialled number) with
//     the gateway's SDP of C's connection; A stays held, C talks on.
//  2. Answered: C is moved to the conference by third-party call
//     control (RFC 3725 §5, the controller giving each side the other's
//     description): a second INVITE to the conference, on C's behalf,
//     offers the description C gave us; the conference's answer goes
//     to C in a re-INVITE. mgsip keeps both dialogs of C (C's and its
//     leg at the conference), so that it can drop C again.
//  3. C moved: the phone's connection with C goes to the conference (one
//     MDCX with the conference's answer, send-receive) and A gets a
//     REFER whose Refer-To is the conference number at the PBX's domain
//     (as a blind transfer names its target). A's final NOTIFY 2xx ends
//     our dialog with A (BYE) and its held connection (DLCX).
//
// Why C is not REFERed like A: a party moved by REFER is the PBX's, and
// the only standard way left to remove it is a REFER to the focus with
// method=BYE (RFC 4579 §5.5, RFC 3515 §2.4.2), which Asterisk (an in-
// dialog REFER transfers the referring channel) and FreeSWITCH's
// conference do not implement; 3pcc needs nothing but INVITE, re-INVITE
// and BYE, which every PBX and proxy on the path (Kamailio) carries.
//
// In the conference: a flash drops the party added last (BYE to C and to
// its leg at the conference); the phone stays in the conference, talking
// with A. C hanging up (or the conference ending C's leg) is the same.
// Hanging up leaves the conference (BYE) and hands C over to it for good
// (a REFER, as A got) when A is there, so A and C talk on; otherwise C is
// hung up. The conference ending is a far end hanging up (C goes too).
//
// A whose REFER fails (refused, a final NOTIFY that is not 2xx, or none
// within TransferTimeout) is kept, held, as the line's second call: the
// phone talks with C in the conference and A waits, as before the join;
// a flash then drops C, leaves the conference and resumes A.
//
// The conference not answered, C's move failing, or the phone or a party
// changing the situation before the join (a flash is ignored meanwhile,
// a hang-up or a party hanging up cancels it), falls back to what a
// gateway without mixing gets: C dropped with the error tone, A resumed.

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// pbxConf is a three-way call being moved to (or moved to) the PBX.
type pbxConf struct {
	focus  *call // the phone's call to the conference
	a, c   *call // the held first call and the consultation call
	joined bool  // the phone is in the conference; A is REFERed, C kept
	number string
	peer   *mapping.PeerRule // where the conference number routes

	answer  []byte // the conference's answer to the phone's INVITE
	leg     *call  // C's leg at the conference (3pcc), once placed
	cMoved  bool   // C was re-INVITEd toward the conference
	aJoined bool   // A's REFER succeeded: A is in the conference
}

// pbxConference starts the PBX conference instead of dropping C; false
// when the line has none configured or it cannot be called.
func (l *line) pbxConference(why string) bool {
	number := l.rule.Features.ConferenceURI
	a, c := l.other, l.call
	if number == "" || l.b.cfg.SIP == nil || a == nil || c == nil || a.dialog == nil || c.dialog == nil || c.connID == "" {
		return false
	}
	rt := l.b.cfg.Rules.Load().RouteOutbound(number)
	if rt == nil || rt.Peer == nil || rt.Local || l.b.peerDown(rt.Peer, l) {
		return false
	}
	f, ok := l.callConference(number, rt.Peer, c.gwSDP, l.rule.Gateway.Codecs, c.id)
	if !ok {
		return false
	}
	f.confFocus = true
	l.log.WithFields(map[string]any{"why": why, "number": number}).Info("no mixing on the gateway: three-way call at the PBX conference")
	l.pbxConf = &pbxConf{focus: f, a: a, c: c, number: number, peer: rt.Peer}
	// The whole set-up (the conference's answer, C's leg there and C's
	// re-INVITE) is bounded by TransferTimeout, as a transfer's outcome
	// is: a conference answers at once or not at all, and the phone
	// waits meanwhile (its flash is ignored). Past it, the conference
	// call is cancelled and the fallback applies (pbxConfFailed).
	l.at(l.b.cfg.TransferTimeout, func() {
		if pc := l.pbxConf; pc != nil && pc.focus == f && !pc.joined {
			l.pbxConfFailed("the conference was not set up within the transfer timeout")
		}
	})
	return true
}

// callConference INVITEs the conference number with sdp (translated
// with a new origin, restricted to codecs); the call's events come to
// onPBXConf once the caller flags it.
func (l *line) callConference(number string, peer *mapping.PeerRule, sdp []byte, codecs []string, id string) (*call, bool) {
	f := &call{id: id, number: number, direction: "outgoing", start: time.Now(), origin: newOrigin(), peerRule: peer}
	offer, err := ToSIP(sdp, &f.origin, codecs, SendRecv)
	if err != nil {
		return nil, false
	}
	f.codecs = offer.Codecs
	ctx, cancel := context.WithCancel(l.ctx)
	f.cancel = cancel
	d, err := l.b.cfg.SIP.Invite(ctx, sip.Call{From: l.account(), To: number, Peer: net.JoinHostPort(peer.Host, strconv.Itoa(peer.Port)),
		Transport: peer.Transport, SDP: offer.SDP, PRACK: prackMode(peer)})
	if err != nil {
		cancel()
		return nil, false
	}
	f.dialog = d
	l.count(f)
	l.forward(f)
	return f, true
}

// onPBXConf handles the events of the conference calls and of the
// parties being moved into it.
func (l *line) onPBXConf(c *call, e sip.Event) {
	pc := l.pbxConf
	if c.confParty {
		switch e.Kind {
		case sip.EventReferStatus:
			if !e.Final {
				return
			}
			c.confParty = false
			if e.Status >= 300 {
				l.referIntoFailed(c, "not joined to the PBX conference: "+strconv.Itoa(e.Status)+" "+e.Reason)
				return
			}
			if pc != nil && pc.a == c {
				pc.aJoined = true
			}
			c.result = "joined the PBX conference"
			l.endCallOf(c, c.result, false)
		case sip.EventBye, sip.EventCancelled, sip.EventFailed:
			c.confParty = false
			l.endCallOf(c, "far end hung up", true)
		case sip.EventReinvite, sip.EventUpdate:
			_ = c.dialog.RejectReinvite(491, "Request Pending")
		}
		return
	}
	if c.confLeg {
		l.onConfLeg(pc, c, e)
		return
	}
	if pc == nil || pc.focus != c {
		return
	}
	switch e.Kind {
	case sip.EventRinging, sip.EventProgress:
		l.b.notePeer(c.peerRule, true)
	case sip.EventAnswered:
		l.b.notePeer(c.peerRule, true)
		if pc.joined || pc.leg != nil {
			return
		}
		c.answered = time.Now() // a BYE ends it from now on, not a CANCEL
		pc.answer = e.SDP
		l.moveC(pc)
	case sip.EventFailed, sip.EventBye, sip.EventCancelled:
		if !pc.joined {
			l.pbxConfFailed("the conference call failed: " + strconv.Itoa(e.Status) + " " + e.Reason)
		}
	}
}

// moveC places C's leg at the conference: an INVITE on C's behalf with
// the description C gave us (RFC 3725 §5: the controller offers one
// side's description to the other).
func (l *line) moveC(pc *pbxConf) {
	c := pc.c
	leg, ok := l.callConference(pc.number, pc.peer, c.dialog.RemoteSDP(), c.codecs, c.id)
	if !ok {
		l.pbxConfFailed("C's leg at the conference could not be placed")
		return
	}
	leg.confLeg = true
	leg.result = "C's leg at the PBX conference"
	pc.leg = leg
}

// onConfLeg handles the events of C's two dialogs kept for the
// conference: C's own and its leg at the conference.
func (l *line) onConfLeg(pc *pbxConf, c *call, e sip.Event) {
	if pc == nil || (c != pc.c && c != pc.leg) {
		return
	}
	switch e.Kind {
	case sip.EventAnswered:
		if c == pc.leg && !pc.cMoved && !pc.joined {
			c.answered = time.Now()
			l.reinviteC(pc, e.SDP)
		}
	case sip.EventReinvite, sip.EventUpdate:
		l.refreshConfLeg(pc, c)
	case sip.EventFailed, sip.EventBye, sip.EventCancelled:
		why := "far end hung up"
		if c == pc.leg {
			why = "the conference ended C's leg: " + strconv.Itoa(e.Status) + " " + e.Reason
		}
		if !pc.joined {
			if c == pc.leg {
				c.confLeg = false
				l.endCallOf(c, why, true)
				pc.leg = nil
				l.pbxConfFailed(why)
			}
			return // C hanging up before the join: fixPBXConf gives up
		}
		l.dropC(pc, why, c)
	}
}

// refreshConfLeg answers a re-INVITE or UPDATE in one of C's kept
// dialogs (a session refresh, RFC 4028, or a new offer) with the
// description the other dialog has, as given before: the session stays
// as it is. A new address or codec in the offer is not passed across to
// the other dialog (docs/bridge.md, "Not yet").
func (l *line) refreshConfLeg(pc *pbxConf, c *call) {
	other := pc.leg
	if c == pc.leg {
		other = pc.c
	}
	if other == nil || other.dialog == nil || !pc.joined {
		_ = c.dialog.RejectReinvite(491, "Request Pending")
		return
	}
	tr, err := ToSIP(other.dialog.RemoteSDP(), &c.origin, c.codecs, SendRecv)
	if err != nil {
		_ = c.dialog.RejectReinvite(488, "Not Acceptable Here")
		return
	}
	_ = c.dialog.AcceptReinvite(tr.SDP)
}

// reinviteC sends C the conference's answer to its leg (with our origin
// toward C), on C's dialog in order with its other requests; the
// outcome comes back to the line's goroutine.
func (l *line) reinviteC(pc *pbxConf, answer []byte) {
	c := pc.c
	tr, err := ToSIP(answer, &c.origin, c.codecs, SendRecv)
	if err != nil {
		l.pbxConfFailed("the conference's answer for C: " + err.Error())
		return
	}
	pc.cMoved = true
	// C hanging up or dropped abandons it: the BYE goes at once.
	l.reinvite(c, tr.SDP, func(_ []byte, err error) {
		l.postWait(func() {
			if l.pbxConf != pc || pc.joined {
				return
			}
			if err != nil {
				l.pbxConfFailed("C refused the move to the conference: " + err.Error())
				return
			}
			l.joinPBXConf(pc)
		})
	})
}

// joinPBXConf: C talks to the conference; the phone's connection with C
// moves to it and A is REFERed into it.
func (l *line) joinPBXConf(pc *pbxConf) {
	f, a, c := pc.focus, pc.a, pc.c
	tr, err := ToGateway(pc.answer, l.rule.Gateway.Codecs)
	if err == nil {
		err = l.modifyConnection(c, mgcp.ModeSendRecv, tr.SDP)
	}
	if err != nil {
		l.pbxConfFailed("the conference's media: " + err.Error())
		return
	}
	pc.joined = true
	f.confFocus = false
	l.markAnswered(f)
	f.connID, f.gwSDP, f.conn = c.connID, c.gwSDP, c.conn
	c.connID = ""
	c.confLeg = true
	c.transfer = true
	l.call, l.other = f, nil
	l.consult, l.conf = false, false
	l.transfer = transferState{}
	l.state = stConnected
	l.gen++
	f.gen = l.gen
	a.confParty = true
	a.transfer = true
	a.confHome = f
	l.referInto(a, pc.number)
	l.publishReferPolicy()
}

// referInto REFERs a party into the conference; its final NOTIFY (or
// none in TransferTimeout) ends our dialog with it, or keeps it when
// the REFER failed (referIntoFailed).
func (l *line) referInto(p *call, number string) {
	target := l.referTarget(p, number)
	d := p.dialog
	l.inOrder(p, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		err := d.Refer(ctx, target, nil)
		cancel()
		if err != nil {
			l.postWait(func() {
				if p.confParty && !p.ended {
					p.confParty = false
					l.referIntoFailed(p, "REFER into the PBX conference: "+err.Error())
				}
			})
		}
	})
	l.at(l.b.cfg.TransferTimeout, func() {
		if p.confParty && !p.ended {
			p.confParty = false
			l.referIntoFailed(p, "no final NOTIFY for the REFER into the PBX conference")
		}
	})
}

// referIntoFailed: a party could not be moved into the conference by
// REFER. A is kept, held, beside the phone's conference call while that
// call is the line's only one; otherwise (the phone hung up, or C handed
// over after it) the party is hung up, there being nobody to keep it for.
func (l *line) referIntoFailed(p *call, why string) {
	if home := p.confHome; home != nil && !home.ended && l.call == home && l.other == nil && !p.ended {
		l.log.WithField("why", why).Info("the held party stays held beside the PBX conference")
		p.confHome = nil
		p.transfer = false
		l.other = p
		l.gen++
		return
	}
	p.result = why
	l.endCallOf(p, why, false)
}

// pbxFlash: a flash in the PBX conference drops the party added last
// (C). True when it did.
func (l *line) pbxFlash() bool {
	pc := l.pbxConf
	if pc == nil || !pc.joined || l.call != pc.focus {
		return false
	}
	l.dropC(pc, "dropped from the three-way call", nil)
	return true
}

// dropC ends C's two dialogs (gone: the one that ended already). With A
// kept held beside the conference, the phone leaves the conference and
// goes back to A; otherwise it stays there, talking with A.
func (l *line) dropC(pc *pbxConf, why string, gone *call) {
	l.pbxConf = nil
	for _, x := range []*call{pc.c, pc.leg} {
		if x == nil {
			continue
		}
		x.confLeg = false
		x.result = why
		l.endCallOf(x, why, x == gone)
	}
	l.log.WithField("why", why).Info("C left the PBX conference")
	if a := pc.a; l.call == pc.focus && l.other == a && a != nil && !a.ended {
		f := pc.focus
		f.result = "left the PBX conference"
		l.endCall(f.result, false)
		l.afterActiveEnded(false) // A: MDCX sendrecv, re-INVITE sendrecv
	}
}

// pbxConfFailed: no PBX conference after all; what a gateway without
// mixing gets (C dropped with the error tone, A resumed) when the three
// are still as they were, else just the conference calls end.
func (l *line) pbxConfFailed(why string) {
	pc := l.pbxConf
	if pc == nil {
		return
	}
	l.pbxConf = nil
	l.endConfLegs(pc, why)
	if l.call == pc.c && l.other == pc.a && !pc.c.ended && !pc.a.ended && l.consulting() {
		l.log.WithField("why", why).Info("no three-way call; dropping the added party")
		c := l.call
		c.result = "three-way refused: " + why
		l.endCall(c.result, false)
		l.oneShot = append(l.oneShot, signal("L/e"))
		l.afterActiveEnded(false)
	}
}

// endConfLegs ends the calls of a conference that was not joined: the
// phone's call to it (CANCEL or BYE) and C's leg there; C, re-INVITEd
// toward the conference meanwhile, gets the gateway's description back.
func (l *line) endConfLegs(pc *pbxConf, why string) {
	f := pc.focus
	f.confFocus = false
	l.endCallOf(f, why, false)
	if leg := pc.leg; leg != nil {
		leg.confLeg = false
		l.endCallOf(leg, why, false)
	}
	if c := pc.c; pc.cMoved && !c.ended && c.connID != "" {
		l.reoffer(c, SendRecv)
	}
}

// fixPBXConf runs after every input: a conference being set up whose
// three-way call changed (hung up, a party gone, swapped) is given up;
// a joined conference whose call ended takes C with it, or hands C over
// to the conference when the phone hung up and A is there.
func (l *line) fixPBXConf() {
	pc := l.pbxConf
	if pc == nil {
		return
	}
	if pc.joined {
		if !pc.focus.ended {
			return
		}
		l.pbxConf = nil
		if !l.offHook && pc.aJoined && !pc.c.ended {
			if leg := pc.leg; leg != nil {
				leg.confLeg = false
				l.endCallOf(leg, "C handed over to the PBX conference", false)
			}
			c := pc.c
			c.confLeg = false
			c.confParty = true
			l.referInto(c, pc.number)
			return
		}
		for _, x := range []*call{pc.c, pc.leg} {
			if x != nil {
				x.confLeg = false
				l.endCallOf(x, "the PBX conference call ended", false)
			}
		}
		return
	}
	if l.call != pc.c || l.other != pc.a || pc.c.ended || pc.a.ended || !l.consult {
		l.pbxConf = nil
		l.endConfLegs(pc, "three-way call given up before the conference answered")
	}
}
