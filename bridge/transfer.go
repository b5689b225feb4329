package bridge

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// Blind transfer (line feature transfer, default on), the analog way:
// flash during a call holds it and gives dial tone; the number dialled is
// where the held party goes. Hanging up sends REFER (RFC 3515) on the
// held call, naming the number at the line's PBX domain. The held call
// stays on hold (its connection inactive) until the far end reports the
// outcome in a NOTIFY with a final sipfrag status (RFC 3515 §2.4.5): a 2xx
// ends it with BYE (the transferor's part, RFC 5589 §6.1); anything else,
// a refused REFER, or no final NOTIFY within TransferTimeout rings the
// phone back for the held call. Lifting the phone while the transfer is
// pending takes the held call back. A flash before hanging up returns to
// the held call; hanging up without a number rings the phone again for it.

// startTransfer holds the active call and gives dial tone for the target.
func (l *line) startTransfer() {
	c := l.call
	l.other, l.call = c, nil
	l.transfer = transferState{active: true}
	l.gen++
	l.state = stDialing // dial tone with flash watched (desired) ...
	// ... which rides on the MDCX that holds the call.
	if err := l.modifyConnection(c, mgcp.ModeInactive, nil); err != nil && c.connID != "" {
		// The gateway refused the hold: the connection still sends the
		// phone's audio to the party, who would hear the dialling. No
		// consultation then: the call goes on, with the error tone. The
		// dial tone's request was refused with the MDCX (RFC 3435 §2.3.5:
		// an embedded request takes effect only with its command).
		l.log.WithError(err).Info("hold refused: no transfer or consultation")
		l.other, l.call = nil, c
		l.transfer = transferState{}
		l.state = stConnected
		l.oneShot = append(l.oneShot, signal("L/e"))
		return
	}
	l.reoffer(c, SendOnly)
	l.dialBackstop()
}

// transferDialled records the target; the transfer happens on hang-up.
func (l *line) transferDialled(number string) {
	// Silence and wait for the hang-up (or a flash to go back).
	l.transfer.to = l.rule.ToSIP.Apply(number)
}

// cancelTransfer: a flash while transferring returns to the held call.
func (l *line) cancelTransfer() {
	c := l.other
	l.transfer = transferState{}
	if c == nil { // the held party hung up meanwhile
		l.playTone("L/ro")
		return
	}
	l.other, l.call = nil, c
	l.gen++
	l.state = stConnected
	l.resumeOrFail(c)
}

// completeTransfer runs on hang-up while transferring.
func (l *line) completeTransfer() {
	c, to := l.other, l.transfer.to
	l.transfer = transferState{}
	if c == nil { // the held party hung up meanwhile
		l.arm()
		return
	}
	l.referHeld(c, to, nil)
}

// referHeld transfers the held call c (l.other) to number with REFER; the
// phone is on hook. Without a number it rings again for c. With a
// consultation call (attended transfer), the Refer-To carries Replaces
// naming that call's dialog (RFC 3891 §3), so that c's party takes our
// place in it.
func (l *line) referHeld(c *call, to string, with *call) {
	if to != "" && c.dialog == nil && c.peer != nil && with == nil {
		l.referLocalHeld(c, to) // a local party: its line places the call (localxfer.go)
		return
	}
	if to == "" || c.dialog == nil {
		// Nothing to transfer to: ring the phone again for the held call.
		l.afterActiveEnded(true)
		return
	}
	target := l.referTarget(c, to)
	c.referring, c.referTo = true, to
	c.transfer = true
	c.referN++
	n := c.referN
	d := c.dialog
	var replaces *sip.Dialog
	if with != nil {
		replaces = with.dialog
	}
	l.inOrder(c, func() { // after the hold's re-INVITE
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		err := d.Refer(ctx, target, replaces)
		cancel()
		if err != nil {
			l.postWait(func() {
				if c.referN == n {
					l.transferFailed(c, "REFER: "+err.Error())
				}
			})
		}
	})
	// The phone is on hook: the line is idle (armed without the
	// embedded dial tone, dialsByItself) while the held call waits for
	// the outcome.
	l.arm()
	l.at(l.b.cfg.TransferTimeout, func() {
		if c.referring && c.referN == n {
			l.transferFailed(c, "no final NOTIFY for the REFER")
		}
	})
}

// referTarget is the Refer-To URI for a number: the number at the domain
// of the line's PBX (the peer of the call, else the line's own), where
// the transferee's new INVITE will be routed like any call of the line;
// not the transferee's own Contact, which a proxy in between would not
// route. Without a peer the sip package uses the far end's host.
func (l *line) referTarget(c *call, number string) string {
	p := c.peerRule
	if p == nil {
		p = l.rule.Peer
	}
	if p == nil {
		return number
	}
	host := p.Realm
	if host == "" {
		host = p.Host
		if p.Port != 0 && p.Port != 5060 {
			host = net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
		} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			host = "[" + host + "]"
		}
	}
	return "sip:" + number + "@" + host
}

