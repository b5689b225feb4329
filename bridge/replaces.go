package bridge

// An INVITE with Replaces received (RFC 3891): someone (the PBX finishing
// an attended transfer, a call pickup) asks that the new call take the
// place of one of a line's calls. The stack finds the dialog the header
// names (sip.Stack.FindReplaced); the line that serves it decides, on its
// own goroutine, by §3's rules:
//
//   - no such dialog, or one no line serves: 481;
//   - a confirmed dialog and the header says early-only: 486;
//   - an early dialog that the far end started (the phone rings for it):
//     481, and the ringing call goes on;
//   - the line's waiting call (not answered: an early dialog the far end
//     started): 481, and it waits on;
//   - a call whose transfer is under way, a consultation call or a call
//     in a three-way conference: 486;
//   - a call that has ended meanwhile: 603.
//
// Otherwise the new dialog takes the call's connection: one MDCX gives the
// gateway the new far end's SDP (the mode mirrored from its direction),
// the new INVITE is answered with the gateway's SDP, and the replaced
// dialog gets a BYE (or, still early, a CANCEL). The phone notices
// nothing but the new voice; the line's state stays (or becomes, for a
// call still ringing out) connected.
//
// The line's held call (call waiting swapped away, or held for a
// consultation) is replaced in its place and state: the new far end is
// held (our answer sendonly, the connection inactive) until the flash
// that would have resumed the old one.
//
// An INVITE without SDP (RFC 3264 §4: the offer is then ours) gets the
// gateway's description as the offer in our 200, and the answer comes in
// the ACK (RFC 3261 §13.2.1); the connection gets it then. An ACK without
// an answer, or with one the gateway cannot take, ends the new call with
// a BYE.

