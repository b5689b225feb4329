package sip

// 2xx responses to our INVITEs that no dialog takes (RFC 3261 §13.2.2.4).
//
// Every 2xx to an INVITE must be acknowledged: its UAS repeats it until
// the ACK arrives (§13.3.1.4), and gives up with a BYE after 64*T1. Two
// kinds reach mgsip with nobody to acknowledge them:
//
//   - A second 2xx from another fork of our initial INVITE (another To
//     tag), after a proxy forked it (§13.2.2.4, §19.3). sipgo's INVITE
//     client transaction absorbs it as a retransmission of the first
//     (RFC 6026 §8.4 keys it by the branch only), so the session never
//     sees a second dialog. We keep one call: the extra dialog gets its
//     ACK and, at once, a BYE ("the UAC core MUST generate an ACK ... and
//     then a BYE", §13.2.2.4). The same goes for every 2xx to an INVITE
//     whose wait ended without a dialog (we cancelled it and the 200
//     crossed our CANCEL, §9.1).
//   - A 2xx to a re-INVITE we abandoned (the call ended while it was
//     pending, §15: the BYE goes at once): its transaction was terminated
//     when the wait ended, so the 2xx matches nothing.
//
// The strays table remembers our INVITEs while such a 2xx may come: the
// initial INVITE from the moment it is sent until 64*T1 after the wait
// for its answer ended, an abandoned re-INVITE for 64*T1. The 2xx is seen
// on sipgo's transport layer (every message, before the transaction
// layer) and, for UDP from the peers, in the gate below sipgo, where a
// 2xx that is known to be stray is consumed: otherwise sipgo's session
// would also send the kept dialog's ACK again for a fork's 200 (its
// retransmission hook checks the status code only). Each ACK built here
// is kept by the ackKeeper, so every repetition of its 2xx gets the same
// ACK again, byte for byte, for 64*T1.

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// localID names our side of an INVITE dialog: the Call-ID and our tag
// (the From tag of our requests and of their responses).
type localID struct{ callID, fromTag string }

// reinviteID names a re-INVITE of ours: our side and its CSeq number.
type reinviteID struct {
	localID
	cseq uint32
}

// maxForks bounds the extra dialogs hung up per INVITE (a peer sending
// 2xx with ever new tags gets no more than this).
const maxForks = 8

type outInvite struct {
	inv     *sip.Request // the INVITE as last sent
	settled bool         // the wait for the answer is over
	kept    string       // To tag of the dialog kept ("" none)
	cseq    uint32       // CSeq number of the INVITE answered (settled)
	until   time.Time    // settled: forgotten after
	pending []*sip.Response
	forks   map[string]bool // tags acknowledged and hung up
}

type outReinvite struct {
	req       *sip.Request
	abandoned bool
	until     time.Time     // abandoned: forgotten after
	seen      *sip.Response // a 2xx seen while the wait went on
	acked     bool
}

// strays tracks our INVITEs whose 2xx may find nobody to take it.
type strays struct {
	mu        sync.Mutex
	invites   map[localID]*outInvite
	reinvites map[reinviteID]*outReinvite
	n         atomic.Int64 // entries, read without the lock per response
	max       int
	ttl       time.Duration

	acks    *ackKeeper
	sendAck func(*sip.Request) error
	// hangUp sends the BYE of an extra dialog (on its own goroutine).
	hangUp func(bye *sip.Request)
	log    *logrus.Entry

	// forked counts extra dialogs acknowledged and hung up; lateAcked
	// 2xx to abandoned re-INVITEs acknowledged.
	forked, lateAcked atomic.Uint64
}

func newStrays(acks *ackKeeper, sendAck func(*sip.Request) error, hangUp func(*sip.Request), log *logrus.Entry) *strays {
	return &strays{invites: map[localID]*outInvite{}, reinvites: map[reinviteID]*outReinvite{},
		max: 65536, ttl: 64 * sip.T1, acks: acks, sendAck: sendAck, hangUp: hangUp, log: log}
}