// onReferStatus: a NOTIFY reported the progress of the transfer of c.
func (l *line) onReferStatus(c *call, status int, reason string, final bool) {
	if final && c.takenBack && !c.referring && !c.ended && status >= 200 && status < 300 {
		// The phone took the call back while its transfer was pending,
		// but the transferee went ahead (it had accepted the REFER): it
		// now talks to the target, and its dialog with us has no use
		// left (RFC 5589 §6.1: the transferor ends it). A consultation
		// call that was replaced is ended by the far end's BYE.
		c.takenBack = false
		c.result = "transferred to " + c.referTo + " after the phone took the call back"
		l.endCallOf(c, c.result, false)
		return
	}
	if !c.referring || !final {
		return // a 1xx: the transferee is still trying
	}
	if status >= 200 && status < 300 {
		c.referring = false
		c.result = "transferred to " + c.referTo
		l.endCallOf(c, c.result, false) // BYE: our part is done
		if x := l.call; x != nil && l.state == stIdle {
			// Attended: the consultation call was replaced at the far
			// end; what is left of it here ends too.
			x.result = "replaced by the transferred call"
			l.endCall(x.result, false)
		}
		return
	}
	l.transferFailed(c, "transfer failed: "+strconv.Itoa(status)+" "+reason)
}

// transferFailed: the transfer of the held call c did not happen; the
// phone rings again for it (with its caller id), unless the user took it
// back already or the line is busy with something else.
func (l *line) transferFailed(c *call, why string) {
	if !c.referring || c.ended {
		return
	}
	c.referring = false
	l.log.WithFields(logrus.Fields{"number": c.referTo, "why": why}).Info("transfer failed; ringing back")
	if l.other != c || l.state != stIdle {
		return
	}
	if l.call != nil {
		// Attended: ring the phone; picking up returns to the
		// consultation call, the first one still held.
		l.ringForConsultation()
		return
	}
	l.afterActiveEnded(true)
}

// ringForConsultation rings the on-hook phone for the consultation call
// of an attended transfer that did not happen (the first call may still
// be held). Unanswered, it ends like any call; a held call then rings.
func (l *line) ringForConsultation() {
	x := l.call
	x.recall = true
	x.ring = append([]mgcp.Event{signal("L/rg")}, l.callerIDOf(x)...)
	l.gen++
	l.state = stRinging
	// Not tied to the line's generation: the held call may end meanwhile.
	l.at(l.b.cfg.RingTimeout, func() {
		if l.state == stRinging && l.call == x && x.recall && !x.ended {
			x.status, x.reason = 480, "Temporarily Unavailable"
			x.result = "no answer"
			l.endCall(x.result, false)
			l.settle("L/ro") // rings for the held call, if any
		}
	})
}

// fixAttended runs after every input: an attended transfer whose held
// call ended before its outcome leaves the consultation call with the
// phone on hook; the phone rings for it.
func (l *line) fixAttended() {
	if l.state == stIdle && l.call != nil && l.other == nil && !l.call.ended && l.trunk == nil {
		l.ringForConsultation()
	}
}

// takeBack: the phone went off hook while the transfer of the held call
// was pending: the user talks to the held party again. A late failure is
// ignored; a late success ends that call (onReferStatus).
func (l *line) takeBack() {
	c := l.other
	c.referring, c.takenBack = false, true
	l.log.WithField("number", c.referTo).Info("transfer abandoned; back to the held call")
	if l.call != nil {
		l.backToConsultation()
		return
	}
	l.afterActiveEnded(false)
}

// backToConsultation: the phone is off hook again with the consultation
// call still up (attended transfer given up or failed): talking to C,
// A held.
func (l *line) backToConsultation() {
	l.call.recall = false
	l.gen++
	l.state = stConnected
	l.consult = true
}

// attendedTransfer runs when the phone hangs up while talking to the
// consultation call C with A held: REFER to A naming C's number with
// Replaces for C's dialog (RFC 3891); both calls wait for the final
// NOTIFY (referHeld). A failure rings the phone back for C, A held.
func (l *line) attendedTransfer() {
	a, c := l.other, l.call
	l.consult = false
	l.referHeld(a, c.number, c)
}

// referPending reports a held call waiting for the outcome of its
// transfer.
func (l *line) referPending() bool { return l.other != nil && l.other.referring }

type transferState struct {
	active bool   // the active call is held for a transfer
	to     string // the number dialled
}
