package bridge

// Three-way calling (line feature three_way, default on), the way
// chan_mgcp gave it to analog phones: talking to A, a flash holds A and
// gives dial tone (transfer.go); the number dialled is called at once on
// a second connection of the endpoint (a consultation: A stays held).
// Another flash while talking to C joins the three: both connections go
// to mode confrnce, which makes the gateway mix them (RFC 3435 §2.3.3,
// connection modes), and A is taken off hold; no PBX conference is
// needed. In the conference a flash drops the party added last (C) and
// leaves A; hanging up ends both calls; a party that hangs up leaves the
// other one talking (its connection back to sendrecv).
//
// A gateway that cannot mix (quirk profile conference: false, or a
// refusal of the confrnce MDCX, typically 517) gets no conference: C is
// dropped, the phone hears the error tone (L/e) and A is resumed; unless
// the line names a conference at the PBX (features.conference_uri,
// pbxconf.go), where the three are then joined.
//
// During the consultation: a flash while C still rings gives up C and
// goes back to A; C failing or hanging up goes back to A; hanging up
// while C rings hands A over to C's number (a blind transfer, REFER);
// hanging up while talking to C is an attended transfer (transfer.go).
// Either leg may be a local call (localxfer.go).

import (
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// consultCall calls number from the dial tone of a flash, with the
// active call held (l.other); false when the number has no SIP route,
// for which the flash keeps its blind-transfer meaning.
func (l *line) consultCall(digits string) bool {
	number := l.rule.ToSIP.Apply(digits)
	rt := l.b.cfg.Rules.Load().RouteOutbound(number)
	if rt == nil || l.other == nil || (l.other.dialog == nil && l.other.peer == nil) {
		return false
	}
	if rt.Local {
		return l.consultLocal(digits, number) // localxfer.go
	}
	if rt.Peer == nil || l.b.cfg.SIP == nil {
		return false
	}
	l.transfer = transferState{}
	if l.b.peerDown(rt.Peer, l) {
		l.oneShot = append(l.oneShot, signal("L/e"))
		l.afterActiveEnded(false) // back to the held call
		return true
	}
	l.consult = true
	c := &call{id: l.b.newCallID(), number: number, dialled: digits, start: time.Now(), origin: newOrigin(), direction: "outgoing"}
	l.sipCall(c, rt.Peer)
	return true
}

// consulting reports a consultation call (l.call) with the first call
// held (l.other).
func (l *line) consulting() bool { return l.consult && l.call != nil && l.other != nil }

// joinConference joins the held call and the consultation call: both
// connections in confrnce mode, the held party taken off hold.
func (l *line) joinConference() {
	a, c := l.other, l.call
	if l.pbxConf != nil {
		return // the PBX conference is being set up
	}
	if !l.rule.Gateway.Quirks.Conference {
		l.conferenceRefused("the gateway's quirk profile has no conference")
		return
	}
	if err := l.modifyConnection(c, mgcp.ModeConfrnce, nil); err != nil {
		l.conferenceRefused("MDCX confrnce: " + err.Error())
		return
	}
	if err := l.modifyConnection(a, mgcp.ModeConfrnce, nil); err != nil {
		l.conferenceRefused("MDCX confrnce: " + err.Error())
		return
	}
	l.reoffer(a, SendRecv) // A hears the others again
	l.consult, l.conf = false, true
	l.gen++
	l.log.WithField("number", c.number).Info("three-way call")
}

// conferenceRefused: no mixing on this gateway; C is dropped with the
// error tone and A resumed.
func (l *line) conferenceRefused(why string) {
	if l.pbxConference(why) {
		return
	}
	l.log.WithField("why", why).Info("no three-way call; dropping the added party")
	c := l.call
	c.result = "three-way refused: " + why
	l.endCall(c.result, false)
	l.oneShot = append(l.oneShot, signal("L/e"))
	l.afterActiveEnded(false)
}

// dropLast: a flash in the conference drops the party added last (the
// consultation call); A goes on alone.
func (l *line) dropLast() {
	c := l.call
	c.result = "dropped from the three-way call"
	l.conf = false
	l.endCall(c.result, false)
	l.afterActiveEnded(false) // A: MDCX sendrecv
}

// endConference: the phone hung up in the conference: both calls end.
func (l *line) endConference() {
	l.conf = false
	if a := l.other; a != nil {
		l.endCallOf(a, "hung up", false)
	}
	l.endCall("hung up", false)
	l.arm()
}

// fixConference runs after every input: a conference or consultation
// that lost one of its calls becomes a plain call again; a call left in
// confrnce mode goes back to sendrecv.
func (l *line) fixConference() {
	l.fixPBXConf()
	if l.consult && (l.call == nil || l.other == nil) {
		l.consult = false
	}
	if !l.conf || (l.call != nil && l.other != nil) {
		return
	}
	l.conf = false
	if c := l.call; c != nil && !c.ended && c.connID != "" {
		_ = l.modifyConnection(c, mgcp.ModeSendRecv, nil)
	}
}

// connMode is the mode for a call's connection when the far end asks for
// sendrecv: confrnce while the call is in the conference.
func (l *line) connMode(c *call, m mgcp.ConnectionMode) mgcp.ConnectionMode {
	if l.conf && m == mgcp.ModeSendRecv && (c == l.call || c == l.other) {
		return mgcp.ModeConfrnce
	}
	return m
}