func localOf(m interface {
	CallID() *sip.CallIDHeader
	From() *sip.FromHeader
}) (localID, bool) {
	id, from := m.CallID(), m.From()
	if id == nil || from == nil {
		return localID{}, false
	}
	tag, _ := from.Params.Get("tag")
	return localID{callID: id.Value(), fromTag: tag}, tag != ""
}

func (t *strays) count() { t.n.Store(int64(len(t.invites) + len(t.reinvites))) }

// room reports whether one more entry fits, dropping expired ones when
// the table is full. Called with mu held.
func (t *strays) room(now time.Time) bool {
	if len(t.invites)+len(t.reinvites) < t.max {
		return true
	}
	for k, e := range t.invites {
		if e.settled && !now.Before(e.until) {
			delete(t.invites, k)
		}
	}
	for k, e := range t.reinvites {
		if e.abandoned && !now.Before(e.until) {
			delete(t.reinvites, k)
		}
	}
	return len(t.invites)+len(t.reinvites) < t.max
}

// watchInvite remembers an initial INVITE just sent. A full table
// remembers nothing (a fork's 2xx is then left to its UAS's BYE).
func (t *strays) watchInvite(inv *sip.Request) {
	id, ok := localOf(inv)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.room(time.Now()) {
		t.invites[id] = &outInvite{inv: inv, forks: map[string]bool{}}
		t.count()
	}
}

// settle ends the wait for the answer of inv: the dialog of res (a 2xx)
// is kept, or none when res is nil. A 2xx of another dialog seen so far
// is acknowledged and hung up now; later ones as they come.
func (t *strays) settle(inv *sip.Request, res *sip.Response) {
	id, ok := localOf(inv)
	if !ok || inv.CSeq() == nil {
		return
	}
	t.mu.Lock()
	e := t.invites[id]
	if e == nil || e.settled {
		t.mu.Unlock()
		return
	}
	e.settled, e.inv, e.until = true, trimmed(inv), time.Now().Add(t.ttl)
	if cs := inv.CSeq(); cs != nil {
		e.cseq = cs.SeqNo
	}
	if res != nil {
		e.kept, _ = res.To().Params.Get("tag")
	}
	var extra []*sip.Response
	for _, p := range e.pending {
		if tag, _ := p.To().Params.Get("tag"); tag != e.kept && p.CSeq().SeqNo == e.cseq && len(e.forks) < maxForks && !e.forks[tag] {
			e.forks[tag] = true
			extra = append(extra, p)
		}
	}
	e.pending = nil
	t.mu.Unlock()
	for _, p := range extra {
		t.endExtra(inv, p)
	}
}

// trimmed is what uacDialogRequest reads of an INVITE (its
// Request-URI, From, Call-ID, CSeq and transport), so that the table
// does not hold the whole request and its body for 64*T1.
func trimmed(inv *sip.Request) *sip.Request {
	r := sip.NewRequest(sip.INVITE, *inv.Recipient.Clone())
	r.AppendHeader(sip.HeaderClone(inv.From()))
	r.AppendHeader(sip.HeaderClone(inv.CallID()))
	r.AppendHeader(sip.HeaderClone(inv.CSeq()))
	r.SetTransport(inv.Transport())
	return r
}

// watchReinvite remembers a re-INVITE just sent, until forget or
// abandon.
func (t *strays) watchReinvite(req *sip.Request) (reinviteID, bool) {
	id, ok := localOf(req)
	cs := req.CSeq()
	if !ok || cs == nil {
		return reinviteID{}, false
	}
	rid := reinviteID{localID: id, cseq: cs.SeqNo}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.room(time.Now()) {
		return rid, false
	}
	t.reinvites[rid] = &outReinvite{req: req}
	t.count()
	return rid, true
}

// forget: the re-INVITE was answered and its answer handled.
func (t *strays) forget(rid reinviteID) {
	t.mu.Lock()
	delete(t.reinvites, rid)
	t.count()
	t.mu.Unlock()
}

