package mgcptest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// rig is a scripted call agent facing a fake gateway over a MemNet; run
// it inside a synctest bubble.
type rig struct {
	t   *testing.T
	gw  *Gateway
	ca  *mgcp.CallAgent
	got chan *mgcp.Command // commands the call agent received
	tap *tapConn
}

// tapConn records the first line of every datagram read.
type tapConn struct {
	net.PacketConn
	mu    sync.Mutex
	lines []string
}

func (c *tapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		line, _, _ := strings.Cut(string(b[:n]), "\n")
		c.mu.Lock()
		c.lines = append(c.lines, strings.TrimSpace(line))
		c.mu.Unlock()
	}
	return n, a, err
}

func (c *tapConn) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func newRig(t *testing.T, cfg GatewayConfig) *rig {
	t.Helper()
	mn := NewMemNet()
	r := &rig{t: t, got: make(chan *mgcp.Command, 64), tap: &tapConn{PacketConn: mn.MustListen("127.0.0.1:2727")}}
	r.ca = mgcp.New(r.tap, mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(
		func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
			r.got <- c
			return mgcp.NewResponse(c, mgcp.CodeOK)
		})))
	go func() { _ = r.ca.Serve(context.Background()) }()
	cfg.Conn = mn.MustListen("127.0.0.1:2427")
	cfg.CallAgent = "127.0.0.1:2727"
	gw, err := NewGateway(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.gw = gw
	return r
}

func (r *rig) close() {
	_ = r.gw.Close()
	_ = r.ca.Close()
}

// command parses a command written as on the wire, with "\n" between
// lines and the endpoint given by its local name.
func (r *rig) command(verb, local string, lines ...string) *mgcp.Command {
	r.t.Helper()
	text := fmt.Sprintf("%s 1 %s@gw.test MGCP 1.0\n%s\n", verb, local, strings.Join(lines, "\n"))
	c, err := mgcp.ParseCommand([]byte(text))
	if err != nil {
		r.t.Fatalf("bad test command %q: %v", text, err)
	}
	c.TransactionID = 0 // the call agent numbers it
	return c
}

// do sends a command from the call agent and returns the answer.
func (r *rig) do(verb, local string, lines ...string) *mgcp.Response {
	r.t.Helper()
	res, err := r.ca.Do(context.Background(), r.gw.Addr(), r.command(verb, local, lines...))
	if err != nil {
		r.t.Fatalf("%s: %v", verb, err)
	}
	return res
}

// expect does a command and requires the code.
func (r *rig) expect(code mgcp.ReturnCode, verb, local string, lines ...string) *mgcp.Response {
	r.t.Helper()
	res := r.do(verb, local, lines...)
	if res.Code != code {
		r.t.Fatalf("%s %v: got %s %s, want %s", verb, lines, res.Code, res.Comment, code)
	}
	return res
}

// next returns the next command the call agent received.
func (r *rig) next() *mgcp.Command {
	r.t.Helper()
	select {
	case c := <-r.got:
		return c
	case <-time.After(time.Minute):
		r.t.Fatal("the call agent received nothing")
		return nil
	}
}

// none requires that the call agent received nothing more.
func (r *rig) none() {
	r.t.Helper()
	synctest.Wait()
	select {
	case c := <-r.got:
		r.t.Fatalf("unexpected %s X:%s O:%s", c.Verb, c.RequestID, events(c.ObservedEvents))
	default:
	}
}

func events(es []mgcp.Event) string {
	var s []string
	for _, e := range es {
		s = append(s, e.String())
	}
	return strings.Join(s, ",")
}

// ntfy requires an NTFY with the request id and observed events.
func (r *rig) ntfy(x, observed string) {
	r.t.Helper()
	c := r.next()
	if c.Verb != mgcp.VerbNTFY || c.RequestID != x || events(c.ObservedEvents) != observed {
		r.t.Fatalf("got %s X:%s O:%s, want NTFY X:%s O:%s", c.Verb, c.RequestID, events(c.ObservedEvents), x, observed)
	}
}

// notified requires a user action to have sent an NTFY answered 200.
func (r *rig) notified(res *mgcp.Response, err error) {
	r.t.Helper()
	if err != nil || res.Code != mgcp.CodeOK {
		r.t.Fatalf("action: %v %v", res, err)
	}
}

