package mgcptest

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/mgsip/mgsip/mgcp"
)

const ch1 = "ds/ds1-1/1"

func trunkRig(t *testing.T, pkg string) *rig {
	return newRig(t, GatewayConfig{Endpoints: []string{ch1, "aaln/1"}, TrunkPackage: pkg})
}

// A far-end seizure is reported only when requested, with its address
// and calling number; the call agent answers, the far end releases, the
// call agent completes the release (RFC 3064 sup, ans, rel, rlc).
func TestTrunkIncomingCall(t *testing.T) {
	for _, pkg := range []string{"MS", "DT"} {
		t.Run(pkg, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := trunkRig(t, pkg)
				defer r.close()
				ctx := context.Background()
				// Not requested: the seizure is not reported.
				r.silent("not requested")(r.gw.Seize(ctx, ch1, "5551234", ""))
				if _, err := r.gw.Seize(ctx, ch1, "5551234", ""); !errors.Is(err, ErrTrunkState) {
					t.Fatalf("second seizure: %v", err)
				}
				r.silent("not requested")(r.gw.TrunkRelease(ctx, ch1))
				r.expect(530, "RQNT", ch1, "X: 1", "R: "+pkg+"/sup", "S: "+pkg+"/ans") // nobody seized
				r.expect(200, "RQNT", ch1, "X: 1", "R: "+pkg+"/sup", "S: "+pkg+"/rlc")
				r.notified(r.gw.Seize(ctx, ch1, "5551234", "2125550000"))
				r.ntfy("1", pkg+"/sup(addr(5551234),ani(2125550000))")
				r.expect(200, "CRCX", ch1, "C: 1", "M: recvonly", "X: 2", "R: "+pkg+"/rel", "S: "+pkg+"/ans")
				r.expect(530, "RQNT", ch1, "X: 3", "R: "+pkg+"/rel", "S: "+pkg+"/ans") // answered twice
				if st, _ := r.gw.State(ch1); st.Seizure != SeizureIncoming || !st.Answered {
					t.Fatalf("state %+v", st)
				}
				r.notified(r.gw.TrunkRelease(ctx, ch1))
				r.ntfy("2", pkg+"/rel")
				if err := r.gw.CheckIdle(); err == nil {
					t.Fatal("CheckIdle passes a seized channel")
				}
				r.expect(250, "DLCX", ch1, "C: 1", "I: A001")
				r.expect(200, "RQNT", ch1, "X: 4", "R: "+pkg+"/sup", "S: "+pkg+"/rlc")
				if err := r.gw.CheckIdle(); err != nil {
					t.Fatal(err)
				}
				r.none()
			})
		})
	}
}

// The call agent seizes, the address goes out (oc), the far end answers;
// the call agent releases and the far end completes (rlc).
func TestTrunkOutgoingCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := trunkRig(t, "MS")
		defer r.close()
		ctx := context.Background()
		r.expect(538, "RQNT", ch1, "X: 1", "R: MS/oc", "S: MS/sup")
		r.expect(538, "RQNT", ch1, "X: 1", "R: MS/oc", "S: MS/sup(addr(55x))")
		r.expect(200, "RQNT", ch1, "X: 1", "R: MS/oc, MS/ans, MS/rel, MS/sup", "S: MS/sup(addr(5551234))")
		r.ntfy("1", "MS/oc")
		r.expect(530, "RQNT", ch1, "X: 2", "R: MS/ans", "S: MS/sup(addr(5551234))") // already seized
		r.expect(200, "RQNT", ch1, "X: 2", "R: MS/ans, MS/rel")
		if st, _ := r.gw.State(ch1); st.Outpulsed != "5551234" || st.Seizure != SeizureOutgoing {
			t.Fatalf("state %+v", st)
		}
		r.notified(r.gw.TrunkAnswer(ctx, ch1))
		r.ntfy("2", "MS/ans")
		r.expect(200, "RQNT", ch1, "X: 3", "R: MS/rlc", "S: MS/rel")
		r.ntfy("3", "MS/rlc")
		r.expect(200, "RQNT", ch1, "X: 4", "R: MS/sup")
		if err := r.gw.CheckIdle(); err != nil {
			t.Fatal(err)
		}
	})
}

