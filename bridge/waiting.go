package bridge

import (
	"context"
	"slices"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// Call waiting (line feature call_waiting, default on): a second incoming
// call to a line that is talking gets a second connection (inactive) and
// the call-waiting tone (L/wt, RFC 3660 §2.4); a hook flash holds the
// first call (re-INVITE a=sendonly, MDCX inactive) and answers or resumes
// the other; each flash swaps again. Hanging up with a call on hold rings
// the phone again for it; if the far end of the active call hangs up, the
// held one is resumed.

// canWait reports whether an incoming call may wait on this line. The
// active call may be a SIP call or an answered locally switched one (the
// flash then holds it with an inactive connection only: the other line
// has no SIP dialog to be told).
func (l *line) canWait() bool {
	c := l.call
	return l.rule.Features.CallWaiting && l.trunk == nil && l.state == stConnected && c != nil && c.xfer == nil &&
		(c.dialog != nil || (c.peer != nil && !c.answered.IsZero())) && c.fork == nil && l.other == nil &&
		l.b.accepting(l.rule.Gateway)
}

// offerWaiting makes an incoming call wait on a talking line.
func (l *line) offerWaiting(d *sip.Dialog, done chan struct{}) {
	c, remote, ok := l.incomingOr488(d, done)
	if !ok {
		return
	}
	l.count(c)
	if err := l.createConnection(c, mgcp.ModeInactive, remote); err != nil {
		c.status, c.reason = StatusForMGCP(err)
		l.endCallOf(c, failedWhy("CRCX", err), false)
		return
	}
	l.other = c
	c.waiting = true
	// Caller id on call waiting (CIDCW): the off-hook caller id goes
	// with the waiting tone in one signal list, S: L/wt,L/ci(...) (RFC
	// 3660 §2.4; what chan_mgcp sends), when the gateway can send it.
	l.oneShot = append(append(l.oneShot, signal("L/wt")), l.callerIDOf(c)...)
	_ = d.Ring()
	l.forward(c)
	l.at(l.b.cfg.RingTimeout, func() {
		if l.other == c && c.answered.IsZero() {
			c.status, c.reason = 480, "Temporarily Unavailable"
			l.endCallOf(c, "no answer", false)
		}
	})
}

// onFlash swaps the active call and the waiting or held one; with only
// one call it starts a transfer (transfer.go), and while transferring it
// goes back to the held call. A flash the state has no use for is
// ignored (its NTFY is still followed by a request: sync).
func (l *line) onFlash() {
	if l.transfer.active {
		l.cancelTransfer()
		return
	}
	if l.call != nil && l.call.xfer != nil {
		return // the far end is transferring the line: wait for it
	}
	if l.conf {
		l.dropLast()
		return
	}
	if l.pbxFlash() {
		return // the PBX conference's added party dropped (pbxconf.go)
	}
	if l.consulting() {
		if l.call.answered.IsZero() {
			// C still rings: give it up, back to A.
			l.call.result = "abandoned by a flash"
			l.endCall(l.call.result, false)
			l.afterActiveEnded(false)
			return
		}
		l.joinConference()
		return
	}
	if l.state == stConnected && l.call != nil && l.call.resumeRefused {
		// The gateway refused to take the line's call off hold (a swap
		// back, the end of a consultation or transfer): this flash tries
		// again, whatever else it would mean.
		_ = l.resume(l.call)
		return
	}
	if l.state == stConnected && l.call != nil && l.other == nil && l.rule.Features.Transfer &&
		((l.call.dialog != nil && l.call.peer == nil) || l.call.answeredLocal()) {
		l.startTransfer()
		return
	}
	if l.state != stConnected || l.call == nil || l.other == nil {
		return
	}
	active, other := l.call, l.other
	if err := l.hold(active); err != nil && active.connID != "" {
		// The gateway refused the hold: the active party would hear the
		// other call. No swap; the phone hears the error tone (as for a
		// refused hold before a transfer, transfer.go).
		l.log.WithError(err).Info("hold refused: no swap")
		l.oneShot = append(l.oneShot, signal("L/e"))
		return
	}
	if other.answered.IsZero() {
		if !l.answerWaiting(other) {
			// The waiting call could not be answered (it got its final
			// answer, 488 or the MDCX's status): back to the first call,
			// with the error tone.
			l.errorTone()
			_ = l.resume(active)
			return
		}
	} else if !l.resume(other) {
		// The gateway refused to take the held call off hold (resume
		// left it held, no re-INVITE, error tone): swap nothing, as for
		// a refused hold; the first call is taken back off hold and the
		// next flash tries the swap again.
		_ = l.resume(active)
		return
	}
	l.call, l.other = other, active
	l.gen++
}

// answerWaiting answers a call that waited: its connection sends and
// receives, the far end gets our 200. false: the call could not be
// answered and is ended (its INVITE gets a final error answer).
func (l *line) answerWaiting(c *call) bool {
	tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, SendRecv)
	if err != nil {
		c.status, c.reason = 488, "Not Acceptable Here"
		l.endCallOf(c, err.Error(), false)
		return false
	}
	if err := l.modifyConnection(c, mgcp.ModeSendRecv, nil); err != nil {
		c.status, c.reason = StatusForMGCP(err)
		l.endCallOf(c, failedWhy("MDCX", err), false)
		return false
	}
	l.markAnswered(c)
	d := c.dialog
	// In the call's order: a re-INVITE for the next flash (hold) waits
	// until our 200 is ACKed. RFC 3261 §14.1: no new INVITE transaction
	// in a dialog while one is in progress in either direction; and the
	// session's state is sipgo's, not safe for two senders at once.
	l.inOrder(c, func() { _ = d.Answer(tr.SDP) })
	return true
}

