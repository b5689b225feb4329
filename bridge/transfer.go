package bridge

import (
	"context"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// Blind transfer (line feature transfer, default on), the analog way:
// flash during a call holds it and gives dial tone; the number dialled is
// where the held party goes: hanging up sends REFER (RFC 3515) on the held
// call and, once the far end accepts it, BYE. A flash before hanging up
// returns to the held call; hanging up without a number (or with the
// REFER refused) rings the phone again for it.

// startTransfer holds the active call and gives dial tone for the target.
func (l *line) startTransfer() {
	c := l.call
	l.hold(c)
	l.other, l.call = c, nil
	l.transfer = transferState{active: true}
	l.gen++
	l.state = stDialing
	dm := ""
	if l.rule.DialPlan != nil {
		dm = l.rule.DialPlan.DigitMap
	}
	_ = l.request([]mgcp.RequestedEvent{evOnHook, evFlash, evDigits}, []mgcp.Event{signal("L/dl")}, dm)
}

// transferDialled records the target; the transfer happens on hang-up.
func (l *line) transferDialled(number string) {
	l.transfer.to = l.rule.ToSIP.Apply(number)
	// Silence and wait for the hang-up (or a flash to go back).
	_ = l.request([]mgcp.RequestedEvent{evOnHook, evFlash}, nil, "")
}

// cancelTransfer: a flash while transferring returns to the held call.
func (l *line) cancelTransfer() {
	c := l.other
	l.transfer = transferState{}
	if c == nil { // the held party hung up meanwhile
		l.toneAndWait("L/ro")
		return
	}
	l.other, l.call = nil, c
	l.gen++
	l.state = stConnected
	l.resume(c)
	_ = l.request(l.offHookEvents(), nil, "")
}

// completeTransfer runs on hang-up while transferring.
func (l *line) completeTransfer() {
	c, to := l.other, l.transfer.to
	l.transfer = transferState{}
	if c == nil { // the held party hung up meanwhile
		l.arm()
		return
	}
	if to != "" && c != nil && c.dialog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		err := c.dialog.Refer(ctx, to, nil)
		cancel()
		if err == nil {
			c.result = "transferred to " + to
			l.endCallOf(c, c.result, false)
			l.arm()
			return
		}
		l.log.WithError(err).WithField("number", to).Info("bridge: transfer refused; ringing back")
	}
	// Nothing to transfer to: ring the phone again for the held call.
	l.call = nil
	l.afterActiveEnded(true)
}

type transferState struct {
	active bool   // the active call is held for a transfer
	to     string // the number dialled
}
