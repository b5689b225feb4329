package bridge_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// lineTrunk is the exploration's "line-trunk" action: calls switched
// locally between a line and a CAS trunk channel (linetrunk.go). Mostly
// the line calls out of trunk group "pstn" (numbers 9xxx): it lifts
// (after hanging up whatever it had), dials, and now and then the far
// end answers the channel it was seized on; otherwise the far end seizes
// a channel with a line's number and that line rings.
func (x *explorer) lineTrunk(ctx context.Context, a action) {
	gw := x.e.gw
	if a.m%3 == 0 {
		line := 1 + a.n%exploreLines
		_, _ = gw.Seize(ctx, channel(a.line), strconv.Itoa(1000+line), strconv.Itoa(2125550000+a.m))
		return
	}
	local := ep(a.line)
	if st, _ := gw.State(local); st.OffHook {
		_, _ = gw.OnHook(ctx, local)
	}
	_, _ = gw.OffHook(ctx, local)
	_, _ = gw.Dial(ctx, local, "9"+strconv.Itoa(100+a.n%900))
	if a.m%3 != 1 {
		return
	}
	for range 20 {
		for i := 1; i <= exploreTrunk; i++ {
			ch := channel(i)
			if st, _ := gw.State(ch); st.Seizure == mgcptest.SeizureOutgoing && st.Outpulsed != "" && !st.Answered {
				_, _ = gw.TrunkAnswer(ctx, ch)
				return
			}
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// withLineTrunkCalls inserts lines' calls out of the trunk group
// (linetrunk.go) among a plan's actions, drawn from a stream of their own
// so that the seeds kept in the fixed budget replay the plans they failed
// with.
func withLineTrunkCalls(seed uint64, plan []action) []action {
	rng := rand.New(rand.NewPCG(seed, 0x6c6e7472))
	out := make([]action, 0, len(plan)+len(plan)/8)
	for _, a := range plan {
		out = append(out, a)
		if rng.IntN(12) == 0 {
			out = append(out, action{kind: "line-trunk", line: 1 + rng.IntN(exploreLines), n: rng.IntN(1000), m: rng.IntN(1000)})
		}
	}
	return out
}