// silent requires a user action to have sent no NTFY, for the reason.
// Use it as r.silent(reason)(r.gw.OnHook(ctx, ep1)).
func (r *rig) silent(reason string) func(*mgcp.Response, error) {
	return func(_ *mgcp.Response, err error) {
		r.t.Helper()
		if !errors.Is(err, ErrNotNotified) || !strings.Contains(err.Error(), reason) {
			r.t.Fatalf("got %v, want ErrNotNotified (%s)", err, reason)
		}
	}
}

const ep1 = "aaln/1"

// offHook takes the phone off hook with no request and consumes the
// NTFY (persistent L/hd, request id 0) and the notification state.
func (r *rig) offHook() {
	r.t.Helper()
	r.notified(r.gw.OffHook(context.Background(), ep1))
	r.ntfy("0", "L/hd")
}

func TestLockStepQuarantine(t *testing.T) {
	cases := []struct {
		name       string
		q          string
		wantNotify bool
	}{
		{"process", "Q: process", true},
		{"default is process", "", true},
		{"discard", "Q: discard,step", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, GatewayConfig{})
				defer r.close()
				ctx := context.Background()
				r.expect(200, "RQNT", ep1, "X: 1", "R: L/hd(N)")
				r.notified(r.gw.OffHook(ctx, ep1))
				r.ntfy("1", "L/hd")
				if !r.gw.InNotificationState(ep1) {
					t.Fatal("not in notification state after NTFY")
				}
				// Until the next request, events are quarantined.
				r.silent("quarantined")(r.gw.OnHook(ctx, ep1))
				if q := r.gw.Quarantined(ep1); events(q) != "L/hu" {
					t.Fatalf("quarantined %q", events(q))
				}
				r.none()
				lines := []string{"X: 2", "R: L/hd(N)"}
				if tc.q != "" {
					lines = append(lines, tc.q)
				}
				rq := r.expect(200, "RQNT", ep1, lines...)
				if tc.wantNotify {
					// The quarantined on-hook (persistent) is processed
					// against request 2 as if it had just happened, and
					// notified after the RQNT's response.
					r.ntfy("2", "L/hu")
					rx := r.tap.received()
					if len(rx) < 2 || rx[len(rx)-2] != fmt.Sprintf("200 %d OK", rq.TransactionID) || !strings.HasPrefix(rx[len(rx)-1], "NTFY") {
						t.Errorf("received %q: want the RQNT's response, then the NTFY", rx)
					}
					if !r.gw.InNotificationState(ep1) {
						t.Error("not in notification state after the quarantined NTFY")
					}
				} else {
					r.none()
					if r.gw.InNotificationState(ep1) {
						t.Error("still in notification state")
					}
				}
				if q := r.gw.Quarantined(ep1); len(q) != 0 {
					t.Errorf("quarantine not emptied: %s", events(q))
				}
			})
		})
	}
}

func TestQuarantineLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		ctx := context.Background()
		r.expect(200, "RQNT", ep1, "X: 5", "R: L/hd(N), L/hf(N)", "Q: loop")
		r.notified(r.gw.OffHook(ctx, ep1))
		r.ntfy("5", "L/hd")
		r.notified(r.gw.Flash(ctx, ep1))
		r.ntfy("5", "L/hf")
		r.notified(r.gw.OnHook(ctx, ep1))
		r.ntfy("5", "L/hu")
		if r.gw.InNotificationState(ep1) {
			t.Error("Q: loop entered notification state")
		}
	})
}

func TestUnknownQuarantineHandling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		for _, q := range []string{"Q: sometimes", "Q: process,discard", "Q: loop,step"} {
			r.expect(508, "RQNT", ep1, "X: 1", "R: L/hd(N)", q)
		}
	})
}

