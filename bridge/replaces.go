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
//   - the line's held or waiting call, or a call whose transfer is under
//     way: 486 (only the call the phone talks on, or dials, is replaced);
//   - a call that has ended meanwhile: 603.
//
// Otherwise the new dialog takes the call's connection: one MDCX gives the
// gateway the new far end's SDP (the mode mirrored from its direction),
// the new INVITE is answered with the gateway's SDP, and the replaced
// dialog gets a BYE (or, still early, a CANCEL). The phone notices
// nothing but the new voice; the line's state stays (or becomes, for a
// call still ringing out) connected.

import (
	"strings"
	"time"

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
	refuse := func(status int, reason string) {
		l.log.WithField("status", status).Info("INVITE with Replaces refused")
		_ = d.Reject(status, reason)
		close(done)
	}
	var c *call
	switch {
	case l.call != nil && l.call.dialog == old:
		c = l.call
	case l.other != nil && l.other.dialog == old:
		refuse(486, "Busy Here")
		return
	default:
		refuse(603, "Declined") // §3: the dialog is over
		return
	}
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
	case c.xfer != nil || c.referring || c.peer != nil || l.other != nil || l.transfer.active:
		refuse(486, "Busy Here")
		return
	case confirmed && l.state != stConnected, !confirmed && l.state != stCalling:
		refuse(486, "Busy Here")
		return
	}
	tr, err := ToGateway(d.RemoteSDP(), l.rule.Gateway.Codecs)
	if err != nil {
		refuse(488, "Not Acceptable Here")
		return
	}
	nc := &call{id: c.id, direction: c.direction, dialog: d, done: done, start: time.Now(), codecs: tr.Codecs,
		origin: newOrigin(), transfer: true}
	nc.number, nc.name = callerOf(d)
	prev := l.state
	l.state = stConnected // the MDCX's embedded request is a talking line's (no ringback)
	mode := l.connMode(c, tr.Mode)
	if err := l.modifyConnection(c, mode, tr.SDP); err != nil {
		l.state = prev
		status, reason := StatusForMGCP(err)
		refuse(status, reason)
		return
	}
	ans, err := ToSIP(c.gwSDP, &nc.origin, tr.Codecs, mirror(tr.Direction))
	if err != nil {
		l.state = prev
		refuse(488, "Not Acceptable Here")
		return
	}
	l.log.WithField("replaced", old.CallID).Info("call replaced by an INVITE with Replaces")
	nc.connID, nc.gwSDP, nc.conn = c.connID, c.gwSDP, c.conn
	c.connID = ""
	c.transfer = true
	c.result = "replaced by " + nc.number
	// The replaced dialog gets its BYE (a CANCEL while early); its
	// connection is the new call's now, so no DLCX.
	l.endCallOf(c, c.result, false)
	l.adopt(nc)
	l.state = stConnected
	l.markAnswered(nc)
	l.forward(nc)
	l.publishReferPolicy()
	go func() {
		if err := d.Answer(ans.SDP); err != nil {
			l.log.WithError(err).Info("answer to the INVITE with Replaces not acknowledged")
		}
	}()
}
