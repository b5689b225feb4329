package sip_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/sip"
)

// TestInDialogRequestsLeaveFromListener: the INVITE goes to a proxy that
// does not record-route, and the far end answers with a Contact at an
// address mgsip never exchanged a datagram with. The ACK and the BYE go
// to that Contact (no route set, RFC 3261 §12.2.1.1) and must leave from
// the listener's socket, the address their Via and mgsip's Contact name
// (a far end that answers to the source, or admits only its peers'
// addresses, would otherwise see a stranger on another port).
func TestInDialogRequestsLeaveFromListener(t *testing.T) {
	stack, err := sip.NewStack(sip.Config{Listeners: []sip.Listener{{Listen: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(t, stack))
	proxy, far := newPeer(t), newPeer(t)
	d, err := stack.Invite(context.Background(), sip.Call{From: sip.Account{User: "1001"}, To: "2000", Peer: proxy.addr(), SDP: []byte(offer)})
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := proxy.expectFrom("INVITE ", 5*time.Second)
	if inv == "" {
		t.Fatal("no INVITE at the proxy")
	}
	var res strings.Builder
	res.WriteString("SIP/2.0 200 OK\r\n")
	for _, h := range []string{"Via", "From", "Call-ID", "CSeq"} {
		res.WriteString(h + ": " + header(inv, h) + "\r\n")
	}
	res.WriteString("To: " + header(inv, "To") + ";tag=far1\r\nContact: <sip:2000@" + far.addr() + ">\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(answer)) + "\r\n\r\n" + answer)
	proxy.send(stack.LocalAddr(), res.String())
	if e := next(t, d); e.Kind != sip.EventAnswered {
		t.Fatalf("event %+v, want answered", e)
	}
	want := stack.LocalAddr().String()
	if ack, from := far.expectFrom("ACK ", 5*time.Second); ack == "" || from != want {
		t.Errorf("ACK at the Contact from %q, want the listener %s", from, want)
	}
	byeDone := make(chan error, 1)
	go func() { byeDone <- d.Bye(context.Background()) }()
	bye, from := far.expectFrom("BYE ", 5*time.Second)
	if bye == "" {
		t.Fatal("no BYE at the far end's Contact")
	}
	if from != want {
		t.Errorf("BYE from %s, want the listener %s (its Via says %s)", from, want, header(bye, "Via"))
	}
	var ok strings.Builder
	ok.WriteString("SIP/2.0 200 OK\r\n")
	for _, h := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		ok.WriteString(h + ": " + header(bye, h) + "\r\n")
	}
	ok.WriteString("Content-Length: 0\r\n\r\n")
	// Answered where RFC 3261 §18.2.2 says: the Via's sent-by.
	via := header(bye, "Via")
	sentBy := strings.Fields(via)[1]
	sentBy, _, _ = strings.Cut(sentBy, ";")
	to, err := net.ResolveUDPAddr("udp", sentBy)
	if err != nil {
		t.Fatal(err)
	}
	far.send(to, ok.String())
	select {
	case err := <-byeDone:
		if err != nil {
			t.Errorf("BYE: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BYE never completed")
	}
}

// expectFrom is expect that also returns the sender's address.
func (p *udpPeer) expectFrom(prefix string, wait time.Duration) (string, string) {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(wait)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, a, err := p.conn.ReadFrom(buf)
		if err != nil {
			return "", ""
		}
		if m := string(buf[:n]); strings.HasPrefix(m, prefix) {
			return m, a.String()
		}
	}
}
