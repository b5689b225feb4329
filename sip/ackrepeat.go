package sip

// Repeating the ACK of a 2xx to our INVITE (RFC 3261 §13.2.2.4).
//
// The UAS repeats its 2xx until the ACK arrives (§13.3.1.4), so the UAC
// core must pass the same ACK to the transport again for every
// retransmission of the 2xx that reaches it: the ACK of a 2xx is not sent
// in a client transaction, no transaction layer repeats it (§17.1.1.3).
//
// When sipgo's session sends the ACK (DialogClientSession.WriteAck) it
// hooks the INVITE's client transaction, which stays in the Accepted
// state for Timer M (64*T1, RFC 6026 §8.4) and hands it each 200 it
// absorbs. After a PRACK the ACK is built here (prack.go: sipgo's would
// carry the PRACK's CSeq), and the INVITE's transaction, private to the
// session, cannot be hooked: its 2xx retransmissions were absorbed and no
// ACK went out again. The ackKeeper fills that gap from sipgo's transport
// layer, which gives every parsed message to each handler registered with
// OnMessage before the transaction layer sees it: a 2xx of an INVITE
// whose ACK we built is answered with that ACK again, byte for byte (same
// Via branch, the INVITE's CSeq number), for 64*T1 or until the dialog
// ends.

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ackKey names the 2xx an ACK acknowledges: the dialog (Call-ID and both
// tags) and the INVITE's CSeq number.
type ackKey struct {
	callID, fromTag, toTag string
	cseq                   uint32
}

// keyOf returns the key of a request or response of an INVITE dialog.
func keyOf(m interface {
	CallID() *sip.CallIDHeader
	From() *sip.FromHeader
	To() *sip.ToHeader
	CSeq() *sip.CSeqHeader
}) (ackKey, bool) {
	id, from, to, cseq := m.CallID(), m.From(), m.To(), m.CSeq()
	if id == nil || from == nil || to == nil || cseq == nil {
		return ackKey{}, false
	}
	ft, _ := from.Params.Get("tag")
	tt, _ := to.Params.Get("tag")
	return ackKey{callID: id.Value(), fromTag: ft, toTag: tt, cseq: cseq.SeqNo}, true
}

type keptAck struct {
	ack   *sip.Request
	until time.Time
}

// ackKeeper holds the ACKs we built ourselves while their 2xx may still
// be repeated.
type ackKeeper struct {
	mu   sync.Mutex
	m    map[ackKey]keptAck
	n    atomic.Int64 // len(m), read without the lock for every response
	max  int
	ttl  time.Duration
	send func(*sip.Request) error
	// resent counts ACKs sent again (tests, debugging).
	resent atomic.Uint64
}

func newAckKeeper(send func(*sip.Request) error) *ackKeeper {
	return &ackKeeper{m: map[ackKey]keptAck{}, max: 65536, ttl: 64 * sip.T1, send: send}
}

// keep remembers ack (already sent, its Via in place) for the
// retransmissions of its 2xx. It reports the key to drop it by.
func (k *ackKeeper) keep(ack *sip.Request) (ackKey, bool) {
	key, ok := keyOf(ack)
	if !ok {
		return key, false
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) >= k.max {
		for kk, e := range k.m {
			if !now.Before(e.until) {
				delete(k.m, kk)
			}
		}
		if len(k.m) >= k.max {
			// Full of live entries: this ACK is not repeated (the
			// far end's BYE after 64*T1 is what a lost one costs).
			k.n.Store(int64(len(k.m)))
			return key, false
		}
	}
	k.m[key] = keptAck{ack: ack.Clone(), until: now.Add(k.ttl)}
	k.n.Store(int64(len(k.m)))
	return key, true
}

// drop forgets the ACK of key (its dialog ended).
func (k *ackKeeper) drop(key ackKey) {
	k.mu.Lock()
	delete(k.m, key)
	k.n.Store(int64(len(k.m)))
	k.mu.Unlock()
}

// repeat sends the kept ACK of res again when res is a 2xx of an INVITE
// whose ACK is kept; it reports whether there was one. The stack calls
// it for every response on sipgo's transport layer (on the reading
// goroutine: it only writes one datagram) and strays for a stray 2xx the
// gate consumed.
func (k *ackKeeper) repeat(res *sip.Response) bool {
	if k.n.Load() == 0 || !res.IsSuccess() {
		return false
	}
	if cseq := res.CSeq(); cseq == nil || cseq.MethodName != sip.INVITE {
		return false
	}
	key, ok := keyOf(res)
	if !ok {
		return false
	}
	k.mu.Lock()
	e, found := k.m[key]
	if found && !time.Now().Before(e.until) {
		delete(k.m, key)
		k.n.Store(int64(len(k.m)))
		found = false
	}
	k.mu.Unlock()
	if !found {
		return false
	}
	if err := k.send(e.ack.Clone()); err == nil {
		k.resent.Add(1)
	}
	return true
}

// asBuilt is a ClientRequestOption that sends a request as it is (an ACK
// sent again keeps its Via, so its branch).
func asBuilt(*sipgo.Client, *sip.Request) error { return nil }