// hold puts a call on hold: no media from the gateway, a=sendonly to the
// far end (RFC 3264 §8.4). A refused MDCX sends no re-INVITE.
func (l *line) hold(c *call) error {
	if err := l.modifyConnection(c, mgcp.ModeInactive, nil); err != nil && c.connID != "" {
		return err
	}
	l.reoffer(c, SendOnly)
	return nil
}

// resume takes a call off hold: MDCX sendrecv, then the far end (a SIP
// party) gets a re-INVITE a=sendrecv (RFC 3264 §8.4). The gateway
// refusing the MDCX (any error code, or no answer) leaves the call held,
// as a refused hold leaves it talking: the connection is still inactive,
// so the far end is not told sendrecv (it stays on hold, as its last
// offer said), the phone hears the error tone and the call is marked
// (resumeRefused) so that the next flash tries again (onFlash). false:
// refused; a call without a connection resumes as before.
func (l *line) resume(c *call) bool {
	if err := l.modifyConnection(c, mgcp.ModeSendRecv, nil); err != nil && c.connID != "" {
		l.log.WithError(err).Info("resume refused: the call stays held")
		c.resumeRefused = true
		l.errorTone()
		return false
	}
	c.resumeRefused = false
	l.reoffer(c, SendRecv)
	return true
}

// errorTone adds the error tone (L/e) to the signals of the next
// request, once.
func (l *line) errorTone() {
	if !slices.ContainsFunc(l.oneShot, func(s mgcp.Event) bool { return s.Is("L", "e") }) {
		l.oneShot = append(l.oneShot, signal("L/e"))
	}
}

// offerCtx is the context of the call's re-INVITEs (call.offers),
// made on the line's goroutine the first time one is queued.
func (c *call) offerCtx() context.Context {
	if c.offers == nil {
		c.offers, c.stopOffers = context.WithCancel(context.Background())
	}
	return c.offers
}

// reinviteTimeout bounds one of a call's own re-INVITEs.
const reinviteTimeout = 35 * time.Second

// reinvite sends offer as a re-INVITE in c's dialog, in order with the
// call's other requests (a REFER that follows a hold must not overtake
// it), bounded by reinviteTimeout and by the call's end (offerCtx: the
// BYE then goes at once). done gets the answer or the error on the
// sending goroutine, not the line's.
func (l *line) reinvite(c *call, offer []byte, done func(answer []byte, err error)) {
	d := c.dialog
	offers := c.offerCtx()
	l.inOrder(c, func() {
		ctx, cancel := context.WithTimeout(offers, reinviteTimeout)
		ans, err := d.Reinvite(ctx, offer)
		cancel()
		done(ans, err)
	})
}

