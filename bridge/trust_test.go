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