// abandon: nobody waits for the re-INVITE's answer any more. A 2xx that
// came meanwhile is acknowledged now, a later one when it comes.
func (t *strays) abandon(rid reinviteID) {
	t.mu.Lock()
	e := t.reinvites[rid]
	if e == nil || e.abandoned {
		t.mu.Unlock()
		return
	}
	e.abandoned, e.until = true, time.Now().Add(t.ttl)
	seen := e.seen
	if seen != nil {
		e.acked = true
	}
	t.mu.Unlock()
	if seen != nil {
		t.ackLate(e.req, seen)
	}
}

// handle looks at a 2xx to an INVITE. fromGate: the gate below sipgo
// asks, and a stray 2xx it reports (true) is consumed there, its
// repetitions answered here; otherwise (sipgo's transport layer) the
// ackKeeper already answered a repetition.
func (t *strays) handle(res *sip.Response, fromGate bool) bool {
	if t.n.Load() == 0 || !res.IsSuccess() {
		return false
	}
	cs := res.CSeq()
	if cs == nil || cs.MethodName != sip.INVITE || res.To() == nil {
		return false
	}
	id, ok := localOf(res)
	if !ok {
		return false
	}
	toTag, _ := res.To().Params.Get("tag")
	now := time.Now()
	t.mu.Lock()
	if e := t.invites[id]; e != nil {
		switch {
		case e.settled && !now.Before(e.until):
			delete(t.invites, id)
			t.count()
		case !e.settled:
			// Which dialog is kept is not known yet (sipgo's transaction
			// layer takes responses on goroutines of their own, so the
			// first 2xx here is not always the session's): wait.
			if !fromGate && len(e.pending) < maxForks && !hasTag(e.pending, toTag) {
				e.pending = append(e.pending, res)
			}
			t.mu.Unlock()
			return false
		case cs.SeqNo != e.cseq || toTag == e.kept:
			// The kept dialog's own 2xx, or not this INVITE's: the normal
			// paths handle it.
		case e.forks[toTag]:
			t.mu.Unlock()
			return fromGate && t.acks.repeat(res)
		case len(e.forks) >= maxForks:
			t.mu.Unlock()
			return fromGate // dropped: no more extra dialogs for this INVITE
		default:
			e.forks[toTag] = true
			inv := e.inv
			t.mu.Unlock()
			t.endExtra(inv, res)
			return true
		}
	}
	rid := reinviteID{localID: id, cseq: cs.SeqNo}
	e := t.reinvites[rid]
	switch {
	case e == nil:
	case e.abandoned && !now.Before(e.until):
		delete(t.reinvites, rid)
		t.count()
	case !e.abandoned:
		if e.seen == nil {
			e.seen = res
		}
	case e.acked:
		t.mu.Unlock()
		return fromGate && t.acks.repeat(res)
	default:
		e.acked = true
		req := e.req
		t.mu.Unlock()
		t.ackLate(req, res)
		return true
	}
	t.mu.Unlock()
	return false
}

func hasTag(rs []*sip.Response, tag string) bool {
	for _, r := range rs {
		if t, _ := r.To().Params.Get("tag"); t == tag {
			return true
		}
	}
	return false
}

// endExtra acknowledges the 2xx of a dialog we do not keep and hangs it
// up (RFC 3261 §13.2.2.4).
func (t *strays) endExtra(inv *sip.Request, res *sip.Response) {
	log := t.log.WithFields(logrus.Fields{"sip_call_id": callID(res), "status": res.StatusCode, "source": res.Source()})
	if tag, _ := res.To().Params.Get("tag"); tag == "" {
		log.Info("2xx to our INVITE without a To tag: not acknowledged")
		return
	}
	ack := uacDialogRequest(sip.ACK, inv, res, res.CSeq().SeqNo)
	if err := t.sendAck(ack); err != nil {
		log.WithError(err).Info("ACK of an extra dialog's 2xx not sent")
		return
	}
	t.acks.keep(ack) // repeated for each repetition of that 2xx
	t.forked.Add(1)
	// §12.2.1.1: the BYE's CSeq is above the INVITE's.
	t.hangUp(uacDialogRequest(sip.BYE, inv, res, res.CSeq().SeqNo+1))
	log.Info("2xx from a second fork of our INVITE: acknowledged and hung up (one call is kept)")
}

