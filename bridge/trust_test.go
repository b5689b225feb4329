package bridge_test

// Issue 11, MGCP side: only a gateway commands its own endpoints.

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
)

// TestCommandsFromAnotherAddressRefused: an NTFY or DLCX for the
// gateway's endpoint from another address is answered 500 and does not
// touch the line.
func TestCommandsFromAnotherAddressRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	other, err := mgcp.Listen(mgcp.Config{ListenAddr: "127.0.0.2:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = other.Serve(ctx) }()
	defer other.Close()
	ntfy := &mgcp.Command{Verb: mgcp.VerbNTFY, Endpoint: e.gw.Endpoint("aaln/1"),
		Parameters: mgcp.Parameters{RequestID: "1", ObservedEvents: []mgcp.Event{{Package: "L", Name: "hd"}}}}
	r, err := other.Do(ctx, e.ca.LocalAddr().String(), ntfy)
	if err != nil || r.Code != mgcp.CodeEndpointUnknown {
		t.Fatalf("NTFY from another address: %v %v", r, err)
	}
	if n := e.b.Refused(); n != 1 {
		t.Errorf("refused %d", n)
	}
	if st := e.state("aaln/1"); !armed(st) || hasSignal(st, "L/dl") {
		t.Errorf("the line moved: %+v", st)
	}
	for _, l := range e.b.Lines() {
		if l.State != "idle" {
			t.Errorf("line %s: %s", l.ID, l.State)
		}
	}
}

// TestGatewayDeleteMustNameTheConnection: a DLCX from the gateway without
// I: (515), with a connection the line does not have (515) or with
// another call's C: (516) ends nothing; the right one ends the call.
func TestGatewayDeleteMustNameTheConnection(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.offHook("aaln/1")
	e.dial("aaln/1", "2000")
	e.waitFor("answered", func() bool { return e.conn("aaln/1").Mode == mgcp.ModeSendRecv })
	c := e.conn("aaln/1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name     string
		conn, id string
		want     mgcp.ReturnCode
	}{
		{"no I:", "", "", mgcp.CodeIncorrectConnectionID},
		{"unknown I:", "FFFF", c.CallID, mgcp.CodeIncorrectConnectionID},
		{"another call", c.ID, "0123456789ABCDEF", mgcp.CodeUnknownCallID},
	} {
		r, err := e.gw.Send(ctx, "aaln/1", &mgcp.Command{Verb: mgcp.VerbDLCX,
			Parameters: mgcp.Parameters{ConnectionID: tc.conn, CallID: tc.id, Reason: &mgcp.Reason{Code: 900}}})
		if err != nil || r.Code != tc.want {
			t.Errorf("%s: %v %v, want %d", tc.name, r, err, tc.want)
		}
	}
	if n := len(e.pbx.Received("BYE")); n != 0 {
		t.Fatalf("%d BYEs after refused DLCXs", n)
	}
	e.do(func(ctx context.Context) (*mgcp.Response, error) {
		return e.gw.DeleteConnection(ctx, "aaln/1", c.ID, mgcp.Reason{Code: 900})
	})
	e.waitFor("BYE at the PBX", func() bool { return len(e.pbx.Received("BYE")) == 1 })
	e.onHook("aaln/1")
	e.waitSignalState("aaln/1", armed)
	e.record()
}

// TestCallAndRequestIDsUnpredictable: C: and X: are random 16-hex-digit
// values, not a counter.
func TestCallAndRequestIDsUnpredictable(t *testing.T) {
	e := newEnv(t, envOptions{})
	hex16 := regexp.MustCompile(`^[0-9A-F]{16}$`)
	for range 2 {
		e.offHook("aaln/1")
		e.dial("aaln/1", "1002")
		e.waitSignal("aaln/2", "L/rg")
		e.onHook("aaln/1")
		e.waitSignalState("aaln/2", armed)
		e.waitSignalState("aaln/1", armed)
		e.record()
		e.record()
	}
	var calls, reqs []string
	for _, c := range e.gw.Commands() {
		if c.Verb == mgcp.VerbCRCX {
			calls = append(calls, c.CallID)
		}
		if c.RequestID != "" {
			reqs = append(reqs, c.RequestID)
		}
	}
	for _, id := range append(append([]string(nil), calls...), reqs...) {
		if !hex16.MatchString(id) {
			t.Errorf("id %q is not 16 random hex digits", id)
		}
	}
	seen := map[string]bool{}
	for _, id := range reqs {
		if seen[id] {
			t.Errorf("request id %s used twice", id)
		}
		seen[id] = true
	}
	// Both legs of a local call share its call id; the two calls do not.
	if len(calls) != 4 || calls[0] != calls[1] || calls[0] == calls[2] {
		t.Errorf("call ids %v", calls)
	}
}

// TestNTFYUnderUnknownRequestRefused: an NTFY whose X: the call agent
// never issued (or "0" while the gateway holds a request of the line) is
// answered 538 and drives nothing; the line sends its request again (the
// gateway may wait in lock-step) and real calls work afterwards.
func TestNTFYUnderUnknownRequestRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, x := range []string{"FFFF", "0"} {
		before := e.state("aaln/1").RequestID
		r, err := e.gw.Send(ctx, "aaln/1", &mgcp.Command{Verb: mgcp.VerbNTFY,
			Parameters: mgcp.Parameters{RequestID: x, ObservedEvents: []mgcp.Event{{Package: "L", Name: "hd"}}}})
		if err != nil || r.Code != mgcp.CodeEventParameterError {
			t.Fatalf("NTFY X:%s: %v %v, want 538", x, r, err)
		}
		if n := e.b.UnknownRequests(); n != uint64(i+1) {
			t.Errorf("unknown requests %d, want %d (%s)", n, i+1, x)
		}
		e.waitFor("the request sent again", func() bool {
			st := e.state("aaln/1")
			return st.RequestID != before && armed(st)
		})
		if st := e.state("aaln/1"); hasSignal(st, "L/dl") || len(st.Connections) != 0 {
			t.Fatalf("X:%s drove the line: %+v", x, st)
		}
		for _, l := range e.b.Lines() {
			if l.State != "idle" {
				t.Errorf("X:%s: line %s is %s", x, l.ID, l.State)
			}
		}
	}
	// The gateway's own NTFYs (under the X: the line issued) still work.
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitFor("ringing", func() bool { return hasSignal(e.state("aaln/2"), "L/rg") })
	e.onHook("aaln/1")
	e.waitSignalState("aaln/2", armed)
	e.waitSignalState("aaln/1", armed)
}

