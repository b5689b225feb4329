package bridge

import (
	"context"
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

// canWait reports whether an incoming call may wait on this line.
func (l *line) canWait() bool {
	c := l.call
	return l.rule.Features.CallWaiting && l.trunk == nil && l.state == stConnected && c != nil &&
		c.dialog != nil && c.peer == nil && c.fork == nil && l.other == nil && l.b.accepting(l.rule.Gateway)
}

// offerWaiting makes an incoming call wait on a talking line.
func (l *line) offerWaiting(d *sip.Dialog, done chan struct{}) {
	c, remote, ok := l.incomingOr488(d, done)
	if !ok {
		return
	}
	l.b.active.Add(1)
	if err := l.createConnection(c, mgcp.ModeInactive, remote, nil, nil); err != nil {
		status, reason := StatusForMGCP(err)
		_ = d.Reject(status, reason)
		c.result = "CRCX failed: " + err.Error()
		l.finish(c, nil)
		return
	}
	l.other = c
	_ = l.request(l.offHookEvents(), []mgcp.Event{signal("L/wt")}, "")
	_ = d.Ring()
	l.forward(c)
	gen := c.gen
	time.AfterFunc(l.b.cfg.RingTimeout, func() {
		l.postWait(func() {
			if l.other == c && c.answered.IsZero() && c.gen == gen {
				_ = d.Reject(480, "Temporarily Unavailable")
				c.result = "no answer"
				l.endCallOf(c, c.result, true)
				_ = l.request(l.offHookEvents(), nil, "")
			}
		})
	})
}

// onFlash swaps the active call and the waiting or held one; with only
// one call it starts a transfer (transfer.go), and while transferring it
// goes back to the held call.
func (l *line) onFlash() {
	if l.transfer.active {
		l.cancelTransfer()
		return
	}
	if l.state == stConnected && l.call != nil && l.other == nil && l.call.dialog != nil && l.call.peer == nil &&
		l.rule.Features.Transfer {
		l.startTransfer()
		return
	}
	if l.state != stConnected || l.call == nil || l.other == nil {
		return
	}
	active, other := l.call, l.other
	l.hold(active)
	if other.answered.IsZero() {
		// Answer the waiting call.
		other.answered = time.Now()
		_ = l.modifyConnection(other, mgcp.ModeSendRecv, nil)
		if tr, err := ToSIP(other.gwSDP, &other.origin, other.codecs, SendRecv); err == nil {
			d := other.dialog
			go func() { _ = d.Answer(tr.SDP) }()
		}
	} else {
		l.resume(other)
	}
	l.call, l.other = other, active
	l.gen++
	_ = l.request(l.offHookEvents(), nil, "") // stops the waiting tone
}

// hold puts a call on hold: no media from the gateway, a=sendonly to the
// far end (RFC 3264 §8.4).
func (l *line) hold(c *call) {
	_ = l.modifyConnection(c, mgcp.ModeInactive, nil)
	l.reoffer(c, SendOnly)
}

// resume takes a call off hold.
func (l *line) resume(c *call) {
	_ = l.modifyConnection(c, mgcp.ModeSendRecv, nil)
	l.reoffer(c, SendRecv)
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
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
		defer cancel()
		if _, err := d.Reinvite(ctx, tr.SDP); err != nil {
			l.log.WithError(err).Info("bridge: hold/resume re-INVITE failed")
		}
	}()
}

// onOtherSIP handles the events of the waiting or held call.
func (l *line) onOtherSIP(c *call, e sip.Event) {
	switch e.Kind {
	case sip.EventCancelled, sip.EventBye, sip.EventFailed:
		c.result = "far end hung up"
		if e.Kind == sip.EventCancelled {
			c.result = "cancelled"
		}
		waiting := c.answered.IsZero()
		l.endCallOf(c, c.result, true)
		if waiting {
			_ = l.request(l.offHookEvents(), nil, "") // stops the waiting tone
		}
	case sip.EventReinvite, sip.EventUpdate:
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
// end hung up), the held call is resumed.
func (l *line) afterActiveEnded(onHook bool) {
	c := l.other
	l.other = nil
	l.call = c
	l.gen++
	c.gen = l.gen
	if onHook {
		c.recall = true
		l.state = stRinging
		_ = l.request([]mgcp.RequestedEvent{evOffHook}, []mgcp.Event{signal("L/rg")}, "")
		return
	}
	l.state = stConnected
	_ = l.request(l.offHookEvents(), nil, "")
	if c.answered.IsZero() {
		// The waiting call was never answered: answer it now.
		c.answered = time.Now()
		_ = l.modifyConnection(c, mgcp.ModeSendRecv, nil)
		if tr, err := ToSIP(c.gwSDP, &c.origin, c.codecs, SendRecv); err == nil {
			d := c.dialog
			go func() { _ = d.Answer(tr.SDP) }()
		}
		return
	}
	l.resume(c)
}

// pickUpRecall: the phone went off hook while ringing for a call that
// was waiting or held when it hung up.
func (l *line) pickUpRecall(c *call) {
	c.recall = false
	l.afterActiveEnded(false)
	l.call = c
}
