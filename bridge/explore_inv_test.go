package bridge_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/pion/sdp/v3"
)

// Invariants checked during a plan, not only at rest: after every action
// the explorer takes snapshots of the bridge's published state, the
// strict gateway and the SIP far ends, and lists what is wrong in them,
// until nothing is (the action has settled). Right after an action much
// is legitimately in flight (a CRCX answered but not yet published, an
// MDCX retransmitted under datagram loss), so a violation counts only
// when it outlasts settleWindow: the same violation (same key: invariant,
// endpoint, call, connection) seen in every snapshot for that long.

// settleWindow is how long a violation may last. It is above what one
// MGCP transaction may take here (TMax 1 s, then the line's error
// handling) and a far end's re-INVITE answer.
const settleWindow = 3 * time.Second

// violation is one broken invariant in a snapshot.
type violation struct{ key, why string }

// rtpTarget is the RTP target of an SDP's audio stream.
type rtpTarget struct {
	addr string
	port int
	dir  string
}

func (m rtpTarget) String() string { return fmt.Sprintf("%s:%d %s", m.addr, m.port, m.dir) }

// mediaOf reads the audio stream's address, port and direction
// (RFC 4566 §5.7, §5.14; RFC 3264 §5.1: sendrecv by default).
func mediaOf(b []byte) (rtpTarget, bool) {
	if len(b) == 0 {
		return rtpTarget{}, false
	}
	// The strict gateway's o= line names the connection (o=- A001 1 ...),
	// which pion/sdp refuses; the origin does not matter here.
	text := originLine.ReplaceAllString(string(b), "o=- 0 0 IN IP4 0.0.0.0\r")
	var s sdp.SessionDescription
	if err := s.UnmarshalString(text); err != nil {
		return rtpTarget{}, false
	}
	for _, md := range s.MediaDescriptions {
		if md.MediaName.Media != "audio" {
			continue
		}
		m := rtpTarget{port: md.MediaName.Port.Value, dir: "sendrecv"}
		c := md.ConnectionInformation
		if c == nil {
			c = s.ConnectionInformation
		}
		if c != nil && c.Address != nil {
			m.addr = c.Address.Address
		}
		for _, attrs := range [][]sdp.Attribute{s.Attributes, md.Attributes} {
			for _, a := range attrs {
				switch a.Key {
				case "sendrecv", "sendonly", "recvonly", "inactive":
					m.dir = a.Key
				}
			}
		}
		return m, true
	}
	return rtpTarget{}, false
}

var originLine = regexp.MustCompile(`(?m)^o=[^\r\n]*\r?`)

// mirrored is the connection mode that mirrors the other side's
// direction (RFC 3435 §3.2.2.6, RFC 3264 §6.1): what it sends we
// receive. Written out here, not taken from the bridge, so that the
// oracle does not share the code it checks.
var mirrored = map[string]mgcp.ConnectionMode{"sendrecv": mgcp.ModeSendRecv, "sendonly": mgcp.ModeRecvOnly,
	"recvonly": mgcp.ModeSendOnly, "inactive": mgcp.ModeInactive}

func sameTarget(a, b rtpTarget) bool { return a.addr == b.addr && a.port == b.port }

// localName is the endpoint's local name (before the @).
func localName(ep string) string {
	if i := strings.IndexByte(ep, '@'); i >= 0 {
		return ep[:i]
	}
	return ep
}

