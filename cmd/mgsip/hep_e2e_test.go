package main

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mgsip/mgsip/bridge"
)

// hepChunks splits a HEP3 datagram into its generic chunks by type.
func hepChunks(b []byte) map[uint16][]byte {
	if len(b) < 6 || string(b[:4]) != "HEP3" || int(binary.BigEndian.Uint16(b[4:])) != len(b) {
		return nil
	}
	out := map[uint16][]byte{}
	for off := 6; off+6 <= len(b); {
		typ, n := binary.BigEndian.Uint16(b[off+2:]), int(binary.BigEndian.Uint16(b[off+4:]))
		if n < 6 || off+n > len(b) {
			return nil
		}
		out[typ] = b[off+6 : off+n]
		off += n
	}
	return out
}

// TestDaemonHEPCorrelation runs a call through the daemon with a HEP
// collector on loopback: MGCP arrives as protocol type 6 with the node
// name and capture password of the configuration, and the MGCP messages of
// each call leg carry that leg's SIP Call-ID in the correlation chunk.
func TestDaemonHEPCorrelation(t *testing.T) {
	coll, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	var mu sync.Mutex
	var packets []map[uint16][]byte
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := coll.ReadFrom(buf)
			if err != nil {
				return
			}
			if c := hepChunks(append([]byte(nil), buf[:n]...)); c != nil {
				mu.Lock()
				packets = append(packets, c)
				mu.Unlock()
			}
		}
	}()
	rd := startDaemon(t, "trace:\n  hep: "+coll.LocalAddr().String()+"\n  hep_node_name: mgsip-e2e\n  hep_password: capture-secret\n")
	rd.script("offhook 1; wait 1 L/dl; dial 1 1002; wait 2 L/rg; offhook 2; wait 1 connected; wait 2 connected")
	code, out := rd.cli("calls", "--json")
	var calls []bridge.CallStatus
	if code != 0 || json.Unmarshal([]byte(out), &calls) != nil || len(calls) != 2 {
		t.Fatalf("calls: exit %d\n%s", code, out)
	}
	rd.script("onhook 1; wait 2 L/ro; onhook 2; wait 1 armed; wait 2 armed")
	want := map[string]bool{calls[0].SIPCallID: false, calls[1].SIPCallID: false}
	rd.waitFor("MGCP of both legs correlated", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range packets {
			if c := string(p[0x0011]); p[0x000b] != nil && p[0x000b][0] == 6 {
				if _, ok := want[c]; ok {
					want[c] = true
				}
			}
		}
		return want[calls[0].SIPCallID] && want[calls[1].SIPCallID]
	})
	mu.Lock()
	defer mu.Unlock()
	var nMGCP, nSIP, nCorr int
	for _, p := range packets {
		typ, payload := p[0x000b], string(p[0x000f])
		if len(typ) != 1 {
			t.Fatalf("protocol type chunk %v", typ)
		}
		switch typ[0] {
		case 6:
			nMGCP++
			if strings.HasPrefix(payload, "INVITE") || strings.HasPrefix(payload, "SIP/2.0") {
				t.Errorf("SIP sent as MGCP: %.40q", payload)
			}
			if len(p[0x0011]) > 0 {
				nCorr++
			}
		case 1:
			nSIP++
		default:
			t.Errorf("protocol type %d", typ[0])
		}
		if string(p[0x0013]) != "mgsip-e2e" || string(p[0x000e]) != "capture-secret" {
			t.Fatalf("node name %q, password %q", p[0x0013], p[0x000e])
		}
	}
	if nMGCP < 10 || nSIP < 5 {
		t.Errorf("%d MGCP and %d SIP packets", nMGCP, nSIP)
	}
	t.Logf("HEP: %d MGCP (%d with a SIP Call-ID), %d SIP packets", nMGCP, nCorr, nSIP)
}