// TestGatewaySourcePortChecked: with source_port set, a command from the
// gateway's address but another port is refused (500); the gateway's own
// port works.
func TestGatewaySourcePortChecked(t *testing.T) {
	e := newEnv(t, envOptions{srcPort: true})
	other, err := mgcp.Listen(mgcp.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = other.Serve(ctx) }()
	defer other.Close()
	ntfy := &mgcp.Command{Verb: mgcp.VerbNTFY, Endpoint: e.gw.Endpoint("aaln/1"),
		Parameters: mgcp.Parameters{RequestID: e.state("aaln/1").RequestID, ObservedEvents: []mgcp.Event{{Package: "L", Name: "hd"}}}}
	r, err := other.Do(ctx, e.ca.LocalAddr().String(), ntfy)
	if err != nil || r.Code != mgcp.CodeEndpointUnknown {
		t.Fatalf("NTFY from another port: %v %v", r, err)
	}
	if n := e.b.Refused(); n != 1 {
		t.Errorf("refused %d", n)
	}
	if st := e.state("aaln/1"); hasSignal(st, "L/dl") {
		t.Errorf("the line moved: %+v", st)
	}
	e.offHook("aaln/1")
	e.dial("aaln/1", "1002")
	e.waitFor("ringing", func() bool { return hasSignal(e.state("aaln/2"), "L/rg") })
	e.onHook("aaln/1")
	e.waitSignalState("aaln/2", armed)
	e.waitSignalState("aaln/1", armed)
}
