package daemon

import (
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/admin"
)

// TestPeerProbeThreshold: one unanswered OPTIONS leaves a peer that was
// up reachable (it is probed again after peerRetry, not a whole interval
// later); a second in a row makes it down; any answer makes it up. A peer
// never heard from is not shown up, but is not refused calls before the
// threshold either.
func TestPeerProbeThreshold(t *testing.T) {
	type step struct {
		answered  bool
		up        bool // shown (readiness, /api/v1/peers, mgsip_peer_up)
		reachable bool // as the bridge is told
		wait      time.Duration
	}
	every := 30 * time.Second
	cases := map[string][]step{
		"lost probe":    {{true, true, true, every}, {false, true, true, peerRetry}, {true, true, true, every}},
		"peer dies":     {{true, true, true, every}, {false, true, true, peerRetry}, {false, false, false, peerRetry}, {false, false, false, peerRetry}, {true, true, true, every}},
		"down at start": {{false, false, true, peerRetry}, {false, false, false, peerRetry}, {true, true, true, every}},
		"late at start": {{false, false, true, peerRetry}, {true, true, true, every}},
	}
	for name, steps := range cases {
		var v admin.PeerView
		seen := false
		for i, s := range steps {
			v = nextPeerView(v, seen, s.answered)
			seen = true
			reachable := peerReachable(v)
			if v.Up != s.up || reachable != s.reachable || probeWait(v, every) != s.wait {
				t.Errorf("%s, probe %d (answered %v): up %v reachable %v next in %v; want %v %v %v",
					name, i+1, s.answered, v.Up, reachable, probeWait(v, every), s.up, s.reachable, s.wait)
			}
		}
	}
	// An interval shorter than the retry is kept.
	if w := probeWait(admin.PeerView{Unanswered: 1}, 2*time.Second); w != 2*time.Second {
		t.Errorf("retry with a 2 s interval after %v", w)
	}
}