// ans is persistent in MS and DT (RFC 3064 §2.7, "P + BR"): the far
// end's answer is reported even when the request did not list it, as
// L/hd is on a line; rel is not (it is reported only when requested).
func TestTrunkAnswerPersistent(t *testing.T) {
	for _, pkg := range []string{"MS", "DT"} {
		t.Run(pkg, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := trunkRig(t, pkg)
				defer r.close()
				ctx := context.Background()
				r.expect(200, "RQNT", ch1, "X: 1", "R: "+pkg+"/oc", "S: "+pkg+"/sup(addr(5551234))")
				r.ntfy("1", pkg+"/oc")
				r.expect(200, "RQNT", ch1, "X: 2", "R: "+pkg+"/of")
				r.notified(r.gw.TrunkAnswer(ctx, ch1))
				r.ntfy("2", pkg+"/ans")
				r.expect(200, "RQNT", ch1, "X: 3", "R: "+pkg+"/of")
				r.silent("not requested")(r.gw.TrunkRelease(ctx, ch1))
				r.expect(200, "RQNT", ch1, "X: 4", "R: "+pkg+"/sup", "S: "+pkg+"/rlc")
				if err := r.gw.CheckIdle(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func hasSignal(ss []mgcp.Event, pkg, name string) bool {
	for _, s := range ss {
		if s.Is(pkg, name) {
			return true
		}
	}
	return false
}

// Packages: L is not on a channel, MS is not on a line, an unknown MS
// event is 522 (RFC 3435 §2.4).
func TestTrunkPackages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := trunkRig(t, "MS")
		defer r.close()
		r.expect(518, "RQNT", ch1, "X: 1", "R: L/hd")
		r.expect(518, "RQNT", "aaln/1", "X: 1", "R: MS/sup")
		r.expect(518, "RQNT", ch1, "X: 1", "R: DT/sup")
		r.expect(522, "RQNT", ch1, "X: 1", "R: MS/wk")
		r.expect(513, "RQNT", ch1, "X: 1", "S: MS/oc")
		res := r.expect(200, "AUEP", ch1, "F: PL")
		if res.PackageList != "MS:1,G:1,D:1" {
			t.Fatalf("PL %q", res.PackageList)
		}
	})
}

// Glare: both ends seize at once; the call agent's next request keeps
// (sup again: the far end backs off) or yields (the channel carries the
// far end's call).
func TestTrunkGlare(t *testing.T) {
	for _, keep := range []bool{true, false} {
		name := "yield"
		if keep {
			name = "keep"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := trunkRig(t, "MS")
				defer r.close()
				ctx := context.Background()
				if err := r.gw.ArmGlare(ch1, "4000", ""); err != nil {
					t.Fatal(err)
				}
				r.expect(200, "RQNT", ch1, "X: 1", "R: MS/oc, MS/of, MS/ans, MS/rel, MS/sup", "S: MS/sup(addr(5551234))")
				r.ntfy("1", "MS/sup(addr(4000))")
				// sup is a TO signal (RFC 3064 package tables, read for MO): the
				// detection of the requested far-end sup stopped it (RFC
				// 3435 §2.3.3), so keeping the channel takes a new sup.
				if st, _ := r.gw.State(ch1); st.Seizure != SeizureGlare || hasSignal(st.Signals, "MS", "sup") {
					t.Fatalf("state %+v", st)
				}
				if keep {
					r.expect(200, "RQNT", ch1, "X: 2", "R: MS/oc, MS/ans, MS/rel", "S: MS/sup(addr(5551234))")
					r.ntfy("2", "MS/oc")
					if st, _ := r.gw.State(ch1); st.Seizure != SeizureOutgoing || st.Outpulsed != "5551234" {
						t.Fatalf("state %+v", st)
					}
					r.expect(200, "RQNT", ch1, "X: 2", "R: MS/ans, MS/rel")
				} else {
					r.expect(200, "RQNT", ch1, "X: 2", "R: MS/rel", "S: MS/ans")
					if st, _ := r.gw.State(ch1); st.Seizure != SeizureIncoming || !st.Answered {
						t.Fatalf("state %+v", st)
					}
				}
				r.notified(r.gw.TrunkRelease(ctx, ch1))
				r.ntfy("2", "MS/rel")
				r.expect(200, "RQNT", ch1, "X: 3", "R: MS/sup", "S: MS/rlc")
				if err := r.gw.CheckIdle(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// A far-end seizure crossing the call agent's command (SeizeBefore): it
// is detected against the request in force before the command runs:
// reported at once when requested, quarantined in notification state.
// Either way the call agent's sup meets a channel the far end holds and
// is refused with 530, which changes nothing: the request after it,
// without the sup, releases the quarantined seizure (RFC 3435 §4.4.1).
func TestTrunkSeizeBefore(t *testing.T) {
	for _, pkg := range []string{"MS", "DT"} {
		t.Run(pkg+"/reported", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := trunkRig(t, pkg)
				defer r.close()
				r.expect(200, "RQNT", ch1, "X: 1", "R: "+pkg+"/sup")
				if err := r.gw.SeizeBefore(ch1, mgcp.VerbRQNT, "4000", "2125550000"); err != nil {
					t.Fatal(err)
				}
				r.expect(530, "RQNT", ch1, "X: 2", "R: "+pkg+"/oc, "+pkg+"/sup", "S: "+pkg+"/sup(addr(5551234))")
				r.ntfy("1", pkg+"/sup(addr(4000),ani(2125550000))")
				if st, _ := r.gw.State(ch1); st.Seizure != SeizureIncoming || st.Outpulsed != "" {
					t.Fatalf("state %+v", st)
				}
				r.expect(200, "RQNT", ch1, "X: 3", "R: "+pkg+"/rel")
				r.none()
				r.expect(200, "RQNT", ch1, "X: 4", "R: "+pkg+"/rlc", "S: "+pkg+"/rel")
				r.ntfy("4", pkg+"/rlc")
				r.expect(200, "RQNT", ch1, "X: 5", "R: "+pkg+"/sup")
				if err := r.gw.CheckIdle(); err != nil {
					t.Fatal(err)
				}
			})
		})
		t.Run(pkg+"/quarantined", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := trunkRig(t, pkg)
				defer r.close()
				// An outgoing call released by the call agent: after the
				// rlc the endpoint waits for a new request (lock-step).
				r.expect(200, "RQNT", ch1, "X: 1", "R: "+pkg+"/oc", "S: "+pkg+"/sup(addr(5551234))")
				r.ntfy("1", pkg+"/oc")
				r.expect(200, "RQNT", ch1, "X: 2", "R: "+pkg+"/rlc", "S: "+pkg+"/rel")
				r.ntfy("2", pkg+"/rlc")
				if err := r.gw.SeizeBefore(ch1, mgcp.VerbRQNT, "4000", ""); err != nil {
					t.Fatal(err)
				}
				r.expect(530, "RQNT", ch1, "X: 3", "R: "+pkg+"/oc, "+pkg+"/sup", "S: "+pkg+"/sup(addr(5551235))")
				r.none()
				if q := r.gw.Quarantined(ch1); len(q) != 1 || !q[0].Is(pkg, "sup") {
					t.Fatalf("quarantine %v", q)
				}
				r.expect(200, "RQNT", ch1, "X: 4", "R: "+pkg+"/sup, "+pkg+"/rel")
				r.ntfy("4", pkg+"/sup(addr(4000))")
				r.expect(200, "RQNT", ch1, "X: 5", "R: "+pkg+"/rel")
				r.notified(r.gw.TrunkRelease(context.Background(), ch1))
				r.ntfy("5", pkg+"/rel")
				r.expect(200, "RQNT", ch1, "X: 6", "R: "+pkg+"/sup", "S: "+pkg+"/rlc")
				if err := r.gw.CheckIdle(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// A channel holds one connection (one DS0): a second CRCX is 540 and
// creates nothing; once the first is deleted a new one is taken. A line
// still holds two.
func TestTrunkOneConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := trunkRig(t, "MS")
		defer r.close()
		first := r.expect(200, "CRCX", ch1, "C: 1", "M: recvonly")
		r.expect(540, "CRCX", ch1, "C: 2", "M: recvonly")
		if n := len(r.gw.Connections(ch1)); n != 1 {
			t.Fatalf("%d connections after the refused CRCX", n)
		}
		r.expect(250, "DLCX", ch1, "C: 1", "I: "+first.ConnectionID)
		second := r.expect(200, "CRCX", ch1, "C: 2", "M: recvonly")
		r.expect(250, "DLCX", ch1, "C: 2", "I: "+second.ConnectionID)
		line := []*mgcp.Response{r.expect(200, "CRCX", "aaln/1", "C: 3", "M: recvonly"), r.expect(200, "CRCX", "aaln/1", "C: 4", "M: recvonly")}
		r.expect(540, "CRCX", "aaln/1", "C: 5", "M: recvonly")
		for i, res := range line {
			r.expect(250, "DLCX", "aaln/1", "C: "+string(rune('3'+i)), "I: "+res.ConnectionID)
		}
		if err := r.gw.CheckIdle(); err != nil {
			t.Fatal(err)
		}
		r.none()
	})
}