import (
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// serveReplaces serves an inbound INVITE that carries Replaces.
func (b *Bridge) serveReplaces(d *sip.Dialog, value string) {
	if b.cfg.SIP == nil {
		_ = d.Reject(481, "Call/Transaction Does Not Exist")
		return
	}
	old := b.cfg.SIP.FindReplaced(value)
	if old == nil {
		_ = d.Reject(481, "Call/Transaction Does Not Exist")
		return
	}
	v, ok := b.dialogs.Load(old)
	if !ok {
		_ = d.Reject(481, "Call/Transaction Does Not Exist")
		return
	}
	l := v.(*line)
	earlyOnly := false
	for _, p := range strings.Split(value, ";")[1:] {
		if strings.EqualFold(strings.TrimSpace(p), "early-only") {
			earlyOnly = true
		}
	}
	done := make(chan struct{})
	if !l.post(func() { l.onReplaces(d, old, earlyOnly, done) }) {
		_ = d.Reject(486, "Busy Here")
		return
	}
	b.await(done)
}

// onReplaces: the new dialog d asks to replace the line's dialog old.
func (l *line) onReplaces(d, old *sip.Dialog, earlyOnly bool, done chan struct{}) {
	switch {
	case l.call != nil && l.call.dialog == old:
		l.replaceActive(d, old, earlyOnly, done)
	case l.other != nil && l.other.dialog == old:
		l.replaceHeld(d, old, earlyOnly, done)
	default:
		l.refuseReplaces(d, done, 603, "Declined") // §3: the dialog is over
	}
}

func (l *line) refuseReplaces(d *sip.Dialog, done chan struct{}, status int, reason string) {
	l.log.WithField("status", status).Info("INVITE with Replaces refused")
	_ = d.Reject(status, reason)
	close(done)
}

// replaceActive replaces the call the phone talks on or dials.
func (l *line) replaceActive(d, old *sip.Dialog, earlyOnly bool, done chan struct{}) {
	c := l.call
	refuse := func(status int, reason string) { l.refuseReplaces(d, done, status, reason) }
	confirmed := !c.answered.IsZero()
	switch {
	case c.ended || c.gone:
		refuse(603, "Declined")
		return
	case confirmed && earlyOnly:
		refuse(486, "Busy Here") // §3: early-only and the dialog is confirmed
		return
	case !confirmed && old.Inbound:
		refuse(481, "Call/Transaction Does Not Exist") // §3: an early dialog we did not start
		return
	case c.xfer != nil || c.referring || c.peer != nil || l.consult || l.conf || l.transfer.active:
		// Being transferred, a consultation or a conference: the other
		// call depends on this one.
		refuse(486, "Busy Here")
		return
	case l.other != nil && (l.other.referring || l.other.xfer != nil):
		refuse(486, "Busy Here")
		return
	case confirmed && l.state != stConnected, !confirmed && l.state != stCalling:
		refuse(486, "Busy Here")
		return
	}
	nc := &call{id: c.id, direction: c.direction, dialog: d, done: done, start: time.Now(),
		origin: newOrigin(), transfer: true}
	nc.number, nc.name = callerOf(d)
	body, status, reason := l.moveToReplacing(c, nc, d, false)
	if status != 0 {
		refuse(status, reason)
		return
	}
	l.log.WithField("replaced", old.CallID).Info("call replaced by an INVITE with Replaces")
	// The replaced dialog gets its BYE (a CANCEL while early); its
	// connection is the new call's now, so no DLCX.
	l.endCallOf(c, c.result, false)
	l.adopt(nc)
	l.state = stConnected
	l.markAnswered(nc)
	l.forward(nc)
	l.publishReferPolicy()
	l.answerReplacing(nc, body)
}

// replaceHeld replaces the line's other call. A call on hold (call
// waiting swapped away, or held for a consultation) is replaced in its
// place and state: the new far end is held as the old one was (our
// answer says sendonly, or inactive to an offer that holds us; the
// connection stays inactive), and the next flash resumes it as it would
// have resumed the old one. A call still waiting (ringing in the phone's
// ear, not answered) is an early dialog the far end started: 481 (RFC
// 3891 §3), and it waits on.
func (l *line) replaceHeld(d, old *sip.Dialog, earlyOnly bool, done chan struct{}) {
	c := l.other
	refuse := func(status int, reason string) { l.refuseReplaces(d, done, status, reason) }
	switch {
	case c.ended || c.gone:
		refuse(603, "Declined")
		return
	case c.answered.IsZero() && old.Inbound:
		refuse(481, "Call/Transaction Does Not Exist") // §3: an early dialog we did not start
		return
	case c.answered.IsZero(), earlyOnly:
		refuse(486, "Busy Here") // §3: early-only names a confirmed dialog
		return
	case c.xfer != nil || c.referring || c.peer != nil || c.confParty || c.confFocus || l.conf || l.transfer.active:
		// Being transferred, or mixed in a conference: not simply held.
		refuse(486, "Busy Here")
		return
	}
	nc := &call{id: c.id, direction: c.direction, dialog: d, done: done, start: time.Now(),
		origin: newOrigin(), transfer: true, waiting: c.waiting}
	nc.number, nc.name = callerOf(d)
	body, status, reason := l.moveToReplacing(c, nc, d, true)
	if status != 0 {
		refuse(status, reason)
		return
	}
	l.log.WithField("replaced", old.CallID).Info("held call replaced by an INVITE with Replaces")
	l.endCallOf(c, c.result, false) // BYE; the connection is nc's
	l.other = nc
	l.count(nc)
	l.markAnswered(nc)
	l.forward(nc)
	l.publishReferPolicy()
	l.answerReplacing(nc, body)
}

// moveToReplacing gives the connection of c to nc, the call of the INVITE d
// that replaces it, and returns the body of our 200: the answer to d's
// offer (one MDCX gives the gateway the new far end), or, to an offerless
// INVITE, our offer (the gateway's description; the MDCX waits for the
// answer in the ACK, RFC 3264 §4 and RFC 3261 §13.2.1). held keeps the
// connection inactive and our side on hold. A status is returned when d
// is to be refused; c is then untouched.
func (l *line) moveToReplacing(c, nc *call, d *sip.Dialog, held bool) (body []byte, status int, reason string) {
	if offer := d.RemoteSDP(); len(offer) > 0 {
		tr, err := ToGateway(offer, l.rule.Gateway.Codecs)
		if err != nil {
			return nil, 488, "Not Acceptable Here"
		}
		mode, dir := l.connMode(c, tr.Mode), mirror(tr.Direction)
		if held {
			mode, dir = mgcp.ModeInactive, holdAnswer(tr.Direction)
		}
		prev := l.state
		if !held {
			l.state = stConnected // the MDCX's embedded request is a talking line's (no ringback)
		}
		if err := l.modifyConnection(c, mode, tr.SDP); err != nil {
			l.state = prev
			status, reason := StatusForMGCP(err)
			return nil, status, reason
		}
		ans, err := ToSIP(c.gwSDP, &nc.origin, tr.Codecs, dir)
		if err != nil {
			l.state = prev
			return nil, 488, "Not Acceptable Here"
		}
		nc.codecs, body = tr.Codecs, ans.SDP
	} else {
		dir := SendRecv
		if held {
			dir = SendOnly // as our hold re-INVITE offers (RFC 3264 §8.4)
		}
		of, err := ToSIP(c.gwSDP, &nc.origin, l.rule.Gateway.Codecs, dir)
		if err != nil {
			return nil, 488, "Not Acceptable Here"
		}
		nc.codecs, body = of.Codecs, of.SDP
		nc.answerInAck = true
	}
	nc.connID, nc.gwSDP, nc.conn, nc.mode = c.connID, c.gwSDP, c.conn, c.mode
	c.connID = ""
	c.transfer = true
	c.result = "replaced by " + nc.number
	return body, 0, ""
}

// holdAnswer is the direction of our answer, on hold, to an offer of
// direction dir (RFC 3264 §6.1: sendonly answers sendrecv or recvonly;
// to a sendonly or inactive offer only inactive stops our media too).
func holdAnswer(dir Direction) Direction {
	if dir == SendOnly || dir == Inactive {
		return Inactive
	}
	return SendOnly
}

// answerReplacing sends our 200 to the replacing INVITE, in order with
// what follows in its dialog (a hold or resume re-INVITE waits for the
// ACK, RFC 3261 §14.1).
func (l *line) answerReplacing(nc *call, body []byte) {
	d := nc.dialog
	l.inOrder(nc, func() {
		if err := d.Answer(body); err != nil {
			l.log.WithError(err).Info("answer to the INVITE with Replaces not acknowledged")
		}
	})
}

// takeAckAnswer takes the answer that the ACK of an offerless replacing
// INVITE carries (our 200 had the offer): the gateway gets the new far
// end's description. An ACK without an answer, or with one the gateway
// cannot use, leaves the call without media: it is hung up with BYE
// (RFC 3261 §13.2.1 makes the answer in the ACK mandatory then).
func (l *line) takeAckAnswer(c *call, e sip.Event) {
	c.answerInAck = false
	tr, err := ToGateway(e.SDP, l.rule.Gateway.Codecs)
	why := ""
	switch {
	case len(e.SDP) == 0:
		why = "no answer in the ACK"
	case err != nil:
		why = "bad answer in the ACK"
	}
	if why == "" {
		mode := l.connMode(c, tr.Mode)
		if c != l.call {
			mode = mgcp.ModeInactive // still held
		}
		if err := l.modifyConnection(c, mode, tr.SDP); err != nil {
			why = failedWhy("MDCX", err)
		} else {
			c.codecs = tr.Codecs
			return
		}
	}
	l.log.WithField("reason", why).Info("replacing call hung up")
	c.result = why
	if c == l.call {
		l.failCall(c, why, "L/ro")
		return
	}
	l.endCallOf(c, why, false)
}
