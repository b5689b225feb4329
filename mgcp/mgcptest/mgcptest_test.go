package mgcptest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

func TestMemNetDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewMemNet()
		a := n.MustListen("127.0.0.1:0")
		b := n.MustListen("127.0.0.1:2427")
		if _, err := n.Listen("127.0.0.1:2427"); err == nil {
			t.Fatal("second bind of the same address succeeded")
		}
		if _, err := a.WriteTo([]byte("hello"), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		k, from, err := b.ReadFrom(buf)
		if err != nil || string(buf[:k]) != "hello" || from.String() != a.LocalAddr().String() {
			t.Fatalf("%q from %v: %v", buf[:k], from, err)
		}
		// A read deadline ends a read with a timeout error.
		_ = b.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := b.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
		// Writing to nobody loses the datagram silently, like UDP.
		if _, err := a.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))); err != nil {
			t.Fatal(err)
		}
		_ = b.Close()
		_ = b.SetReadDeadline(time.Time{})
		if _, _, err := b.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		_ = a.Close()
	})
}

func TestFaultConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewMemNet()
		rx := n.MustListen("127.0.0.1:1")
		plan := []Fault{{Drop: true}, {Duplicate: true}, {Hold: true}, {}, {Delay: time.Second}, {}}
		i := 0
		f := NewFaultConn(n.MustListen("127.0.0.1:2"), func([]byte, net.Addr) Fault { i++; return plan[i-1] })
		for _, s := range []string{"dropped", "twice", "held", "after-held", "delayed", "last"} {
			if _, err := f.WriteTo([]byte(s), rx.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		var got []string
		buf := make([]byte, 32)
		for {
			_ = rx.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			k, _, err := rx.ReadFrom(buf)
			if err != nil {
				break
			}
			got = append(got, string(buf[:k]))
		}
		want := []string{"twice", "twice", "after-held", "held", "last", "delayed"}
		if len(got) != len(want) {
			t.Fatalf("got %q want %q", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("got %q want %q", got, want)
			}
		}
		_ = f.Close()
		_ = rx.Close()
	})
}

func TestWritePcap(t *testing.T) {
	var b bytes.Buffer
	p := Packet{At: time.Unix(1700000000, 5000), From: netip.MustParseAddrPort("127.0.0.1:2727"), To: netip.MustParseAddrPort("127.0.0.2:2427"), Payload: []byte("000 1\r\n")}
	if err := WritePcap(&b, []Packet{p}); err != nil {
		t.Fatal(err)
	}
	d := b.Bytes()
	if binary.LittleEndian.Uint32(d) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(d[20:]) != 101 { // LINKTYPE_RAW
		t.Fatalf("bad global header % x", d[:24])
	}
	if caplen := binary.LittleEndian.Uint32(d[24+8:]); caplen != 28+7 || len(d) != 24+16+28+7 {
		t.Fatalf("record length %d, file %d", caplen, len(d))
	}
	ip := d[40:]
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Error("IPv4 header checksum does not verify")
	}
	if binary.BigEndian.Uint16(ip[20:]) != 2727 || binary.BigEndian.Uint16(ip[22:]) != 2427 || string(ip[28:]) != "000 1\r\n" {
		t.Errorf("UDP header or payload wrong: % x", ip[20:])
	}
}
