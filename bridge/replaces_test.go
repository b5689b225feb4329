package bridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
	"github.com/mgsip/mgsip/sip/siptest"
)

// TestInviteWithReplaces: the PBX calls line 2, the phone answers; a
// second INVITE whose Replaces names that dialog takes the line's
// connection (one MDCX to its SDP), is answered with the gateway's SDP,
// and the first call gets a BYE. Replaces naming no dialog gets 481,
// early-only on a confirmed dialog 486; the phone hanging up ends the
// new call and leaves no connection.
func TestInviteWithReplaces(t *testing.T) {
	e := newEnv(t, envOptions{register: true})
	first := make(chan *siptest.OutCall, 1)
	go func() {
		c, err := e.pbx.Call(context.Background(), "1002", "5551234", []byte(siptest.DefaultAnswerSDP))
		if err != nil {
			t.Error(err)
		}
		first <- c
	}()
	e.waitSignalState("aaln/2", func(st mgcptest.EndpointState) bool { return hasSignal(st, "L/rg") })
	e.offHook("aaln/2")
	a := <-first
	if a == nil {
		t.FailNow()
	}
	e.waitFor("talking", func() bool { return e.conn("aaln/2").Mode == mgcp.ModeSendRecv })
	connID := e.conn("aaln/2").ID

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := e.pbx.CallWith(ctx, "1002", "5550000", []byte(siptest.DefaultAnswerSDP),
		map[string]string{"Replaces": "no-such-call;to-tag=x;from-tag=y"}); err == nil || c.Status != 481 {
		t.Fatalf("Replaces naming nothing: %+v %v, want 481", c, err)
	}
	if c, err := e.pbx.CallWith(ctx, "1002", "5550000", []byte(siptest.DefaultAnswerSDP),
		map[string]string{"Replaces": a.ReplacesValue() + ";early-only"}); err == nil || c.Status != 486 {
		t.Fatalf("early-only on a confirmed dialog: %+v %v, want 486", c, err)
	}

	sdp := strings.Replace(siptest.DefaultAnswerSDP, "m=audio 40000", "m=audio 40200", 1)
	b, err := e.pbx.CallWith(ctx, "1002", "5557777", []byte(sdp), map[string]string{"Replaces": a.ReplacesValue()})
	if err != nil || b.Status != 200 {
		t.Fatalf("INVITE with Replaces: %+v %v", b, err)
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced call got no BYE")
	}
	c := e.conn("aaln/2")
	if c.ID != connID || c.Mode != mgcp.ModeSendRecv || !strings.Contains(string(c.RemoteSDP), "m=audio 40200") {
		t.Fatalf("connection %s mode %s remote %q: want the same connection toward the new far end", c.ID, c.Mode, c.RemoteSDP)
	}
	if !strings.Contains(string(b.SDP), "m=audio "+strconv.Itoa(c.RTPPort)) {
		t.Errorf("answer %q does not carry the gateway's port %d", b.SDP, c.RTPPort)
	}
	e.onHook("aaln/2")
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hanging up did not end the new call")
	}
	e.noConnections("aaln/2")
}