func TestHookChecks(t *testing.T) {
	cases := []struct {
		name    string
		offHook bool
		verb    string
		lines   []string
		want    mgcp.ReturnCode
	}{
		{"RQNT hd off hook", true, "RQNT", []string{"X: 2", "R: L/hd(N)"}, 401},
		{"RQNT hu on hook", false, "RQNT", []string{"X: 2", "R: L/hu(N)"}, 402},
		{"RQNT hu off hook", true, "RQNT", []string{"X: 2", "R: L/hu(N)"}, 200},
		{"CRCX hd off hook", true, "CRCX", []string{"C: A1", "M: recvonly", "X: 2", "R: L/hd(N)"}, 401},
		{"CRCX hu on hook", false, "CRCX", []string{"C: A1", "M: recvonly", "X: 2", "R: L/hu(N)", "S: L/rg"}, 402},
		{"CRCX hd on hook", false, "CRCX", []string{"C: A1", "M: recvonly", "X: 2", "R: L/hd(N)", "S: L/rg"}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, GatewayConfig{})
				defer r.close()
				r.expect(200, "RQNT", ep1, "X: 1", "R: L/hf(N)", "S: L/sl")
				if tc.offHook {
					r.notified(r.gw.OffHook(context.Background(), ep1))
					r.ntfy("1", "L/hd")
				}
				before, _ := r.gw.State(ep1)
				r.expect(tc.want, tc.verb, ep1, tc.lines...)
				after, _ := r.gw.State(ep1)
				if tc.want != 200 {
					// The whole command failed: nothing changed.
					if after.RequestID != before.RequestID || len(after.Connections) != 0 ||
						after.NotificationState != before.NotificationState || events(after.Signals) != events(before.Signals) {
						t.Errorf("state changed: %+v -> %+v", before, after)
					}
				} else if after.RequestID != "2" {
					t.Errorf("request %q not installed", after.RequestID)
				}
				if tc.verb == "CRCX" && tc.want == 200 {
					r.expect(200, "DLCX", ep1, "C: A1")
				}
				if err := r.gw.CheckIdle(); err != nil {
					t.Error(err)
				}
			})
		})
	}
}

func TestPersistentEventsNotRequested(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		ctx := context.Background()
		// No request yet: the persistent off-hook is reported with
		// request id 0.
		r.offHook()
		r.expect(200, "RQNT", ep1, "X: 7", "R: L/hf(N)")
		// Digits nobody asked for are ignored.
		r.silent("not requested")(r.gw.Dial(ctx, ep1, "5"))
		r.none()
		// L/hu was not requested, but it is persistent.
		r.notified(r.gw.OnHook(ctx, ep1))
		r.ntfy("7", "L/hu")
		// A phone cannot hang up twice, nor dial on hook.
		if _, err := r.gw.OnHook(ctx, ep1); !errors.Is(err, ErrHookState) {
			t.Errorf("second on-hook: %v", err)
		}
		if _, err := r.gw.Dial(ctx, ep1, "1"); !errors.Is(err, ErrHookState) {
			t.Errorf("dial on hook: %v", err)
		}
	})
}

func TestDigitCollection(t *testing.T) {
	cases := []struct {
		name     string
		digitMap string
		dial     string
		wait     time.Duration // when the NTFY comes after the last digit; 0: at once
		observed string
	}{
		{"match", "(xxxx|*xx)", "2017", 0, "D/2,D/0,D/1,D/7"},
		{"mismatch", "(9xxx)", "5", 0, "D/5"},
		{"timer completes a match", "(xxxx|0T)", "0", 300 * time.Millisecond, "D/0,D/T"},
		{"timer after a match that could grow", "(xxx|xxxx)", "201", 300 * time.Millisecond, "D/2,D/0,D/1,D/T"},
		{"long timer on an incomplete number", "(xxxx)", "20", 1200 * time.Millisecond, "D/2,D/0,D/T"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, GatewayConfig{})
				defer r.close()
				ctx := context.Background()
				r.offHook()
				r.expect(200, "RQNT", ep1, "X: 3", "R: L/hu(N), D/[0-9#*T](D)", "D: "+tc.digitMap, "S: L/dl")
				start := time.Now()
				res, err := r.gw.Dial(ctx, ep1, tc.dial)
				if tc.wait == 0 {
					r.notified(res, err)
				} else {
					r.silent("collecting digits")(res, err)
					if st, _ := r.gw.State(ep1); len(st.Signals) != 0 {
						t.Errorf("dial tone still on after a digit: %s", events(st.Signals))
					}
				}
				r.ntfy("3", tc.observed)
				if got := time.Since(start); got != tc.wait {
					t.Errorf("NTFY after %v, want %v", got, tc.wait)
				}
			})
		})
	}
}

