package bridge

// Retries of an outgoing INVITE that the far end answered with a
// redirect or with 422 (Session Interval Too Small). The same call (its
// connection, its offer) is placed again with a new dialog; the old
// dialog's remaining events are ignored (forward).

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// maxRedirects bounds the 3xx a call follows (RFC 3261 §8.1.3.4 leaves
// the number to the UAC; a loop of redirects must end).
const maxRedirects = 3

// max422 bounds the 422s a call follows: each proxy on the way may have
// its own minimum, so a second 422 with a larger Min-SE is followed too
// (RFC 4028 §7.4), a third is the end.
const max422 = 2

// retryInvite places the outgoing call c again after a 3xx or a 422,
// when that is allowed; it reports whether it did.
//
// A 3xx is followed at most maxRedirects times, to the first Contact of
// the redirect: its user is called through the same SIP peer (a redirect
// never sends the line's call, or its credentials, to a host of the far
// end's choosing). A 422 is retried with Session-Expires and Min-SE
// raised to the peer's Min-SE (RFC 4028 §7.4), max422 times at most and
// only while the Min-SE grows; a 422 without Min-SE (RFC 4028 §6 requires
// one) says nothing to retry with and ends the call.
func (l *line) retryInvite(c *call, e sip.Event) bool {
	if c.dialog == nil || c.dialog.Inbound || c.peerRule == nil || l.b.cfg.SIP == nil || l.call != c || l.state != stCalling {
		return false
	}
	to, se := c.number, time.Duration(0)
	switch {
	case e.Status >= 300 && e.Status < 400 && len(e.Contacts) > 0 && c.redirects < maxRedirects:
		u, _, err := sip.ParseReferTo(e.Contacts[0])
		if err != nil || u.User == "" {
			return false
		}
		c.redirects++
		to = u.User
	case e.Status == 422 && e.MinSE > c.minSE && c.retries422 < max422:
		c.retries422++
		c.minSE, se = e.MinSE, e.MinSE
	default:
		return false
	}
	offer, err := ToSIP(c.gwSDP, &c.origin, l.rule.Gateway.Codecs, SendRecv)
	if err != nil {
		return false
	}
	if c.cancel != nil {
		c.cancel()
	}
	ctx, cancel := context.WithCancel(l.ctx)
	p := c.peerRule
	from := l.account()
	if c.from != nil {
		from = *c.from // a trunk-originated call keeps its caller (cas.go)
	}
	d, err := l.b.cfg.SIP.Invite(ctx, sip.Call{From: from, To: to, Peer: net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Transport: p.Transport, SDP: offer.SDP, Headers: c.headers, FromHost: c.fromHost, SessionExpires: se, MinSE: se, PRACK: prackMode(p)})
	if err != nil {
		cancel()
		return false
	}
	l.log.WithFields(logrus.Fields{"status": e.Status, "number": to, "session_expires": se}).Info("outgoing call placed again")
	l.b.dialogs.Delete(c.dialog)
	c.cancel = cancel
	c.dialog = d
	c.number = to
	l.forward(c)
	return true
}
