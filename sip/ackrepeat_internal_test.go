package sip

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func testAck(callID, toTag string) *sip.Request {
	ack := sip.NewRequest(sip.ACK, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5090})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "2001", Host: "127.0.0.1"}, Params: sip.NewParams()}
	from.Params.Add("tag", "ours")
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "2002", Host: "127.0.0.1"}, Params: sip.NewParams()}
	to.Params.Add("tag", toTag)
	ack.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1"))
	ack.AppendHeader(from)
	ack.AppendHeader(to)
	callid := sip.CallIDHeader(callID)
	ack.AppendHeader(&callid)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: 5, MethodName: sip.ACK})
	return ack
}

func testResponse(ack *sip.Request, status int, method sip.RequestMethod, seq uint32) *sip.Response {
	res := sip.NewResponse(status, "X")
	res.AppendHeader(sip.HeaderClone(ack.From()))
	res.AppendHeader(sip.HeaderClone(ack.To()))
	res.AppendHeader(sip.HeaderClone(ack.CallID()))
	res.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	return res
}

// TestAckKeeper: a kept ACK is sent again, unchanged, for each 2xx of
// its INVITE and for nothing else; dropped or expired, never; a full
// keeper keeps nothing more.
func TestAckKeeper(t *testing.T) {
	var sent []string
	k := newAckKeeper(func(r *sip.Request) error { sent = append(sent, r.String()); return nil })
	ack := testAck("c1", "theirs")
	key, ok := k.keep(ack)
	if !ok {
		t.Fatal("not kept")
	}
	for _, res := range []*sip.Response{
		testResponse(ack, 180, sip.INVITE, 5),                     // provisional
		testResponse(ack, 486, sip.INVITE, 5),                     // failure
		testResponse(ack, 200, sip.BYE, 5),                        // another method
		testResponse(ack, 200, sip.INVITE, 6),                     // another INVITE
		testResponse(testAck("c2", "theirs"), 200, sip.INVITE, 5), // another call
		testResponse(testAck("c1", "fork2"), 200, sip.INVITE, 5),  // another fork
	} {
		k.repeat(res)
	}
	if len(sent) != 0 {
		t.Fatalf("sent for responses that are not its 2xx: %q", sent)
	}
	k.repeat(testResponse(ack, 200, sip.INVITE, 5))
	k.repeat(testResponse(ack, 202, sip.INVITE, 5))
	want := ack.Clone().String() // with its Content-Length
	if len(sent) != 2 || sent[0] != want || sent[1] != want {
		t.Fatalf("sent %q, want the ACK twice as it was", sent)
	}
	k.drop(key)
	k.repeat(testResponse(ack, 200, sip.INVITE, 5))
	if len(sent) != 2 {
		t.Fatal("sent after drop")
	}

	k.ttl = 0 // kept until now: expired at once
	k.keep(ack)
	k.repeat(testResponse(ack, 200, sip.INVITE, 5))
	if len(sent) != 2 || k.n.Load() != 0 {
		t.Fatalf("expired ACK sent or kept (%d kept)", k.n.Load())
	}

	k.ttl, k.max = 64*sip.T1, 1
	if _, ok := k.keep(testAck("c3", "t")); !ok {
		t.Fatal("first not kept")
	}
	if _, ok := k.keep(testAck("c4", "t")); ok {
		t.Fatal("kept beyond max")
	}
}