func TestEmbeddedRequestDialTone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		ctx := context.Background()
		r.expect(200, "RQNT", ep1, "X: 9", "R: L/hd(A,E(S(L/dl),R(L/hu(N),D/[0-9#*T](D))))", "D: (xxxx|*xx)")
		// Off hook: no NTFY (accumulated), dial tone at once, new events.
		r.silent("accumulated")(r.gw.OffHook(ctx, ep1))
		st, _ := r.gw.State(ep1)
		if events(st.Signals) != "L/dl" || len(st.RequestedEvents) != 2 || !st.RequestedEvents[1].HasAction("D") {
			t.Fatalf("embedded request not applied: S %s R %v", events(st.Signals), st.RequestedEvents)
		}
		if events(st.Observed) != "L/hd" || st.NotificationState {
			t.Fatalf("observed %s, notification state %v", events(st.Observed), st.NotificationState)
		}
		r.none()
		r.silent("collecting digits")(r.gw.Dial(ctx, ep1, "20"))
		r.notified(r.gw.Dial(ctx, ep1, "17"))
		// One NTFY with the off-hook that started the collection.
		r.ntfy("9", "L/hd,D/2,D/0,D/1,D/7")
		if st, _ := r.gw.State(ep1); len(st.Signals) != 0 || !st.NotificationState {
			t.Errorf("after NTFY: signals %s, notification state %v", events(st.Signals), st.NotificationState)
		}
	})
}

func TestSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		ctx := context.Background()
		sig := func(want string, mwi bool) {
			t.Helper()
			st, _ := r.gw.State(ep1)
			if events(st.Signals) != want || st.MWI != mwi {
				t.Fatalf("signals %q mwi %v, want %q %v", events(st.Signals), st.MWI, want, mwi)
			}
		}
		r.expect(200, "RQNT", ep1, "X: 1", "R: L/hd(N)", "S: L/rg, L/vmwi(+)")
		sig("L/rg", true)
		// A requested event stops the time-out signals; vmwi stays.
		r.notified(r.gw.OffHook(ctx, ep1))
		r.ntfy("1", "L/hd")
		sig("", true)
		// A new S: replaces them; K keeps them when an event fires.
		r.expect(200, "RQNT", ep1, "X: 2", "R: L/hu(N), L/hf(N,K)", "S: L/dl")
		sig("L/dl", true)
		r.notified(r.gw.Flash(ctx, ep1))
		r.ntfy("2", "L/hf")
		sig("L/dl", true)
		// A request without S: stops them; vmwi(-) turns the lamp off.
		r.expect(200, "RQNT", ep1, "X: 3", "R: L/hu(N)")
		sig("", true)
		r.expect(200, "RQNT", ep1, "X: 4", "R: L/hu(N)", "S: L/vmwi(-)")
		sig("", false)
	})
}

func TestRequestChecks(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		want  mgcp.ReturnCode
	}{
		{"package the endpoint lacks", []string{"X: 1", "R: R/rto(N)"}, 518},
		{"unknown line event", []string{"X: 1", "R: L/zz(N)"}, 522},
		{"unknown event in an embedded request", []string{"X: 1", "R: L/hd(E(R(L/nope)))"}, 522},
		{"signal it cannot generate", []string{"X: 1", "R: L/hd(N)", "S: L/hd"}, 513},
		{"signal of a package it lacks", []string{"X: 1", "S: T/ldl"}, 518},
		{"digit action without a digit map", []string{"X: 1", "R: D/[0-9](D)"}, 519},
		{"notify and accumulate", []string{"X: 1", "R: L/hd(N,A)"}, 523},
		{"ignore with keep", []string{"X: 1", "R: L/hd(I,K)"}, 523},
		{"bad digit map", []string{"X: 1", "R: D/[0-9](D)", "D: (12"}, 510},
		{"caller id without its three fields", []string{"X: 1", "R: L/hd(N)", "S: L/rg, L/ci(\"555\")"}, 538},
		{"caller id with a bad time", []string{"X: 1", "R: L/hd(N)", "S: L/rg, L/ci(13/14/17/26,\"555\",\"Ann\")"}, 538},
		{"caller id embedded with a bad time", []string{"X: 1", "R: L/hd(E(S(L/wt,L/ci(1/2/3/4,5,A))))"}, 538},
		{"caller id on call waiting", []string{"X: 1", "R: L/hd(N)", "S: L/wt, L/ci(10/14/17/26,\"555\",\"\")"}, 200},
		{"good request", []string{"X: 1", "R: L/hd(N), D/X(N), G/ft(N), *(N)", "S: L/ci(10/14/17/26,\"555\",\"Ann\"), L/rg"}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, GatewayConfig{})
				defer r.close()
				r.expect(tc.want, "RQNT", ep1, tc.lines...)
				if st, _ := r.gw.State(ep1); tc.want != 200 && st.RequestID != "" {
					t.Errorf("a refused request was installed")
				}
			})
		})
	}
}

