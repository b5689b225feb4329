package bridge_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/mgcp"
)

// TestInteropReplacesSIPp: line 1 calls SIPp A (number 2000), which
// answers and logs the dialog's Call-ID and mgsip's tag. SIPp B then sends
// an INVITE whose Replaces names that dialog (RFC 3891): mgsip answers it,
// moves the line's connection to B's media (same connection, B's
// address) and hangs up A (A's scenario needs the BYE). B hangs up after
// a while; the phone goes on hook and the line ends armed. Once B's
// INVITE carries SDP; once it carries none (uac_replaces_offerless.xml):
// B then requires an offer in our 200 and answers in its ACK, and the
// connection moves to B's media once that ACK came.
func TestInteropReplacesSIPp(t *testing.T) {
	for _, sc := range []string{"uac_replaces.xml", "uac_replaces_offerless.xml"} {
		t.Run(strings.TrimSuffix(sc, ".xml"), func(t *testing.T) { interopReplaces(t, "testdata/sipp/"+sc) })
	}
}

func interopReplaces(t *testing.T, scenarioB string) {
	logFile := filepath.Join(t.TempDir(), "a.log")
	uasA := testutil.StartSIPp(t, "-sf", "testdata/sipp/uas_replaced.xml", "-trace_logs", "-log_file", logFile)
	r := newFaultRig(t, rigOptions{uas: uasA.Addr})
	r.sim.offHook("aaln/1")
	r.sim.waitSignal("aaln/1", "L/dl")
	r.sim.collect("aaln/1", "2000")
	r.sim.waitFor("the call answered", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].Mode == mgcp.ModeSendRecv
	})
	connID := r.state("aaln/1").Connections[0].ID
	var fields []string
	r.sim.waitFor("SIPp A logged the dialog", func() bool {
		b, _ := os.ReadFile(logFile)
		_, rest, ok := strings.Cut(string(b), "REPLACES ")
		if !ok {
			return false
		}
		line, _, _ := strings.Cut(rest, "\n")
		fields = strings.Split(strings.TrimSpace(line), ";")
		return len(fields) >= 2 && fields[0] != "" && fields[1] != ""
	})
	inf := filepath.Join(t.TempDir(), "replaces.csv")
	if err := os.WriteFile(inf, []byte("SEQUENTIAL\n"+fields[0]+";"+fields[1]+";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uacB := testutil.StartSIPp(t, "-sf", scenarioB, "-inf", inf, "-s", "1001", r.sipAddr)
	bHost, _, _ := net.SplitHostPort(uacB.Addr)
	r.sim.waitFor("the line's connection toward B", func() bool {
		st := r.state("aaln/1")
		return len(st.Connections) == 1 && st.Connections[0].ID == connID && st.Connections[0].Mode == mgcp.ModeSendRecv &&
			strings.Contains(string(st.Connections[0].RemoteSDP), "c=IN IP4 "+bHost)
	})
	uasA.WaitFor(t, 20*time.Second) // fails unless A got its BYE
	uacB.WaitFor(t, 20*time.Second) // fails unless B was answered and its BYE taken
	r.sim.onHook("aaln/1")
	r.waitArmed("aaln/1")
	if n := len(r.state("aaln/1").Connections); n != 0 {
		t.Errorf("%d connections left", n)
	}
}