// violations lists the invariants the current state breaks.
func (x *explorer) violations() []violation {
	gw, b := x.e.gw, x.e.b
	for _, g := range b.Gateways() {
		if g.Down {
			// The bridge knows the gateway is unreachable: it audits it
			// again when it comes back; nothing is checked meanwhile.
			return nil
		}
	}
	var out []violation
	add := func(key, format string, args ...any) {
		out = append(out, violation{key: key, why: fmt.Sprintf(format, args...)})
	}
	lines := b.Lines()
	byID := map[string]bridge.LineStatus{}
	for _, l := range lines {
		byID[l.ID] = l
	}
	states := map[string]mgcptest.EndpointState{}
	for _, l := range lines {
		st, _ := gw.State(localName(l.Endpoint))
		states[l.ID] = st
	}
	far := map[string]*farCall{}
	for _, fc := range x.live() {
		far[fc.d.CallID] = fc
	}
	dialogs := map[string]bool{}
	peers := map[string][]string{} // line id -> the lines whose active call names it as its peer
	for _, l := range lines {
		for _, id := range b.LineDialogs(l.Endpoint) {
			dialogs[id] = true
		}
		if l.Call != nil && l.Call.Peer != "" {
			peers[l.Call.Peer] = append(peers[l.Call.Peer], l.ID)
		}
	}
	for _, l := range lines {
		local := localName(l.Endpoint)
		st := states[l.ID]
		if st.OutOfService || l.State == "restarting" || l.State == "starting" {
			continue // the audit after the restart decides
		}
		// Lock-step (RFC 3435 §4.4.1): every NTFY is followed by a new
		// request; an endpoint does not stay in notification state.
		if st.NotificationState {
			add("notification "+local, "%s in notification state (quarantined %v)", local, st.Quarantined)
		}
		// Connection accounting: the gateway holds exactly the
		// connections the line's calls hold, each in its call.
		held := b.LineConns(l.Endpoint)
		var want, have []string
		callOf := map[string]string{}
		for _, c := range held {
			want = append(want, c[0])
			callOf[c[0]] = c[1]
		}
		conns := map[string]*mgcptest.Connection{}
		for _, c := range st.Connections {
			have = append(have, c.ID)
			conns[c.ID] = c
			if call, ok := callOf[c.ID]; ok && !strings.EqualFold(call, c.CallID) {
				add("conncall "+local+" "+c.ID, "%s: connection %s is in call %s at the gateway, the line has it in call %s", local, c.ID, c.CallID, call)
			}
		}
		sort.Strings(want)
		sort.Strings(have)
		if !slices.Equal(want, have) {
			add("conns "+local+" "+strings.Join(want, ",")+"|"+strings.Join(have, ","),
				"%s (line %s, %s): the line holds connections %v, the gateway %v", local, l.ID, l.State, want, have)
		}
		if l.Trunk == "" {
			x.hookInvariants(l, st, add)
		} else if n := len(peers[l.ID]); n > 1 {
			// A seized channel is one DS0: one call on it.
			add("trunkpeers "+l.ID+" "+strings.Join(peers[l.ID], ","), "channel %s is the peer of %d lines' calls: %v", l.ID, n, peers[l.ID])
		}
		if l.State != "connected" || l.Call == nil || l.Call.ConnectionID == "" {
			continue
		}
		// A connected call: its connection sends and receives toward the
		// other leg (RFC 3435 §3.2.2.6: the mode mirrors the far end's
		// direction; confrnce when two calls are mixed).
		c := conns[l.Call.ConnectionID]
		if c == nil {
			continue // reported by the accounting above
		}
		key := local + " " + c.ID
		if l.Call.Held {
			// The gateway refused to take it off hold: it stays held,
			// its connection sends and receives nothing.
			if c.Mode != mgcp.ModeInactive {
				add("held "+key+" "+string(c.Mode), "%s: call %s is held after a refused resume, but connection %s is %s", local, l.Call.ID, c.ID, c.Mode)
			}
			continue
		}
		remote, ok := mediaOf(c.RemoteSDP)
		if !ok || remote.port == 0 || remote.addr == "" {
			add("noremote "+key, "%s: connected call %s, connection %s (%s) has no remote description: %q", local, l.Call.ID, c.ID, c.Mode, c.RemoteSDP)
			continue
		}
		// One exception: sendrecv toward a remote description that says
		// recvonly. That is the far end's answer to a hold the line has
		// lifted since (RFC 3264 §8.4), until the answer to the resume
		// arrives; the far end sends nothing, so sendrecv carries all the
		// media there is.
		mode := mirrored[remote.dir]
		stale := c.Mode == mgcp.ModeSendRecv && remote.dir == "recvonly"
		if c.Mode != mode && !stale && !(c.Mode == mgcp.ModeConfrnce && len(st.Connections) == 2) {
			add("mode "+key+" "+string(c.Mode), "%s: connected call %s, connection %s is %s, the remote side is %s (want %s)", local, l.Call.ID, c.ID, c.Mode, remote.dir, mode)
		}
		gwMedia, _ := mediaOf(c.LocalSDP)
		switch {
		case l.Call.Peer != "":
			// Switched locally (two lines, a line and a trunk channel):
			// each connection sends to the other's.
			p, ok := byID[l.Call.Peer]
			if !ok || p.State != "connected" || p.Call == nil || p.Call.Peer != l.ID {
				continue
			}
			var pc *mgcptest.Connection
			for _, cc := range states[p.ID].Connections {
				if cc.ID == p.Call.ConnectionID {
					pc = cc
				}
			}
			if pc == nil {
				continue
			}
			if pm, _ := mediaOf(pc.LocalSDP); !sameTarget(remote, pm) {
				add("local "+key+" "+pc.ID, "%s: connected to %s, connection %s sends to %s, the other's connection %s is at %s",
					local, p.ID, c.ID, remote, pc.ID, pm)
			}
		case l.Call.SIPCallID != "":
			fc := far[l.Call.SIPCallID]
			if fc == nil {
				// A call at the PBX: its answer (or reliable early
				// media) is where the connection sends.
				if remote.addr != "127.0.0.1" || (remote.port != 40000 && remote.port != 40100) {
					add("pbxmedia "+key, "%s: connected to the PBX (%s), connection %s sends to %s", local, l.Call.SIPCallID, c.ID, remote)
				}
				continue
			}
			// A far end of the explorer: its dialog is confirmed, and
			// each side sends to the other (RFC 3264 §5, §8).
			if !fc.answered.Load() {
				add("farunconfirmed "+key+" "+fc.d.CallID, "%s: connected call %s, the far end's dialog %s is not confirmed", local, l.Call.ID, fc.d.CallID)
				continue
			}
			if fc.stale.Load() {
				continue // it left a re-INVITE of mgsip unanswered
			}
			if sent, _ := mediaOf(fc.sdp()); !sameTarget(remote, sent) {
				add("farmedia "+key, "%s: connection %s sends to %s, the far end %s receives at %s", local, c.ID, remote, fc.d.CallID, sent)
			}
			if got, ok := mediaOf(fc.d.RemoteSDP()); !ok || !sameTarget(got, gwMedia) {
				add("farsees "+key, "%s: the far end %s sends to %s, connection %s is at %s", local, fc.d.CallID, got, c.ID, gwMedia)
			}
		}
	}
	// A far end's confirmed dialog belongs to a line's call (active,
	// held or waiting) or is being ended.
	for id, fc := range far {
		if fc.answered.Load() && !fc.byeing.Load() && !dialogs[id] {
			add("fardialog "+id, "the far end's confirmed dialog %s belongs to no line's call", id)
		}
	}
	return out
}