// TestNoCallerID: a gateway configured without caller id refuses L/ci
// with 513 (a call agent must honour the gateway's quirk profile) and
// takes the same request without it.
func TestNoCallerID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{NoCallerID: true})
		defer r.close()
		r.expect(513, "RQNT", ep1, "X: 1", "R: L/hd(N)", "S: L/rg, L/ci(10/14/17/26,\"555\",\"Ann\")")
		r.expect(200, "RQNT", ep1, "X: 2", "R: L/hd(N)", "S: L/rg")
	})
}

// TestNoConference: confrnce needs a remote description like sendrecv
// (527); a gateway configured without mixing refuses the mode (517).
func TestNoConference(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		r.expect(527, "CRCX", ep1, "C: A1", "M: confrnce")
	})
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{NoConference: true})
		defer r.close()
		r.expect(517, "CRCX", ep1, "C: A1", "M: confrnce")
		r.expect(200, "CRCX", ep1, "C: A1", "M: recvonly")
	})
}

func TestInjections(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, r *rig)
	}{
		{"injected code, once", func(t *testing.T, r *rig) {
			r.gw.Inject(Injection{Verb: mgcp.VerbCRCX, Endpoint: ep1, Code: mgcp.CodeEndpointNotReady, Count: 1})
			r.expect(501, "CRCX", ep1, "C: A1", "M: recvonly")
			if c := r.gw.Connections(""); len(c) != 0 {
				t.Fatalf("an injected answer made a connection: %v", c)
			}
			r.expect(200, "CRCX", ep1, "C: A1", "M: recvonly")
			r.expect(200, "DLCX", ep1, "C: A1")
		}},
		{"by mode", func(t *testing.T, r *rig) {
			r.gw.Inject(Injection{Verb: mgcp.VerbMDCX, Mode: mgcp.ModeSendRecv, Code: mgcp.CodeTransientError, Count: 1})
			r.expect(200, "CRCX", ep1, "C: A1", "M: recvonly")
			id := r.gw.Connections(ep1)[0].ID
			r.expect(200, "MDCX", ep1, "C: A1", "I: "+id, "M: inactive")
			r.expect(400, "MDCX", ep1, "C: A1", "I: "+id, "M: sendrecv")
			if c := r.gw.Connections(ep1); c[0].Mode != mgcp.ModeInactive {
				t.Fatalf("an injected answer changed the mode: %v", c[0].Mode)
			}
			r.expect(200, "MDCX", ep1, "C: A1", "I: "+id, "M: recvonly")
			r.expect(200, "DLCX", ep1, "C: A1")
		}},
		{"other endpoint not affected", func(t *testing.T, r *rig) {
			r.gw.Inject(Injection{Endpoint: "aaln/2", Code: mgcp.CodeTransientError})
			r.expect(200, "RQNT", ep1, "X: 1")
			r.expect(400, "RQNT", "aaln/2", "X: 1")
			r.gw.ClearInjections()
			r.expect(200, "RQNT", "aaln/2", "X: 1")
		}},
		{"drop until the call agent times out", func(t *testing.T, r *rig) {
			r.gw.Inject(Injection{Verb: mgcp.VerbRQNT, Drop: true, Count: 1})
			_, err := r.ca.Do(context.Background(), r.gw.Addr(), r.command("RQNT", ep1, "X: 1", "R: L/hd(N)"))
			if !errors.Is(err, mgcp.ErrTimeout) {
				t.Fatalf("dropped RQNT: %v", err)
			}
			if st, _ := r.gw.State(ep1); st.RequestID != "" {
				t.Error("a dropped command changed the state")
			}
			if v := r.gw.Verbs(); len(v) != 1 {
				t.Errorf("recorded %v, want the RQNT once", v)
			}
			r.expect(200, "RQNT", ep1, "X: 2")
		}},
		{"delay", func(t *testing.T, r *rig) {
			r.gw.Inject(Injection{Verb: mgcp.VerbAUEP, Delay: 3 * time.Second})
			start := time.Now()
			r.expect(200, "AUEP", ep1, "F: ES")
			if d := time.Since(start); d < 3*time.Second {
				t.Errorf("answered after %v", d)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, GatewayConfig{})
				defer r.close()
				tc.run(t, r)
			})
		})
	}
}

