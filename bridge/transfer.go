package bridge

import (
	"context"
	"time"
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
	l.other, l.call = c, nil
	l.transfer = transferState{active: true}
	l.gen++
	l.state = stDialing // dial tone with flash watched (desired) ...
	l.hold(c)           // ... which rides on the MDCX that holds the call
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
	l.resume(c)
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
		c.transfer = true
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
