package cluster

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPickPreferenceAndDraining(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	cases := []struct {
		name       string
		candidates []string
		preferred  []string
		want       string
	}{
		{"first preferred live", nodes, []string{"c", "a"}, "c"},
		{"preferred not live skipped", []string{"a", "b"}, []string{"c", "b"}, "b"},
		{"no candidate", nil, []string{"a"}, ""},
		{"unknown preference falls back to hashing", nodes, []string{"z"}, pick("gw", nodes, nil)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pick("gw", tc.candidates, tc.preferred); got != tc.want {
				t.Fatalf("pick = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPickSpreadsAndMovesLittle(t *testing.T) {
	three := []string{"node-a", "node-b", "node-c"}
	four := append([]string{"node-d"}, three...) // order must not matter
	count := map[string]int{}
	moved := 0
	const n = 3000
	for i := range n {
		gw := fmt.Sprintf("gw-%d", i)
		before := pick(gw, three, nil)
		if again := pick(gw, []string{"node-c", "node-a", "node-b"}, nil); again != before {
			t.Fatalf("%s: %q with one order of candidates, %q with another", gw, before, again)
		}
		count[before]++
		after := pick(gw, four, nil)
		if after != before {
			if after != "node-d" {
				t.Fatalf("%s moved from %s to %s when node-d joined", gw, before, after)
			}
			moved++
		}
		// node-b leaves: only its gateways move.
		two := []string{"node-a", "node-c"}
		if left := pick(gw, two, nil); before != "node-b" && left != before {
			t.Fatalf("%s moved from %s to %s when node-b left", gw, before, left)
		}
	}
	for _, node := range three {
		if c := count[node]; c < n/3*8/10 || c > n/3*12/10 {
			t.Errorf("%s got %d of %d gateways, not about a third: %v", node, c, n, count)
		}
	}
	if moved < n/4*7/10 || moved > n/4*13/10 {
		t.Errorf("%d of %d gateways moved to the fourth node, not about a quarter", moved, n)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := Config{
		Name:      "bad/name",
		TTL:       1500 * time.Millisecond,
		Margin:    time.Second,
		StoreTTL:  time.Second,
		Gateways:  []string{"gw1", "gw1", ""},
		Endpoints: nil,
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"contains '/'", "no etcd endpoint", "whole number of seconds", "fencing margin", "store TTL", `"gw1" listed twice`, "empty gateway name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	good := Config{Name: "a", Endpoints: []string{"http://127.0.0.1:1"}}
	if err := good.setDefaults(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if good.TTL != DefaultTTL || good.Margin != time.Second || good.Prefix != "/mgsip/" {
		t.Fatalf("defaults: TTL %v margin %v prefix %q", good.TTL, good.Margin, good.Prefix)
	}
	if _, err := New(Config{Name: ""}); err == nil {
		t.Fatal("New accepted a config without name and endpoints")
	}
}

func TestCallStateJSON(t *testing.T) {
	c := CallState{
		Gateway: "gw1", Endpoint: "aaln/1", Line: "alice", Direction: "outgoing",
		MGCP: MGCPState{CallID: "A3C47F21456789F0", ConnectionIDs: []string{"FDE234C8"}, Mode: "sendrecv"},
		SIP: DialogState{CallID: "abc@10.0.0.1", LocalTag: "lt", RemoteTag: "rt", LocalCSeq: 2, RemoteCSeq: 101,
			RouteSet: []string{"<sip:10.0.0.9;lr>"}, RemoteTarget: "sip:bob@10.0.0.2:5060",
			LocalURI: "sip:alice@pbx", RemoteURI: "sip:bob@pbx", UAC: true},
		LocalSDP: "v=0\r\n", RemoteSDP: "v=0\r\n",
		SessionTimer: &SessionTimer{IntervalSeconds: 1800, Refresher: "uac"},
		Updated:      time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back CallState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip changed the call:\n%+v\n%+v", c, back)
	}
	bad := CallState{SessionTimer: &SessionTimer{Refresher: "x"}}
	err = bad.Validate()
	for _, want := range []string{"no gateway", "no endpoint", "no MGCP call id", "session interval", "neither uac nor uas"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