func TestRestartMethods(t *testing.T) {
	ctx := context.Background()
	rsip := func(r *rig, method mgcp.RestartMethod, delay time.Duration) {
		r.t.Helper()
		if _, err := r.gw.Restart(ctx, ep1, method, delay); err != nil {
			r.t.Fatal(err)
		}
		if c := r.next(); c.Verb != mgcp.VerbRSIP || c.RestartMethod != method {
			r.t.Fatalf("got %s RM %s", c.Verb, c.RestartMethod)
		}
	}
	t.Run("forced until restart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, GatewayConfig{})
			defer r.close()
			r.expect(200, "CRCX", ep1, "C: A1", "M: recvonly", "X: 1", "R: L/hd(N)")
			rsip(r, mgcp.RestartForced, 0)
			st, _ := r.gw.State(ep1)
			if len(st.Connections) != 0 || st.RequestID != "" || len(st.RequestedEvents) != 0 || !st.OutOfService {
				t.Fatalf("after forced: %+v", st)
			}
			r.expect(501, "RQNT", ep1, "X: 2", "R: L/hd(N)")
			r.expect(501, "CRCX", ep1, "C: A2", "M: recvonly")
			r.expect(200, "AUEP", ep1, "F: ES")
			r.silent("out of service")(r.gw.OffHook(ctx, ep1))
			time.Sleep(time.Hour)
			r.expect(501, "RQNT", ep1, "X: 2")
			rsip(r, mgcp.RestartRestart, 0)
			r.expect(200, "RQNT", ep1, "X: 3", "R: L/hu(N)")
		})
	})
	t.Run("restart delay", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, GatewayConfig{})
			defer r.close()
			rsip(r, mgcp.RestartRestart, 10*time.Second)
			r.expect(501, "RQNT", ep1, "X: 1")
			time.Sleep(10 * time.Second)
			r.expect(200, "RQNT", ep1, "X: 1")
		})
	})
	t.Run("graceful", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, GatewayConfig{})
			defer r.close()
			r.expect(200, "CRCX", ep1, "C: A1", "M: recvonly")
			rsip(r, mgcp.RestartGraceful, 5*time.Second)
			r.expect(200, "CRCX", ep1, "C: A2", "M: recvonly")
			r.expect(200, "DLCX", ep1, "C: A2")
			time.Sleep(5 * time.Second)
			r.expect(501, "CRCX", ep1, "C: A2", "M: recvonly")
			r.expect(200, "MDCX", ep1, "C: A1", "I: "+r.gw.Connections(ep1)[0].ID, "M: inactive")
			rsip(r, mgcp.RestartCancelGraceful, 0)
			r.expect(200, "CRCX", ep1, "C: A2", "M: recvonly")
			rsip(r, mgcp.RestartDisconnected, 0)
			if n := len(r.gw.Connections(ep1)); n != 2 {
				t.Errorf("%d connections after disconnected, want 2", n)
			}
		})
	})
}

func TestCheckIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, GatewayConfig{})
		defer r.close()
		if err := r.gw.CheckIdle(); err != nil {
			t.Fatal(err)
		}
		res := r.expect(200, "CRCX", "aaln/2", "C: CALL7", "M: recvonly")
		err := r.gw.CheckIdle()
		if err == nil || !strings.Contains(err.Error(), res.ConnectionID) || !strings.Contains(err.Error(), "CALL7") {
			t.Fatalf("CheckIdle with a connection left: %v", err)
		}
		r.expect(250, "DLCX", "aaln/2", "I: "+res.ConnectionID)
		// A quarantined event is left over too.
		r.offHook()
		r.silent("quarantined")(r.gw.Flash(context.Background(), ep1))
		if err := r.gw.CheckIdle(); err == nil || !strings.Contains(err.Error(), "L/hf") {
			t.Fatalf("CheckIdle with a quarantined event: %v", err)
		}
		r.expect(200, "RQNT", ep1, "X: 1", "R: L/hu(N)", "Q: discard")
		if err := r.gw.CheckIdle(); err != nil {
			t.Fatal(err)
		}
	})
}

