package bridge

// Calls between a residential line and a CAS trunk channel of this
// mgsip, switched locally: one connection on each endpoint, each given
// the other's SDP, as between two lines (local.go), with the trunk's
// RFC 3064 signalling (cas.go) in place of the second phone.
//
// A line's dialled number whose outbound route names a trunk group
// (trunk:) seizes a free channel of that group (a group without a CAS
// package, signaling: none, has no seizure: its channel is connected at
// once, as for a SIP call to it): the line's connection
// is created (receive-only), then the group's channels are offered the
// call in its hunting order, as a SIP call to the group is (a hunt that
// runs on its own goroutine, so that no line waits for another). The
// channel takes it when idle: its connection is created with the line's
// SDP (send-only: a CAS trunk gives call progress in band) and
// sup(addr(number), ani(calling number)) goes out. oc: the channel is
// the call's; the line's connection gets the channel's SDP and hears
// the trunk (ringback or busy in band). of, glare lost under the
// group's rule (yield), or a channel that cannot take it: the next
// channel; none left: busy tone. ans: both connections send-receive.
// Either side's release ends the other (the trunk gets rel, or the line
// reorder, as when a far end hangs up).
//
// A trunk-originated call whose number (after the group's to_sip
// rewrite) matches an outbound route with local: true rings the line
// with that SIP user, with the ANI as caller id; its answer answers the
// trunk (ans). No such line: reorder toward the trunk.

import (
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/sirupsen/logrus"
)

// trunkChannels returns the running channels of a trunk group in the
// order its hunting rule gives for the next call.
func (b *Bridge) trunkChannels(tr *mapping.TrunkRule) []*line {
	b.mu.Lock()
	defer b.mu.Unlock()
	chans := b.trunks[tr.Name]
	start := 0
	if tr.Hunting == "round-robin" && len(chans) > 0 {
		start = b.nextHunt[tr.Name] % len(chans)
		b.nextHunt[tr.Name] = start + 1
	}
	out := make([]*line, 0, len(chans))
	for i := range chans {
		out = append(out, chans[(start+i)%len(chans)])
	}
	return out
}