// hookInvariants are those of a phone line's hook.
func (x *explorer) hookInvariants(l bridge.LineStatus, st mgcptest.EndpointState, add func(key, format string, args ...any)) {
	local := localName(l.Endpoint)
	if st.OffHook {
		// Off hook, the line waits for the hang-up (L/hu is persistent,
		// RFC 3660 §2.2, but the line asks for it) and is not idle.
		if !st.NotificationState && !hasEvent(st, "L/hu") {
			add("unarmed "+local, "%s off hook (line %s) not armed for on-hook: R: %v", local, l.State, st.RequestedEvents)
		}
		// The line learns of the off-hook from its NTFY, except when its
		// armed request gave dial tone and collects digits by itself
		// (embedded request, action E, RFC 3435 §2.3.3): it stays idle
		// until the digits come.
		eArmed := l.State == "idle" && len(st.Connections) == 0 && len(st.RequestedEvents) == 2 &&
			hasEvent(st, "L/hu") && strings.HasPrefix(strings.ToUpper(st.RequestedEvents[1].Event.String()), "D/")
		if (l.State == "idle" && !eArmed) || l.State == "ringing" {
			add("offhook "+local+" "+l.State, "%s off hook, the line is %s: R: %v", local, l.State, st.RequestedEvents)
		}
		return
	}
	switch l.State {
	case "idle":
		if l.Call != nil {
			add("idlecall "+local+" "+l.Call.ID, "%s idle with call %+v", local, *l.Call)
		}
		if !st.NotificationState && (!hasEvent(st, "L/hd") || hasEvent(st, "L/hu")) {
			add("unarmed "+local, "%s on hook and idle, not armed for off-hook: R: %v", local, st.RequestedEvents)
		}
	case "ringing":
	default:
		add("onhook "+local+" "+l.State, "%s on hook, the line is %s (call %+v)", local, l.State, l.Call)
	}
}

