package bridge

import (
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// Local switching: a call between two lines of this mgsip is set up with
// one connection on each endpoint, each given the other's SDP, without
// SIP. The two lines talk by posting to each other's goroutine; neither
// ever waits for the other.

// localCall places a call from this line to the line registered as number.
func (l *line) localCall(c *call, number string) {
	callee := l.b.lineByUser(number)
	if callee == nil || callee == l {
		l.log.WithField("number", number).Info("no local line with that number")
		l.playTone("L/ro")
		return
	}
	c.peer, c.peerID = callee, c.id
	l.adopt(c)
	l.state = stCalling
	if err := l.createConnection(c, mgcp.ModeRecvOnly, nil); err != nil {
		c.peer = nil
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	id, sdp, user, name := c.id, c.gwSDP, l.rule.User, l.rule.DisplayName
	caller := l
	callee.postWait(func() { callee.onLocalOffer(caller, id, sdp, user, name) })
}

// onLocalOffer: another line calls this one.
func (l *line) onLocalOffer(caller *line, id string, sdp []byte, number, name string) {
	busy := func() { caller.postWait(func() { caller.onLocalBusy(id) }) }
	if !l.free() || !l.b.accepting(l.rule.Gateway) {
		busy()
		return
	}
	tr, err := ToGateway(sdp, l.rule.Gateway.Codecs)
	if err != nil {
		busy()
		return
	}
	c := &call{id: id, direction: "local", peer: caller, peerID: id, peerSDP: sdp, number: number, name: name, start: time.Now(),
		codecs: tr.Codecs, callee: true}
	l.adopt(c)
	l.state = stRinging
	c.ring = append([]mgcp.Event{signal("L/rg")}, l.callerIDOf(c)...)
	if err := l.createConnection(c, mgcp.ModeRecvOnly, tr.SDP); err != nil {
		c.peer = nil // the caller hears busy instead of a hang-up
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		busy()
		return
	}
	mine := c.gwSDP
	caller.postWait(func() { caller.onLocalRinging(id, mine) })
	l.callAfter(c, l.b.cfg.RingTimeout, func() {
		if l.state == stRinging && l.call == c {
			l.failCall(c, "no answer", "L/ro")
		}
	})
}

// localLeg finds the line's local leg the other line's posts name by id
// (its own leg's MGCP call id): the active call, or the new local call
// of a REFER the active call received (localxfer.go).
func (l *line) localLeg(id string) *call {
	c := l.call
	if c == nil {
		return nil
	}
	if x := c.xfer; x != nil && x.peer != nil && x.peerID == id {
		return x
	}
	if c.peer == nil || c.peerID != id {
		return nil
	}
	return c
}

// onLocalRinging: the called line rings; its SDP arrives with the
// ringback request embedded in the MDCX.
func (l *line) onLocalRinging(id string, sdp []byte) {
	c := l.localLeg(id)
	if c != nil && c.xferOf != nil {
		c.peerSDP = sdp
		l.notifyRefer(c.xferOf, 180, "Ringing") // the phone keeps talking to the transferor meanwhile
		return
	}
	if c == nil || l.state != stCalling {
		return
	}
	c.peerSDP = sdp
	c.ringback = true
	if tr, err := ToGateway(sdp, l.rule.Gateway.Codecs); err == nil {
		_ = l.modifyConnection(c, mgcp.ModeRecvOnly, tr.SDP)
	}
}

// onLocalAnswered: the called line went off hook.
func (l *line) onLocalAnswered(id string) {
	c := l.localLeg(id)
	if c != nil && c.xferOf != nil {
		l.referredLocalAnswered(c)
		return
	}
	if c == nil || l.state != stCalling {
		return
	}
	l.state = stConnected
	c.ringback = false
	l.markAnswered(c)
	if err := l.modifyConnection(c, mgcp.ModeSendRecv, nil); err != nil {
		l.failCall(c, failedWhy("MDCX", err), "L/ro")
	}
}

// onLocalBusy: the called line could not take the call.
func (l *line) onLocalBusy(id string) {
	c := l.localLeg(id)
	if c == nil {
		return
	}
	c.peer = nil
	if c.xferOf != nil {
		l.transferLegFailed(c.xferOf, c, 486, "Busy Here", true)
		return
	}
	c.result = "busy"
	l.endCall("busy", true)
	l.settle("L/bz")
}

// onLocalHangup: the other line hung up (or gave up ringing). The local
// call may be this line's held one (call waiting swapped it out): it just
// ends; if it was the active one and a call waits or is held, that call
// is taken up as when a SIP far end hangs up.
func (l *line) onLocalHangup(id string) {
	if o := l.other; o != nil && o.peerID == id && o.peer != nil {
		o.peer = nil
		o.result = "far end hung up"
		l.endCallOf(o, o.result, true)
		return
	}
	c := l.localLeg(id)
	if c == nil {
		return
	}
	c.peer = nil // do not echo the hang-up back
	if c.xfer != nil && c.xfer.peer == nil {
		// The transferor hung up while this line calls the number it
		// was given (localxfer.go): the connection waits for that call.
		c.gone = true
		return
	}
	if c.xferOf != nil {
		l.transferLegFailed(c.xferOf, c, 480, "Temporarily Unavailable", true)
		return
	}
	if c.answered.IsZero() && l.state == stCalling {
		c.result = "no answer"
	} else {
		c.result = "far end hung up"
	}
	l.endCall(c.result, true)
	if l.other != nil {
		l.afterActiveEnded(!l.offHook)
		return
	}
	l.settle("L/ro")
}