// A 521 with N: sends the endpoint to the call agent it names (RFC 3435
// §2.3.8, §4.3): the command goes there at once, as do the next ones; two
// call agents that keep redirecting to each other are given up on.
func TestRedirectFollowsNotifiedEntity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNet()
		agent := func(addr string, answer func(*mgcp.Command) *mgcp.Response) (*mgcp.CallAgent, chan *mgcp.Command) {
			got := make(chan *mgcp.Command, 16)
			ca := mgcp.New(mn.MustListen(addr), mgcp.Config{}, mgcp.WithHandler(mgcp.HandlerFunc(
				func(_ context.Context, _ netip.AddrPort, c *mgcp.Command) *mgcp.Response {
					got <- c
					return answer(c)
				})))
			go func() { _ = ca.Serve(context.Background()) }()
			return ca, got
		}
		redirect := func(to string) func(*mgcp.Command) *mgcp.Response {
			return func(c *mgcp.Command) *mgcp.Response {
				r := mgcp.NewResponse(c, mgcp.CodeRedirected)
				r.NotifiedEntity = to
				return r
			}
		}
		ok := func(c *mgcp.Command) *mgcp.Response { return mgcp.NewResponse(c, mgcp.CodeOK) }
		old, toOld := agent("127.0.0.1:2727", redirect("ca@127.0.0.1:2828"))
		defer old.Close()
		owner, toOwner := agent("127.0.0.1:2828", ok)
		defer owner.Close()
		gw, err := NewGateway(GatewayConfig{Conn: mn.MustListen("127.0.0.1:2427"), CallAgent: "127.0.0.1:2727", Lines: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer gw.Close()
		ctx := context.Background()
		if r, err := gw.OffHook(ctx, ep1); err != nil || r.Code != mgcp.CodeOK {
			t.Fatalf("off-hook: %v %v, want the new call agent's 200", r, err)
		}
		if c := <-toOld; c.Verb != mgcp.VerbNTFY {
			t.Fatalf("the old call agent got %s", c.Verb)
		}
		if c := <-toOwner; c.Verb != mgcp.VerbNTFY || events(c.ObservedEvents) != "L/hd" {
			t.Fatalf("the new call agent got %s O:%s", c.Verb, events(c.ObservedEvents))
		}
		if st, _ := gw.State(ep1); st.NotifiedEntity != "ca@127.0.0.1:2828" || gw.Redirects() != 1 {
			t.Fatalf("N: %q after the redirect, %d redirects", st.NotifiedEntity, gw.Redirects())
		}
		// The other endpoint was not redirected; this one's next event
		// goes straight to the new call agent.
		if st, _ := gw.State("aaln/2"); st.NotifiedEntity != "127.0.0.1:2727" {
			t.Fatalf("aaln/2 N: %q", st.NotifiedEntity)
		}
		if _, err := gw.Notify(ctx, ep1, mgcp.Event{Package: "L", Name: "hf"}); err != nil {
			t.Fatal(err)
		}
		if c := <-toOwner; c.Verb != mgcp.VerbNTFY {
			t.Fatalf("got %s", c.Verb)
		}
		synctest.Wait()
		if len(toOld) != 0 {
			t.Fatal("the old call agent got a command after the redirect")
		}

		// Two call agents naming each other: the gateway gives up after
		// a few hops and returns the last 521.
		loop, _ := agent("127.0.0.1:2929", redirect("127.0.0.1:3030"))
		defer loop.Close()
		old2, _ := agent("127.0.0.1:3030", redirect("127.0.0.1:2929"))
		defer old2.Close()
		gw2, err := NewGateway(GatewayConfig{Conn: mn.MustListen("127.0.0.1:2428"), Domain: "gw2.test", CallAgent: "127.0.0.1:3030", Lines: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer gw2.Close()
		r, err := gw2.OffHook(ctx, ep1)
		if err != nil || r.Code != mgcp.CodeRedirected || gw2.Redirects() != maxRedirects {
			t.Fatalf("redirect loop: %v %v after %d redirects", r, err, gw2.Redirects())
		}
	})
}