// ackLate acknowledges a 2xx to a re-INVITE nobody waits for.
func (t *strays) ackLate(req *sip.Request, res *sip.Response) {
	ack := inDialogAck(req, res)
	if err := t.sendAck(ack); err != nil {
		t.log.WithError(err).WithField("sip_call_id", callID(res)).Info("ACK of a late 2xx to an abandoned re-INVITE not sent")
		return
	}
	t.acks.keep(ack)
	t.lateAcked.Add(1)
	t.log.WithField("sip_call_id", callID(res)).Debug("late 2xx to an abandoned re-INVITE acknowledged")
}

// uacDialogRequest builds a request in the dialog that the 2xx res to our
// initial INVITE inv set up (RFC 3261 §12.1.2): our From, the 2xx's To
// (its tag), the Call-ID; the route set is the 2xx's Record-Route in
// reverse, the remote target its Contact (§12.2.1.1, with a strict
// router first in the route set the target goes last).
func uacDialogRequest(method sip.RequestMethod, inv *sip.Request, res *sip.Response, cseq uint32) *sip.Request {
	target := remoteTarget(inv, res)
	req := sip.NewRequest(method, *target.Clone())
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	var routes []string
	for _, h := range res.GetHeaders("Record-Route") {
		routes = append(routes, splitContacts(h.Value())...)
	}
	slices.Reverse(routes)
	for _, r := range routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	if r := req.Route(); r != nil && !r.Address.UriParams.Has("lr") {
		// §12.2.1.1, a strict router first: it is the Request-URI, the
		// rest of the route set follows and the remote target goes last.
		req.Recipient = *r.Address.Clone()
		for range routes {
			req.RemoveHeader("Route")
		}
		for _, r := range routes[1:] {
			req.AppendHeader(sip.NewHeader("Route", r))
		}
		req.AppendHeader(sip.NewHeader("Route", "<"+target.String()+">"))
	}
	req.SetBody(nil)
	req.SetTransport(inv.Transport())
	return req
}

// remoteTarget is where a request in the dialog of res goes: its Contact
// (RFC 3261 §12.1.2), unless that is no SIP URI we can reach the way the
// INVITE went: a tel: or other non-SIP URI, "*", a sips: URI while the
// INVITE did not go over TLS (§26.2: never over an unprotected hop), or
// no host. Such a Contact is the far end's mistake or a probe; the
// request then goes to the INVITE's own target, never to a name the far
// end chose for a lookup (a tel: or "*" target makes sipgo query DNS).
func remoteTarget(inv *sip.Request, res *sip.Response) sip.Uri {
	c := res.Contact()
	if c == nil {
		return inv.Recipient
	}
	u := c.Address
	tls := strings.EqualFold(inv.Transport(), "TLS") || strings.EqualFold(inv.Transport(), "WSS")
	switch {
	case u.Wildcard, u.Host == "":
		return inv.Recipient
	case strings.EqualFold(u.Scheme, "sip"):
		return u
	case strings.EqualFold(u.Scheme, "sips") && tls:
		return u
	}
	return inv.Recipient
}

