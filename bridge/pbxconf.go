package bridge

// Three-way calling through an ad-hoc conference at the PBX, for gateways
// that cannot mix (quirk profile conference: false, or a refused confrnce
// MDCX) on lines with features.conference_uri. Instead of dropping C, the
// line joins the three at the PBX, the simplest standard flow a PBX
// conference (Asterisk ConfBridge, FreeSWITCH conference) takes (RFC
// 4579 §5.4's ad-hoc creation with REFER, the focus being the
// conference number):
//
//  1. INVITE the conference number (routed like a dialled number) with
//     the gateway's SDP of C's connection; A stays held, C talks on.
//  2. Answered: C's connection goes to the conference (one MDCX with its
//     SDP, send-receive): the phone is in the conference. A and C each
//     get a REFER whose Refer-To is the conference number at the PBX's
//     domain (as a blind transfer names its target).
//  3. Each party's final NOTIFY (or none within TransferTimeout) ends our
//     dialog with it (BYE) and, for A, its held connection (DLCX): a
//     party whose transfer failed is hung up too (it cannot stay in a
//     three-way call we cannot mix).
//
// The conference call is then the line's only call: hanging up leaves
// the conference (BYE), the conference ending is a far end hanging up.
// The conference not answered, or the phone or a party changing the
// situation before it is (a flash is ignored meanwhile, a hang-up or a
// party hanging up cancels it), falls back to what a gateway without
// mixing gets: C dropped with the error tone, A resumed.

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// pbxConf is a three-way call being moved to (or moved to) the PBX.
type pbxConf struct {
	focus  *call // the call to the conference
	a, c   *call // the held first call and the consultation call
	joined bool  // the conference answered: a and c are being REFERed
	number string
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
	f := &call{id: c.id, number: number, direction: "outgoing", start: time.Now(), origin: newOrigin(), peerRule: rt.Peer,
		confFocus: true}
	offer, err := ToSIP(c.gwSDP, &f.origin, l.rule.Gateway.Codecs, SendRecv)
	if err != nil {
		return false
	}
	f.codecs = offer.Codecs
	ctx, cancel := context.WithCancel(l.ctx)
	f.cancel = cancel
	d, err := l.b.cfg.SIP.Invite(ctx, sip.Call{From: l.account(), To: number, Peer: net.JoinHostPort(rt.Peer.Host, strconv.Itoa(rt.Peer.Port)),
		Transport: rt.Peer.Transport, SDP: offer.SDP, PRACK: prackMode(rt.Peer)})
	if err != nil {
		cancel()
		return false
	}
	l.log.WithFields(map[string]any{"why": why, "number": number}).Info("no mixing on the gateway: three-way call at the PBX conference")
	f.dialog = d
	l.count(f)
	l.pbxConf = &pbxConf{focus: f, a: a, c: c, number: number}
	l.forward(f)
	l.at(l.b.cfg.TransferTimeout+l.b.cfg.NoAnswerTimeout+time.Second, func() {
		if pc := l.pbxConf; pc != nil && pc.focus == f && !pc.joined {
			l.pbxConfFailed("the conference did not answer")
		}
	})
	return true
}

// onPBXConf handles the events of the conference call and of the
// parties being REFERed into it.
func (l *line) onPBXConf(c *call, e sip.Event) {
	pc := l.pbxConf
	if c.confParty {
		switch e.Kind {
		case sip.EventReferStatus:
			if !e.Final {
				return
			}
			c.result = "joined the PBX conference"
			if e.Status >= 300 {
				c.result = "not joined to the PBX conference: " + strconv.Itoa(e.Status) + " " + e.Reason
			}
			c.confParty = false
			l.endCallOf(c, c.result, false)
		case sip.EventBye, sip.EventCancelled, sip.EventFailed:
			c.confParty = false
			l.endCallOf(c, "far end hung up", true)
		case sip.EventReinvite, sip.EventUpdate:
			_ = c.dialog.RejectReinvite(491, "Request Pending")
		}
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
		l.joinPBXConf(pc, e.SDP)
	case sip.EventFailed, sip.EventBye, sip.EventCancelled:
		l.pbxConfFailed("the conference call failed: " + strconv.Itoa(e.Status) + " " + e.Reason)
	}
}

// joinPBXConf: the conference answered; the phone's connection with C
// moves to it and A and C are REFERed into it.
func (l *line) joinPBXConf(pc *pbxConf, answer []byte) {
	f, a, c := pc.focus, pc.a, pc.c
	tr, err := ToGateway(answer, l.rule.Gateway.Codecs)
	if err == nil {
		err = l.modifyConnection(c, mgcp.ModeSendRecv, tr.SDP)
	}
	if err != nil {
		f.answered = time.Now() // so that it gets a BYE
		l.pbxConfFailed("the conference's media: " + err.Error())
		return
	}
	pc.joined = true
	l.pbxConf = nil
	f.confFocus = false
	l.markAnswered(f)
	f.connID, f.gwSDP, f.conn = c.connID, c.gwSDP, c.conn
	c.connID = ""
	l.call, l.other = f, nil
	l.consult, l.conf = false, false
	l.transfer = transferState{}
	l.state = stConnected
	l.gen++
	f.gen = l.gen
	for _, p := range []*call{a, c} {
		p.confParty = true
		p.transfer = true
		l.referInto(p, pc.number)
	}
	l.publishReferPolicy()
}

// referInto REFERs a party into the conference; its final NOTIFY (or
// none in TransferTimeout) ends our dialog with it.
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
					l.endCallOf(p, "REFER into the PBX conference: "+err.Error(), false)
				}
			})
		}
	})
	l.at(l.b.cfg.TransferTimeout, func() {
		if p.confParty && !p.ended {
			p.confParty = false
			l.endCallOf(p, "no final NOTIFY for the REFER into the PBX conference", false)
		}
	})
}

// pbxConfFailed: no PBX conference after all; what a gateway without
// mixing gets (C dropped with the error tone, A resumed) when the three
// are still as they were, else just the conference call ends.
func (l *line) pbxConfFailed(why string) {
	pc := l.pbxConf
	if pc == nil {
		return
	}
	l.pbxConf = nil
	f := pc.focus
	f.confFocus = false
	l.endCallOf(f, why, false) // CANCEL or BYE
	if l.call == pc.c && l.other == pc.a && !pc.c.ended && !pc.a.ended && l.consulting() {
		l.log.WithField("why", why).Info("no three-way call; dropping the added party")
		c := l.call
		c.result = "three-way refused: " + why
		l.endCall(c.result, false)
		l.oneShot = append(l.oneShot, signal("L/e"))
		l.afterActiveEnded(false)
	}
}

// fixPBXConf runs after every input: a conference being set up whose
// three-way call changed (hung up, a party gone, swapped) is given up.
func (l *line) fixPBXConf() {
	pc := l.pbxConf
	if pc == nil || pc.joined {
		return
	}
	if l.call != pc.c || l.other != pc.a || pc.c.ended || pc.a.ended || !l.consult {
		l.pbxConf = nil
		f := pc.focus
		f.confFocus = false
		l.endCallOf(f, "three-way call given up before the conference answered", false)
	}
}
