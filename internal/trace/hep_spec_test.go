package trace

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The HEP3 specification's table of generic chunk types (vendor 0x0000),
// written down here apart from the encoder's constants, so that a wrong
// constant in hep.go cannot pass: id, name, and value type with its
// length (0: variable, an octet string).
var hepSpecChunks = map[uint16]struct {
	name string
	size int
}{
	0x0001: {"ip_family", 1}, 0x0002: {"ip_proto", 1},
	0x0003: {"ipv4_src", 4}, 0x0004: {"ipv4_dst", 4},
	0x0005: {"ipv6_src", 16}, 0x0006: {"ipv6_dst", 16},
	0x0007: {"src_port", 2}, 0x0008: {"dst_port", 2},
	0x0009: {"time_sec", 4}, 0x000a: {"time_usec", 4},
	0x000b: {"proto_type", 1}, 0x000c: {"capture_id", 4},
	0x000d: {"keep_alive", 2}, 0x000e: {"auth_key", 0},
	0x000f: {"payload", 0}, 0x0010: {"payload_compressed", 0},
	0x0011: {"correlation_id", 0}, 0x0012: {"vlan", 2},
	0x0013: {"node_name", 0},
}

// The specification's protocol types (chunk 0x000b) that matter here.
const (
	specProtoSIP  = 0x01
	specProtoMGCP = 0x06
	specProtoM2UA = 0x08 // what MGCP was wrongly sent as
)

// specDecode reads a HEP3 packet chunk by chunk against the table: the
// header, the total length, each chunk's vendor, known type and length.
// It returns the values by chunk name, and the order of the chunks.
func specDecode(t *testing.T, b []byte) (map[string][]byte, []string) {
	t.Helper()
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		t.Fatalf("no HEP3 header: % x", b[:min(len(b), 8)])
	}
	if total := int(binary.BigEndian.Uint16(b[4:6])); total != len(b) {
		t.Fatalf("total length %d, datagram %d", total, len(b))
	}
	vals := map[string][]byte{}
	var order []string
	for off := 6; off < len(b); {
		if len(b)-off < 6 {
			t.Fatalf("%d bytes left at %d: no room for a chunk header", len(b)-off, off)
		}
		vendor := binary.BigEndian.Uint16(b[off:])
		typ := binary.BigEndian.Uint16(b[off+2:])
		n := int(binary.BigEndian.Uint16(b[off+4:]))
		if vendor != 0 {
			t.Errorf("chunk 0x%04x: vendor 0x%04x, want generic 0", typ, vendor)
		}
		spec, ok := hepSpecChunks[typ]
		if !ok {
			t.Fatalf("chunk type 0x%04x is not in the specification", typ)
		}
		if n < 6 || off+n > len(b) {
			t.Fatalf("chunk %s: length %d out of bounds", spec.name, n)
		}
		v := b[off+6 : off+n]
		if spec.size > 0 && len(v) != spec.size {
			t.Errorf("chunk %s: %d value bytes, the specification says %d", spec.name, len(v), spec.size)
		}
		if _, dup := vals[spec.name]; dup {
			t.Errorf("chunk %s twice", spec.name)
		}
		vals[spec.name] = v
		order = append(order, spec.name)
		off += n
	}
	return vals, order
}

func u8(v []byte) uint64 {
	if len(v) != 1 {
		return 1 << 40
	}
	return uint64(v[0])
}

func be(v []byte) uint64 {
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x
}

// TestHEPChunksBySpec encodes MGCP and SIP messages over IPv4 and IPv6 and
// checks every chunk, type and value against the specification's table.
func TestHEPChunksBySpec(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 123456789, time.UTC)
	for _, tt := range []struct {
		name                     string
		src, dst                 string
		proto                    uint8
		family, specProto        uint64
		corr, nodeName, password string
	}{
		{"mgcp ipv4 with correlation", "192.0.2.9:2427", "192.0.2.1:2727", HEPMGCP, 2, specProtoMGCP, "a84b4c76e66710@pbx", "mgsip-a", "hep-pass"},
		{"mgcp ipv6", "[2001:db8::9]:2427", "[2001:db8::1]:2727", HEPMGCP, 10, specProtoMGCP, "", "", ""},
		{"sip ipv4", "192.0.2.1:5060", "198.51.100.7:5060", HEPSIP, 2, specProtoSIP, "", "mgsip-b", "x"},
		{"sip ipv6 correlation", "[2001:db8::1]:5060", "[2001:db8::7]:5080", HEPSIP, 10, specProtoSIP, "c1", "n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := netip.MustParseAddrPort(tt.src), netip.MustParseAddrPort(tt.dst)
			payload := []byte("CRCX 1204 aaln/1@gw.example MGCP 1.0\r\nC: 1\r\n")
			b, err := encodeHEP(nil, hepPacket{Src: src, Dst: dst, Time: at, Proto: tt.proto, NodeID: 2427,
				NodeName: tt.nodeName, Password: tt.password, Correlation: tt.corr, Payload: payload})
			if err != nil {
				t.Fatal(err)
			}
			v, order := specDecode(t, b)
			want := map[string]uint64{"ip_family": tt.family, "ip_proto": 17, "src_port": uint64(src.Port()),
				"dst_port": uint64(dst.Port()), "time_sec": uint64(at.Unix()), "time_usec": 123456, "capture_id": 2427}
			for name, w := range want {
				got := be(v[name])
				if name == "ip_family" || name == "ip_proto" {
					got = u8(v[name])
				}
				if got != w {
					t.Errorf("%s = %d, want %d", name, got, w)
				}
			}
			if p := u8(v["proto_type"]); p != tt.specProto || p == specProtoM2UA && tt.proto == HEPMGCP {
				t.Errorf("proto_type = %d, want %d", p, tt.specProto)
			}
			srcKey, dstKey := "ipv4_src", "ipv4_dst"
			if tt.family == 10 {
				srcKey, dstKey = "ipv6_src", "ipv6_dst"
			}
			if got := net.IP(v[srcKey]).String(); got != src.Addr().String() {
				t.Errorf("%s = %s", srcKey, got)
			}
			if got := net.IP(v[dstKey]).String(); got != dst.Addr().String() {
				t.Errorf("%s = %s", dstKey, got)
			}
			for name, w := range map[string]string{"correlation_id": tt.corr, "node_name": tt.nodeName, "auth_key": tt.password} {
				got, present := v[name]
				if w == "" && present {
					t.Errorf("%s present (%q) though empty", name, got)
				}
				if w != "" && string(got) != w {
					t.Errorf("%s = %q, want %q", name, got, w)
				}
			}
			if string(v["payload"]) != string(payload) {
				t.Errorf("payload %q", v["payload"])
			}
			if order[len(order)-1] != "payload" {
				t.Errorf("chunk order %v: the payload goes last", order)
			}
		})
	}
}

