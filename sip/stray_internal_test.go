package sip

import (
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// TestRawInviteKey: the gate reads the key of a 2xx to an INVITE from
// the raw text, long or compact header names in any case, and gives up
// on anything else.
func TestRawInviteKey(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      localID
		cseq      uint32
		ok        bool
	}{
		{"long", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h;tag=inuri>;tag=ours\r\nTo: <sip:b@h>;tag=theirs\r\nCall-ID: c1@h\r\nCSeq: 12 INVITE\r\n\r\n",
			localID{"c1@h", "ours"}, 12, true},
		{"compact, any case", "SIP/2.0 200 OK\r\nf: sip:a@h;tag=t2;x=1\r\ni: c2\r\ncseq:\t7\tINVITE\r\n\r\nv=0\r\nCSeq: 9 INVITE\r\n",
			localID{"c2", "t2"}, 7, true},
		{"not an INVITE", "SIP/2.0 200 OK\r\nFrom: <sip:a@h>;tag=x\r\nCall-ID: c3\r\nCSeq: 7 BYE\r\n\r\n", localID{}, 0, false},
		{"no From tag", "SIP/2.0 200 OK\r\nFrom: <sip:a@h>\r\nCall-ID: c4\r\nCSeq: 7 INVITE\r\n\r\n", localID{}, 0, false},
		{"bad CSeq", "SIP/2.0 200 OK\r\nFrom: <sip:a@h>;tag=x\r\nCall-ID: c5\r\nCSeq: x INVITE\r\n\r\n", localID{}, 0, false},
		{"no CSeq", "SIP/2.0 200 OK\r\nFrom: <sip:a@h>;tag=x\r\nCall-ID: c6\r\n\r\n", localID{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, cseq, ok := rawInviteKey([]byte(tc.msg))
			if ok != tc.ok || (ok && (id != tc.want || cseq != tc.cseq)) {
				t.Fatalf("got %+v %d %v, want %+v %d %v", id, cseq, ok, tc.want, tc.cseq, tc.ok)
			}
		})
	}
}

func testInvite(callID string) *sip.Request {
	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "2002", Host: "127.0.0.1", Port: 5090})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "2001", Host: "127.0.0.1"}, Params: sip.NewParams()}
	from.Params.Add("tag", "ours")
	inv.AppendHeader(from)
	inv.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "2002", Host: "127.0.0.1"}, Params: sip.NewParams()})
	id := sip.CallIDHeader(callID)
	inv.AppendHeader(&id)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: 10, MethodName: sip.INVITE})
	return inv
}

func test2xx(inv *sip.Request, tag string) *sip.Response {
	res := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	res.To().Params.Add("tag", tag)
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: tag, Host: "127.0.0.1", Port: 5091}})
	return res
}

// TestStraysBounds: one INVITE hangs up at most maxForks extra dialogs,
// each once; the kept dialog's 2xx and a 2xx before the wait ended are
// left alone (the latter until it ends); a full table watches nothing
// more; expired entries go.
func TestStraysBounds(t *testing.T) {
	var acks, byes []*sip.Request
	k := newAckKeeper(func(*sip.Request) error { return nil })
	l := logrus.New()
	l.Out = discardWriter{}
	st := newStrays(k, func(a *sip.Request) error { acks = append(acks, a); return nil },
		func(b *sip.Request) { byes = append(byes, b) }, logrus.NewEntry(l))
	inv := testInvite("c1")
	st.watchInvite(inv)
	if st.handle(test2xx(inv, "early"), false) || len(acks) != 0 {
		t.Fatal("a 2xx before the wait ended was taken at once")
	}
	st.settle(inv, test2xx(inv, "kept"))
	if len(acks) != 1 || len(byes) != 1 || toTag(byes[0]) != "early" {
		t.Fatalf("at settle: %d ACKs, %d BYEs; want the early 2xx's", len(acks), len(byes))
	}
	if st.handle(test2xx(inv, "kept"), true) {
		t.Fatal("the kept dialog's 2xx was taken")
	}
	for i := 0; i < 2*maxForks; i++ {
		st.handle(test2xx(inv, "f"+strconv.Itoa(i%(maxForks+3))), false)
	}
	if len(acks) != maxForks || len(byes) != maxForks {
		t.Fatalf("%d ACKs, %d BYEs for one INVITE, want at most %d", len(acks), len(byes), maxForks)
	}
	if b := byes[1]; b.CSeq().SeqNo != 11 || b.CSeq().MethodName != sip.BYE || b.Recipient.User != "f0" {
		t.Fatalf("BYE %s", b.StartLine())
	}

	st.max = st.n0() + 1
	st.watchInvite(testInvite("c2"))
	st.watchInvite(testInvite("c3"))
	if _, ok := st.invites[localID{"c3", "ours"}]; ok {
		t.Fatal("watched beyond max")
	}
	st.ttl = 0
	st.settle(testInvite("c2"), nil)
	if st.handle(test2xx(testInvite("c2"), "x"), false) || st.n0() != 1 {
		t.Fatalf("expired entry taken or kept (%d left)", st.n0())
	}
}

// n0 is the number of entries.
func (t *strays) n0() int { return int(t.n.Load()) }

func toTag(r *sip.Request) string {
	tag, _ := r.To().Params.Get("tag")
	return tag
}

// TestStraysReinvite: a 2xx to a re-INVITE is left to its waiter while
// the wait goes on; abandoned, the 2xx seen meanwhile gets its ACK at
// once and its repetitions the kept ACK (consumed at the gate); a
// re-INVITE answered in time and forgotten leaves nothing behind.
func TestStraysReinvite(t *testing.T) {
	var acks []*sip.Request
	k := newAckKeeper(func(*sip.Request) error { return nil })
	l := logrus.New()
	l.Out = discardWriter{}
	st := newStrays(k, func(a *sip.Request) error { acks = append(acks, a); return nil },
		func(*sip.Request) { t.Error("BYE for a re-INVITE") }, logrus.NewEntry(l))
	re := testInvite("c1")
	re.To().Params.Add("tag", "theirs")
	rid, ok := st.watchReinvite(re)
	if !ok {
		t.Fatal("not watched")
	}
	ok2xx := sip.NewResponseFromRequest(re, 200, "OK", nil)
	if st.handle(ok2xx, true) || st.handle(ok2xx, false) || len(acks) != 0 {
		t.Fatal("a 2xx taken while its wait went on")
	}
	st.abandon(rid)
	if len(acks) != 1 || acks[0].CSeq().SeqNo != 10 || acks[0].CSeq().MethodName != sip.ACK || toTag(acks[0]) != "theirs" {
		t.Fatalf("ACKs at abandon: %v", acks)
	}
	if !st.handle(ok2xx, true) || k.resent.Load() != 1 || len(acks) != 1 {
		t.Fatalf("repetition at the gate: resent %d, ACKs %d", k.resent.Load(), len(acks))
	}
	if st.handle(ok2xx, false) {
		t.Fatal("repetition on the transport layer reported as taken (the keeper answers it there)")
	}

	re2 := testInvite("c2")
	rid2, _ := st.watchReinvite(re2)
	st.forget(rid2)
	if st.handle(sip.NewResponseFromRequest(re2, 200, "OK", nil), true) || len(acks) != 1 {
		t.Fatal("a forgotten re-INVITE's 2xx was taken")
	}
}