// reoffer sends a re-INVITE with the gateway's SDP in direction dir, on
// its own goroutine (the far end may take its time).
func (l *line) reoffer(c *call, dir Direction) {
	if c.dialog == nil {
		return
	}
	tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, dir)
	if err != nil {
		return
	}
	d := c.dialog
	l.reinvite(c, tr.SDP, func(ans []byte, err error) {
		if err != nil {
			l.log.WithError(err).Info("hold/resume re-INVITE failed")
			return
		}
		if len(ans) == 0 {
			return
		}
		// The answer is the far end's description from now on (RFC 3264
		// §8): its address may move (a PBX answers a hold from its music
		// server and the resume from the phone) and its direction
		// changes. The gateway gets it, but only while the call is
		// still where the offer put it: an answer that comes after the
		// call moved on (held again, resumed, mixed) is not the
		// description to use now. A resumed call takes the mode that
		// mirrors the answer (a far end that still holds it answers
		// sendonly).
		l.postWait(func() {
			want := mgcp.ModeInactive
			if dir == SendRecv {
				want = mgcp.ModeSendRecv
			}
			if c.ended || c.dialog != d || c.connID == "" || c.mode != want {
				return
			}
			g, err := ToGateway(ans, l.rule.Gateway.Codecs)
			if err != nil {
				l.log.WithError(err).Warn("the far end's answer to a hold/resume re-INVITE is not usable SDP; the gateway keeps the previous description")
			} else {
				mode := c.mode
				if dir == SendRecv {
					mode = g.Mode // a far end that still holds the call answers sendonly
				}
				if err := l.modifyConnection(c, mode, g.SDP); err != nil {
					l.log.WithError(err).Info("the far end's answer to a hold/resume re-INVITE not passed to the gateway")
				}
			}
		})
	})
}

// onOtherSIP handles the events of the waiting or held call.
func (l *line) onOtherSIP(c *call, e sip.Event) {
	switch e.Kind {
	case sip.EventCancelled, sip.EventBye, sip.EventFailed:
		c.result = "far end hung up"
		if e.Kind == sip.EventCancelled {
			c.result = "cancelled"
		}
		l.endCallOf(c, c.result, true) // the waiting tone stops with the next request
	case sip.EventReferStatus:
		l.onReferStatus(c, e.Status, e.Reason, e.Final)
	case sip.EventReinvite, sip.EventUpdate:
		if l.conf {
			l.answerOffer(c, e) // in the conference: as the active call
			return
		}
		// The held party changed its media: keep our side on hold.
		if tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, SendOnly); err == nil {
			_ = c.dialog.AcceptReinvite(tr.SDP)
		} else {
			_ = c.dialog.RejectReinvite(488, "Not Acceptable Here")
		}
	}
}

// afterActiveEnded is called once the active call is gone while another
// remains: on hook, the phone rings again for it; still off hook (the far
// end hung up), the held call is resumed or the waiting one answered.
func (l *line) afterActiveEnded(onHook bool) {
	if onHook && l.call == nil && l.other != nil && l.other.referring {
		// The held call waits for the outcome of its transfer (the
		// consultation call of an attended transfer ended first).
		l.gen++
		l.state = stIdle
		return
	}
	c := l.other
	l.other = nil
	l.call = c
	l.gen++
	c.gen = l.gen
	l.transfer = transferState{}
	l.consult, l.conf = false, false
	c.referring = false // back with the user: a late NOTIFY changes nothing
	if onHook {
		c.recall = true
		c.ring = append([]mgcp.Event{signal("L/rg")}, l.callerIDOf(c)...) // who rings back
		l.state = stRinging
		// Nobody picks up: the held or waiting call is ended after the
		// ring timeout, like any unanswered call.
		l.callAfter(c, l.b.cfg.RingTimeout, func() {
			if l.state == stRinging && l.call == c && c.recall {
				c.status, c.reason = 480, "Temporarily Unavailable"
				l.failCall(c, "no answer", "L/ro")
			}
		})
		return
	}
	l.state = stConnected
	if c.answered.IsZero() {
		l.answerWaiting(c)
		if c.ended {
			l.settle("L/ro")
		}
		return
	}
	l.resume(c)
}

// pickUpRecall: the phone went off hook while ringing for a call that
// was waiting or held when it hung up.
func (l *line) pickUpRecall() {
	c := l.call
	c.recall = false
	l.other, l.call = c, nil
	l.afterActiveEnded(false)
}
