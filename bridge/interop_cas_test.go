package bridge_test

import (
	"context"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// TestInteropTrunkOriginatedSIPp: a CAS channel (RFC 3064 MS) seizes and
// sends 2000; mgsip places the call at SIPp, the provider here (its
// built-in UAS: 180, 200, then waits for the BYE). The trunk is answered
// on the 200, releases, and SIPp gets the BYE: its scenario passes only
// if the whole call went as SIP says.
func TestInteropTrunkOriginatedSIPp(t *testing.T) {
	uas := testutil.StartSIPp(t, "-sn", "uas")
	e := casEnvAt(t, "MS", "", nil, nil, uas.Addr)
	ctx := context.Background()
	if _, err := e.gw.Seize(ctx, tch1, "2000", "2125550000"); err != nil {
		t.Fatal(err)
	}
	e.waitSignalState(tch1, func(st mgcptest.EndpointState) bool {
		return st.Answered && !st.NotificationState && len(st.Connections) == 1 && st.Connections[0].Mode == "sendrecv"
	})
	if _, err := e.gw.TrunkRelease(ctx, tch1); err != nil {
		t.Fatal(err)
	}
	uas.WaitFor(t, 20*time.Second)
	if r := e.record(); !r.Answered || r.Called != "2000" || r.SIPStatus != 200 {
		t.Errorf("record %+v", r)
	}
	e.idleChannel(tch1, "MS")
}
