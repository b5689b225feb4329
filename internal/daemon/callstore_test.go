package daemon

import (
	"context"
	"io"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

func storeNode(t *testing.T, etcd, name string) (*cluster.Node, func()) {
	t.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	n, err := cluster.New(cluster.Config{Name: name, MGCPAddr: "mgsip@" + name + ":2727", SIPAddr: name + ":5060",
		Endpoints: []string{etcd}, TTL: 2 * time.Second, Gateways: []string{"gw"}, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	stop := func() { cancel(); _ = n.Close(); <-done }
	t.Cleanup(stop)
	return n, stop
}

// TestCallStoreOverEtcd: the bridge's call goes into etcd and comes back
// unchanged through the new owner's AdoptCalls; the old owner's writes
// after the takeover are refused by the fence, dropped and counted.
func TestCallStoreOverEtcd(t *testing.T) {
	etcd := testutil.StartEtcd(t)
	a, killA := storeNode(t, etcd.Endpoint, "a")
	waitUntil(t, 10*time.Second, "a owns gw", func() bool { return a.Owns("gw") })
	var fencedA atomic.Uint64
	sa := callStore{node: a, fenced: &fencedA}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	call := bridge.StoredCall{Gateway: "gw", Endpoint: "aaln/1", Line: "gw/aaln/1", Direction: "outgoing", Number: "2000",
		CallID: "C1", ConnectionID: "A001", Mode: "sendrecv", GatewaySDP: []byte("v=0\r\n"), Codecs: []string{"PCMU"},
		Start: at, Answered: at.Add(time.Second),
		Dialog: sip.DialogState{CallID: "sip-1", LocalTag: "lt", RemoteTag: "rt", LocalCSeq: 7, RemoteCSeq: 3,
			RouteSet: []string{"<sip:p1;lr>", "<sip:p2;lr>"}, RemoteTarget: "sip:far@127.0.0.1:5060", LocalURI: `"Line 1" <sip:1001@pbx>`,
			RemoteURI: "<sip:2000@pbx>", LocalContact: "sip:1001@127.0.0.1:5070", UAC: true, Transport: "UDP",
			PeerAllow: []string{"INVITE", "UPDATE"}, LocalSDP: []byte("v=0\r\no=mgsip 1 2 IN IP4 127.0.0.1\r\n"),
			RemoteSDP: []byte("v=0\r\n"), SessionInterval: 90 * time.Second, Refresher: true}}
	ctx := context.Background()
	if err := sa.PutCall(ctx, call); err != nil {
		t.Fatal(err)
	}
	stored, err := a.Calls(ctx, "gw")
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored %+v %v", stored, err)
	}
	if st := stored[0].SessionTimer; st == nil || st.Refresher != "uac" || st.IntervalSeconds != 90 {
		t.Errorf("session timer stored as %+v (the UAC refreshes)", st)
	}

	// a dies; b takes the gateway and adopts the call.
	b, _ := storeNode(t, etcd.Endpoint, "b")
	killA()
	waitUntil(t, 10*time.Second, "b owns gw", func() bool { return b.Owns("gw") })
	adopted, err := b.AdoptCalls(ctx, "gw")
	if err != nil || len(adopted) != 1 {
		t.Fatalf("adopted %+v %v", adopted, err)
	}
	back := fromClusterCall(adopted[0])
	if !reflect.DeepEqual(back, call) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, call)
	}

	// The old owner, had it survived unaware, has its writes refused
	// (its fencing deadline passed): dropped (nil to the bridge) and
	// counted.
	if err := sa.DeleteCall(ctx, "gw", "aaln/1", "C1"); err != nil {
		t.Fatalf("a fenced delete: %v", err)
	}
	if err := sa.PutCall(ctx, call); err != nil {
		t.Fatalf("a fenced put: %v", err)
	}
	if fencedA.Load() != 2 {
		t.Errorf("%d fenced writes counted, want 2", fencedA.Load())
	}
	if calls, _ := b.Calls(ctx, "gw"); len(calls) != 1 || calls[0].SIP.LocalCSeq != 7 {
		t.Errorf("the old owner's writes went through: %+v", calls)
	}
	var fencedB atomic.Uint64
	sb := callStore{node: b, fenced: &fencedB}
	if err := sb.DeleteCall(ctx, "gw", "aaln/1", "C1"); err != nil || fencedB.Load() != 0 {
		t.Fatalf("owner's delete: %v (fenced %d)", err, fencedB.Load())
	}
	if calls, _ := b.Calls(ctx, "gw"); len(calls) != 0 {
		t.Errorf("%d calls after the owner's delete", len(calls))
	}
}