// TestHEPThroughTheTap: MGCP through the tap reaches a collector on
// loopback as protocol type 6 with the SIP Call-ID of the call on the
// endpoint: the command by its endpoint, the response by the command's
// transaction; a message of an idle endpoint goes without; SIP is type 1.
func TestHEPThroughTheTap(t *testing.T) {
	coll, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	h, err := NewHEPSender(HEPOptions{Collector: coll.LocalAddr().String(), NodeID: 7, NodeName: "mgsip-test", Password: "capture-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	calls := map[string]string{"aaln/1@gw.example": "sip-call-1@mgsip"}
	tap := &Tapper{HEP: h, Correlate: &MGCPCorrelator{Lookup: func(ep string) string { return calls[ep] }}}
	us := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2727}
	gw := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 2427}
	gwOtherPort := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 2428}
	sends := []struct {
		proto    string
		out      bool
		from     *net.UDPAddr
		msg      string
		wantCorr string
		wantType uint64
	}{
		{"mgcp", true, gw, "CRCX 1001 aaln/1@gw.example MGCP 1.0\r\nC: A1\r\nM: recvonly\r\n", "sip-call-1@mgsip", specProtoMGCP},
		// the answer may come from another port of the gateway
		{"mgcp", false, gwOtherPort, "200 1001 OK\r\nI: 9\r\n", "sip-call-1@mgsip", specProtoMGCP},
		{"mgcp", false, gw, "NTFY 55 aaln/1@gw.example MGCP 1.0\r\nX: 1\r\nO: L/hu\r\n", "sip-call-1@mgsip", specProtoMGCP},
		{"mgcp", true, gw, "200 55 OK\r\n", "sip-call-1@mgsip", specProtoMGCP},
		// same transaction id, other direction: not the CRCX's answer
		{"mgcp", true, gw, "200 1001 OK\r\n", "", specProtoMGCP},
		{"mgcp", false, gw, "NTFY 56 aaln/2@gw.example MGCP 1.0\r\nO: L/hd\r\n", "", specProtoMGCP},
		{"sip", true, gw, "OPTIONS sip:pbx SIP/2.0\r\nCall-ID: x\r\n\r\n", "", specProtoSIP},
	}
	if err := coll.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for i, s := range sends {
		tap.observe(s.proto, s.out, us, s.from, []byte(s.msg))
		n, _, err := coll.ReadFrom(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		v, _ := specDecode(t, buf[:n])
		t.Run(fmt.Sprintf("%d", i), func(t *testing.T) {
			if p := u8(v["proto_type"]); p != s.wantType {
				t.Errorf("proto_type %d, want %d", p, s.wantType)
			}
			if got := string(v["correlation_id"]); got != s.wantCorr {
				t.Errorf("correlation %q, want %q", got, s.wantCorr)
			}
			if string(v["node_name"]) != "mgsip-test" || string(v["auth_key"]) != "capture-pw" || be(v["capture_id"]) != 7 {
				t.Errorf("node %q, key %q, id %d", v["node_name"], v["auth_key"], be(v["capture_id"]))
			}
			if string(v["payload"]) != s.msg {
				t.Errorf("payload %q", v["payload"])
			}
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(v["ipv4_src"])), uint16(be(v["src_port"])))
			want := s.from.AddrPort()
			if s.out {
				want = us.AddrPort()
			}
			want = netip.AddrPortFrom(want.Addr().Unmap(), want.Port())
			if src != want {
				t.Errorf("source %s, want %s", src, want)
			}
		})
	}
}