// trunkCall places the line's call c (number already rewritten toward
// SIP and routed) out of trunk group tr.
func (l *line) trunkCall(c *call, tr *mapping.TrunkRule) {
	log := l.log.WithFields(logrus.Fields{"number": c.number, "trunk": tr.Name})
	l.adopt(c)
	l.state = stCalling
	if err := l.createConnection(c, mgcp.ModeRecvOnly, nil); err != nil {
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	// The channel's own ring timer ends a seizure nobody answers; this
	// one is the backstop for a hunt that never hears back.
	l.callAfter(c, l.b.cfg.RingTimeout+l.b.cfg.ToneTimeout, func() {
		if l.call == c && l.state == stCalling {
			l.failCall(c, "no answer", "L/ro")
		}
	})
	chans := l.b.trunkChannels(tr)
	if !l.b.track() {
		l.failCall(c, "stopping", "L/ro")
		return
	}
	log.Info("call out of a trunk group")
	caller, id, sdp, number, ani := l, c.id, c.gwSDP, c.number, l.rule.User
	go func() {
		defer l.b.wg.Done()
		for _, ch := range chans {
			taken := make(chan bool, 1)
			if !ch.post(func() { ch.onLineSeize(caller, id, sdp, number, ani, taken) }) {
				continue
			}
			if l.b.awaitTaken(taken) {
				return
			}
		}
		caller.postWait(func() { caller.onTrunkBusy(id) })
	}()
}

// onLineSeize: a line's call offered to this channel by its hunt; taken
// gets the outcome (false at once when the channel cannot take it, else
// once the gateway reports oc, of or a glare).
func (l *line) onLineSeize(caller *line, id string, sdp []byte, number, ani string, taken chan<- bool) {
	if !l.free() || !l.b.accepting(l.rule.Gateway) {
		taken <- false
		return
	}
	tr, err := ToGateway(sdp, l.rule.Gateway.Codecs)
	if err != nil {
		taken <- false
		return
	}
	c := &call{id: id, direction: "local", peer: caller, peerID: id, number: ani, dialled: number, start: time.Now(), codecs: tr.Codecs, callee: true}
	l.adopt(c)
	l.state = stRinging
	if err := l.createConnection(c, mgcp.ModeSendOnly, tr.SDP); err != nil {
		c.peer = nil // the hunt goes on; the caller is not hung up
		taken <- false
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	if l.cas() == "" {
		// No line signalling to drive (signaling: none): the channel
		// is the call's and answers at once, as for a SIP call.
		taken <- true
		l.lineSeized(c)
		l.answer()
		return
	}
	if l.trunk.CallerID.Presentation == "restricted" {
		ani = ""
	}
	l.casSeizeFor(c, taken, number, ani)
}

// lineSeized: the address of a line's call went out (oc): the channel is
// the call's; the caller's connection gets this channel's SDP.
func (l *line) lineSeized(c *call) {
	caller, id, sdp, ch := c.peer, c.id, c.gwSDP, l
	if caller == nil {
		return
	}
	caller.postWait(func() { caller.onTrunkSeized(ch, id, sdp) })
}

// onTrunkSeized: a channel took the line's call c (id). The line hears
// the trunk from now on (call progress is in band on a CAS trunk). A
// call that is gone meanwhile (the phone hung up during the hunt) is
// released on the channel.
func (l *line) onTrunkSeized(ch *line, id string, sdp []byte) {
	c := l.call
	if c == nil || c.id != id || c.ended || c.peer != nil || l.state != stCalling {
		ch.postWait(func() { ch.onLocalHangup(id) })
		return
	}
	c.peer, c.peerID = ch, id
	tr, err := ToGateway(sdp, l.rule.Gateway.Codecs)
	if err == nil {
		err = l.modifyConnection(c, mgcp.ModeRecvOnly, tr.SDP)
	}
	if err != nil {
		l.failCall(c, failedWhy("MDCX", err), "L/ro") // releases the channel
	}
}

// onTrunkBusy: no channel of the group took the line's call: busy tone.
func (l *line) onTrunkBusy(id string) {
	c := l.call
	if c == nil || c.id != id || c.peer != nil || l.state != stCalling {
		return
	}
	l.log.WithField("number", c.number).Info("no free trunk channel")
	c.result = "all trunk channels busy"
	l.endCall(c.result, true)
	l.settle("L/bz")
}

// localTarget says whether a trunk-originated call for number is
// switched to a line of this mgsip (its outbound route is local), and
// which (nil: no line has that number).
func (l *line) localTarget(number string) (*line, bool) {
	rt := l.b.cfg.Rules.Load().RouteOutbound(number)
	if rt == nil || !rt.Local {
		return nil, false
	}
	callee := l.b.lineByUser(number)
	if callee == nil || callee.trunk != nil {
		return nil, true
	}
	return callee, true
}

// trunkToLine rings callee for the trunk's call c, presenting the ANI
// (or the group's caller_id) as the caller.
func (l *line) trunkToLine(c *call, callee *line, ani string) {
	number, name := l.trunkCallerID(ani)
	if l.trunk.CallerID.Presentation == "restricted" {
		number, name = "", "Anonymous"
	}
	c.direction = "local"
	c.peer, c.peerID = callee, c.id
	c.name = ani
	l.adopt(c)
	l.state = stCalling
	if err := l.createConnection(c, mgcp.ModeRecvOnly, nil); err != nil {
		c.peer = nil
		l.failCall(c, failedWhy("CRCX", err), "L/ro")
		return
	}
	l.log.WithFields(logrus.Fields{"number": c.number, "line": callee.rule.ID}).Info("trunk call switched to a local line")
	id, sdp, caller := c.id, c.gwSDP, l
	callee.postWait(func() { callee.onLocalOffer(caller, id, sdp, number, name) })
}