// settle checks the invariants once an action has settled: it takes
// snapshots until none breaks any, for at most settleWindow; a violation
// seen in every snapshot for that long fails the plan. While it waits the
// plan's next action waits too, so nothing but the timers and the peers'
// answers moves the state meanwhile. It returns false when a violation
// lasted.
func (x *explorer) settle(i int, a action) bool {
	since := map[string]time.Time{}
	start := time.Now()
	for {
		x.snapshots++
		vs := x.violations()
		if len(vs) == 0 {
			if d := time.Since(start); d > x.longestSettle {
				x.longestSettle = d
			}
			return true
		}
		now := time.Now()
		seen := map[string]bool{}
		for _, v := range vs {
			seen[v.key] = true
			first, ok := since[v.key]
			if !ok {
				since[v.key] = now
				continue
			}
			if now.Sub(first) >= settleWindow {
				x.fail(i, a, v, now.Sub(first))
				return false
			}
		}
		for k := range since {
			if !seen[k] {
				delete(since, k)
			}
		}
		if now.Sub(start) > 3*settleWindow {
			// Violations that keep changing without one lasting: the
			// state does not settle.
			x.fail(i, a, vs[0], now.Sub(start))
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (x *explorer) fail(i int, a action, v violation, lasted time.Duration) {
	x.violated = true
	x.t.Errorf("invariant broken for %v after action %d %s: %s", lasted.Round(time.Millisecond), i, a, v.why)
	for _, l := range x.e.b.Lines() {
		st, _ := x.e.gw.State(localName(l.Endpoint))
		var cs []string
		for _, c := range st.Connections {
			m, _ := mediaOf(c.RemoteSDP)
			lm, _ := mediaOf(c.LocalSDP)
			cs = append(cs, fmt.Sprintf("%s(call %s, %s, at %s, to %s)", c.ID, c.CallID, c.Mode, lm, m))
		}
		x.t.Logf("line %s: state %s off_hook %v call %+v conns %v dialogs %v; gateway: off_hook %v seizure %q R: %v notification %v connections %v",
			l.ID, l.State, l.OffHook, l.Call, x.e.b.LineConns(l.Endpoint), x.e.b.LineDialogs(l.Endpoint), st.OffHook, st.Seizure,
			st.RequestedEvents, st.NotificationState, cs)
	}
	if os.Getenv("MGSIP_EXPLORE_LOG") != "" {
		for _, c := range x.e.gw.Commands() {
			x.t.Logf("  %s %s C:%s I:%s M:%s X:%s R:%v S:%v O:%v", c.Verb, c.Endpoint, c.CallID, c.ConnectionID, c.Mode, c.RequestID,
				c.RequestedEvents, c.Signals, c.ObservedEvents)
		}
	}
}