// inDialogAck builds the ACK of a 2xx to the in-dialog INVITE inv: its
// Call-ID, tags, CSeq number and route (RFC 3261 §13.2.2.4).
func inDialogAck(inv *sip.Request, res *sip.Response) *sip.Request {
	target := remoteTarget(inv, res)
	ack := sip.NewRequest(sip.ACK, *target.Clone())
	ack.AppendHeader(sip.HeaderClone(inv.From()))
	ack.AppendHeader(sip.HeaderClone(res.To()))
	ack.AppendHeader(sip.HeaderClone(inv.CallID()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.ACK})
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	for _, h := range inv.GetHeaders("Route") {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	ack.SetBody(nil)
	ack.SetTransport(inv.Transport())
	ack.SetDestination(inv.Destination())
	return ack
}

// stray2xx is the gate's question for a UDP response from a peer:
// consume it as a stray 2xx (handled here)? The status line and the
// Call-ID, From tag and CSeq are read from the raw text; only a 2xx to
// an INVITE that the table may take as stray (its INVITE's wait is over)
// is parsed, so the 2xx a call waits for costs no second parse.
func (s *Stack) stray2xx(data []byte) bool {
	if s.strays == nil || s.strays.n.Load() == 0 || !bytes.HasPrefix(data, []byte("SIP/2.0 2")) {
		return false
	}
	id, cseq, ok := rawInviteKey(data)
	if !ok || !s.strays.mayTake(id, cseq) {
		return false
	}
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return false
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		return false
	}
	return s.strays.handle(res, true)
}

// mayTake reports whether a 2xx with this key could be stray: the wait
// for its INVITE is over.
func (t *strays) mayTake(id localID, cseq uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.invites[id]; e != nil && e.settled && e.cseq == cseq {
		return true
	}
	e := t.reinvites[reinviteID{localID: id, cseq: cseq}]
	return e != nil && e.abandoned
}

// rawInviteKey reads the Call-ID, the From tag and the CSeq number of a
// message whose CSeq method is INVITE from its raw header lines (long or
// compact names, any case); ok is false when one is missing.
func rawInviteKey(data []byte) (id localID, cseq uint32, ok bool) {
	head := data
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		head = data[:i]
	}
	var haveSeq bool
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		value, name = bytes.TrimSpace(value), bytes.TrimSpace(name)
		is := func(n string) bool { return bytes.EqualFold(name, []byte(n)) }
		switch {
		case is("call-id") || is("i"):
			id.callID = string(value)
		case is("from") || is("f"):
			if i := bytes.LastIndexByte(value, '>'); i >= 0 {
				value = value[i:]
			}
			if _, tag, found := bytes.Cut(value, []byte(";tag=")); found {
				if i := bytes.IndexAny(tag, "; \t,"); i >= 0 {
					tag = tag[:i]
				}
				id.fromTag = string(tag)
			}
		case is("cseq"):
			num, method, _ := bytes.Cut(value, []byte(" "))
			if i := bytes.IndexByte(num, '\t'); i >= 0 {
				num, method = value[:i], value[i+1:]
			}
			if string(bytes.TrimSpace(method)) != "INVITE" {
				return id, 0, false
			}
			n, err := strconv.ParseUint(string(num), 10, 32)
			if err != nil {
				return id, 0, false
			}
			cseq, haveSeq = uint32(n), true
		}
	}
	return id, cseq, haveSeq && id.callID != "" && id.fromTag != ""
}

// byeExtra sends the BYE of an extra dialog and waits for its answer, at
// most 64*T1 or until the stack closes.
func (s *Stack) byeExtra(bye *sip.Request) {
	s.bgMu.Lock()
	if s.isClosed() {
		s.bgMu.Unlock()
		return
	}
	s.bg.Add(1)
	s.bgMu.Unlock()
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(s.bgCtx, 64*sip.T1)
		defer cancel()
		bye.AppendHeader(sip.NewHeader("User-Agent", s.cfg.UserAgent))
		s.fromListener(bye)
		log := s.log.WithField("sip_call_id", callID(bye))
		tx, err := s.client.TransactionRequest(ctx, bye, sipgo.ClientRequestBuild)
		if err != nil {
			log.WithError(err).Info("BYE of an extra dialog not sent")
			return
		}
		res, err := finalResponse(ctx, tx)
		switch {
		case err != nil:
			log.WithError(err).Info("BYE of an extra dialog: no answer")
		case !res.IsSuccess():
			log.WithField("status", res.StatusCode).Info("BYE of an extra dialog refused")
		}
	}()
}
