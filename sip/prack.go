package sip

// Reliable provisional responses (RFC 3262, "100rel" and PRACK).
//
// As UAS: when the INVITE requires 100rel, or supports it and the peer's
// mode says to use it, Ring and Progress send their 18x reliably: with
// Require: 100rel and an RSeq, repeated from T1 doubling until the PRACK
// that names it arrives, for 64*T1 at most (§3). One reliable provisional
// is outstanding at a time; a later one waits for the PRACK of the one
// before. Answer does not send the 2xx while a reliable provisional that
// carried SDP has not been PRACKed (§3).
//
// As UAC: the INVITE says Supported (or Require) 100rel as the peer's
// mode says; every reliable 18x received is PRACKed (RAck: its RSeq, the
// INVITE's CSeq number and method, §7.2), a repeated one (an RSeq already
// seen for that early dialog) is ignored, one out of order is dropped
// (§4), and SDP in one is the early answer.
//
// sipgo knows nothing of PRACK. The PRACK goes through the early dialog's
// session (sipgo's DialogClientSession.TransactionRequest: the session's
// InviteResponse is the 18x while the answer is awaited, so the To tag,
// the route set and the next CSeq are the early dialog's). Because the
// session then counts the PRACK's CSeq, its own ACK would carry that
// number instead of the INVITE's (sipgo's buildReq sets the ACK's CSeq to
// the last one sent); so after a PRACK the ACK and the BYE of that dialog
// are built here (ackInvite, clientBye).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// PRACKMode says how a peer's calls use reliable provisional responses.
type PRACKMode int

// PRACK modes (the peer's `prack` key).
const (
	// PRACKOff: never asked for or offered; a peer's Require: 100rel is
	// still honoured (the call could not go on otherwise).
	PRACKOff PRACKMode = iota
	// PRACKSupported: our INVITEs say Supported: 100rel; an incoming
	// INVITE that supports it gets reliable 18x.
	PRACKSupported
	// PRACKRequired: our INVITEs say Require: 100rel; an incoming INVITE
	// that does not support it gets 421 Extension Required.
	PRACKRequired
)

// ParsePRACKMode reads "off" (or ""), "supported" or "required".
func ParsePRACKMode(s string) (PRACKMode, error) {
	switch strings.ToLower(s) {
	case "", "off":
		return PRACKOff, nil
	case "supported":
		return PRACKSupported, nil
	case "required":
		return PRACKRequired, nil
	}
	return PRACKOff, fmt.Errorf("sip: prack must be off, supported or required, not %q", s)
}

func (m PRACKMode) String() string {
	return [...]string{"off", "supported", "required"}[m]
}

// ErrPRACKRequired: the INVITE does not support 100rel and the peer's mode
// requires it; the INVITE was answered 421.
var ErrPRACKRequired = errors.New("sip: the peer requires 100rel but the INVITE does not support it")

// ErrNoPRACK: a reliable provisional response was never PRACKed; the
// INVITE was answered 500 (RFC 3262 §3).
var ErrNoPRACK = errors.New("sip: no PRACK for a reliable provisional response within 64*T1")

// ---- UAS ----

// relProv is one reliable provisional response we sent.
type relProv struct {
	rseq  uint32
	sdp   bool
	acked chan struct{} // closed by its PRACK
	stop  chan struct{} // closed when retransmitting should stop (the final answer went out)
	done  chan struct{} // closed when it is PRACKed, given up or stopped
	once  bool          // acked closed (guarded by Dialog.mu)
	// prackBody is the PRACK's body (an answer to an offer in the 18x).
	prackBody []byte
}

// SetPRACK sets how this inbound dialog uses reliable provisional
// responses, from its peer's mode (call it before Ring or Progress). With
// PRACKRequired and an INVITE that does not support 100rel it answers 421
// with Require: 100rel (RFC 3261 §21.4.15) and returns ErrPRACKRequired.
func (d *Dialog) SetPRACK(m PRACKMode) error {
	if !d.Inbound {
		return nil
	}
	supports := hasOptionTag(d.invite, "Supported", "100rel") || hasOptionTag(d.invite, "Require", "100rel")
	if m == PRACKRequired && !supports {
		d.rejectWith(421, "Extension Required", sip.NewHeader("Require", "100rel"))
		return ErrPRACKRequired
	}
	d.mu.Lock()
	d.reliable = hasOptionTag(d.invite, "Require", "100rel") || (m != PRACKOff && supports)
	d.mu.Unlock()
	return nil
}

// Reliable reports whether this inbound dialog's 18x are sent reliably.
func (d *Dialog) Reliable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reliable
}

// provisional sends a 18x, reliably when the dialog says so.
func (d *Dialog) provisional(status int, reason string, sdp []byte) error {
	d.mu.Lock()
	reliable := d.reliable || hasOptionTag(d.invite, "Require", "100rel")
	d.mu.Unlock()
	if !reliable {
		if len(sdp) > 0 {
			return d.server.Respond(status, reason, sdp, sip.NewHeader("Content-Type", "application/sdp"))
		}
		return d.server.Respond(status, reason, nil)
	}
	d.sendReliable(status, reason, sdp)
	return nil
}

// sendReliable queues a reliable provisional response: it goes out once
// the one before it was PRACKed (§3: one outstanding at a time) and is
// repeated until its own PRACK comes. It does not block.
func (d *Dialog) sendReliable(status int, reason string, sdp []byte) {
	p := &relProv{sdp: len(sdp) > 0, acked: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	d.mu.Lock()
	if d.rseq == 0 {
		// §7.1: the first RSeq is chosen at random, below 2**31.
		d.rseq = 1 + rand.Uint32N(1<<30)
	}
	p.rseq = d.rseq
	d.rseq++
	prev := d.lastRel
	d.lastRel = p
	d.rels = append(d.rels, p)
	d.mu.Unlock()
	res := sip.NewResponseFromRequest(d.server.InviteRequest, status, reason, nil)
	res.AppendHeader(&sip.ContactHeader{Address: d.stack.contact})
	res.AppendHeader(sip.NewHeader("Require", "100rel"))
	res.AppendHeader(sip.NewHeader("RSeq", strconv.FormatUint(uint64(p.rseq), 10)))
	res.AppendHeader(sip.NewHeader("Allow", strings.Join(d.stack.methods, ", ")))
	if len(sdp) > 0 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(sdp)
	}
	log := d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID, "rseq": p.rseq})
	// The first one (or one whose predecessor is settled) goes out
	// before Ring or Progress returns; a later one waits its turn.
	waiting := prev != nil
	if waiting {
		select {
		case <-prev.done:
			waiting = false
			select {
			case <-prev.acked:
			default:
				close(p.done) // never PRACKed: the INVITE is over
				return
			}
		default:
		}
	}
	if !waiting {
		if err := d.inviteTx.Respond(res); err != nil {
			log.WithError(err).Debug("reliable provisional not sent")
			close(p.done)
			return
		}
	}
	go func() {
		defer close(p.done)
		if waiting {
			select {
			case <-prev.done:
			case <-p.stop:
				return
			case <-d.ctx.Done():
				return
			}
			select {
			case <-prev.acked:
			default:
				return // the one before was never PRACKed: the INVITE is over
			}
			if err := d.inviteTx.Respond(res); err != nil {
				log.WithError(err).Debug("reliable provisional not sent")
				return
			}
		}
		// §3: repeated at T1, doubling, until the PRACK; after 64*T1
		// without one the INVITE is rejected with a 5xx.
		interval := sip.T1
		deadline := time.NewTimer(64 * sip.T1)
		defer deadline.Stop()
		for {
			t := time.NewTimer(interval)
			select {
			case <-p.acked:
				t.Stop()
				return
			case <-p.stop:
				t.Stop()
				return
			case <-d.ctx.Done():
				t.Stop()
				return
			case <-deadline.C:
				t.Stop()
				log.Info("no PRACK for a reliable provisional response: the call is refused with 500")
				d.rejectWith(500, "No PRACK")
				d.end(&Event{Kind: EventCancelled, Status: 500, Reason: "no PRACK"})
				return
			case <-t.C:
				if err := d.inviteTx.Respond(res); err != nil {
					return
				}
				interval *= 2
			}
		}
	}()
}

// awaitPRACKs runs before the 2xx of the INVITE: it waits for the PRACK of
// every reliable provisional that carried SDP (§3) and stops repeating
// the others. It fails when one of them was never PRACKed.
func (d *Dialog) awaitPRACKs() error {
	d.mu.Lock()
	rels := append([]*relProv(nil), d.rels...)
	d.mu.Unlock()
	for _, p := range rels {
		if !p.sdp {
			continue
		}
		select {
		case <-p.done:
		case <-d.ctx.Done():
			return ErrDialogEnded
		}
		select {
		case <-p.acked:
		default:
			return ErrNoPRACK
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.rels {
		select {
		case <-p.stop:
		default:
			close(p.stop)
		}
	}
	return nil
}

// parseRAck reads "response-num CSeq-num Method" (RFC 3262 §7.2).
func parseRAck(v string) (rseq, cseq uint32, method string, ok bool) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return 0, 0, "", false
	}
	r, err1 := strconv.ParseUint(f[0], 10, 32)
	c, err2 := strconv.ParseUint(f[1], 10, 32)
	if err1 != nil || err2 != nil || r == 0 {
		return 0, 0, "", false
	}
	return uint32(r), uint32(c), f[2], true
}

// onPrack serves a PRACK (RFC 3262 §3): 200 when it names a reliable
// provisional still waiting for it, 481 otherwise.
func (s *Stack) onPrack(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogOf(req)
	if d == nil || !d.Inbound {
		noDialog(req, tx)
		return
	}
	h := req.GetHeader("RAck")
	if h == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Missing RAck", nil))
		return
	}
	rseq, cseq, method, ok := parseRAck(h.Value())
	if !ok {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad RAck", nil))
		return
	}
	// The PRACK's CSeq is not passed to the session's ReadRequest: sipgo
	// would then take it as the remote CSeq and refuse the ACK of the
	// 2xx, which carries the INVITE's (lower) number.
	inv := d.invite.CSeq()
	if req.CSeq().SeqNo <= inv.SeqNo {
		res := sip.NewResponseFromRequest(req, sip.StatusInternalServerError, "CSeq out of order", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", "1"))
		_ = tx.Respond(res)
		return
	}
	var match *relProv
	d.mu.Lock()
	if cseq == inv.SeqNo && strings.EqualFold(method, string(sip.INVITE)) {
		for _, p := range d.rels {
			if p.rseq == rseq && !p.once {
				match = p
				p.once = true
				p.prackBody = req.Body()
				if len(req.Body()) > 0 {
					d.remote = req.Body()
				}
				break
			}
		}
	}
	d.mu.Unlock()
	if match == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "No Such Reliable Response", nil))
		return
	}
	// The PRACK's 200 leaves before whatever its PRACK releases (the
	// next reliable 18x, the 2xx of the INVITE), so the caller reads them
	// in that order.
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	close(match.acked)
}

// rejectWith answers the INVITE with a final failure and extra headers,
// like Reject.
func (d *Dialog) rejectWith(status int, reason string, hdrs ...sip.Header) {
	d.mu.Lock()
	if d.rejected != nil || d.answered {
		d.mu.Unlock()
		return
	}
	done := make(chan struct{})
	d.rejected = done
	d.mu.Unlock()
	go func() {
		defer close(done)
		_ = d.server.Respond(status, reason, nil, hdrs...)
		d.end(nil)
	}()
}

// ---- UAC ----

// earlyRSeq tracks, per early dialog (the 18x's To tag), the last RSeq
// PRACKed.
type earlyRSeq map[string]uint32

// onReliable handles a reliable 18x of our INVITE, on the goroutine that
// waits for the answer (the session's InviteResponse is this 18x). It
// reports whether the response is new (not a repetition, not out of
// order) and so should be reported.
func (d *Dialog) onReliable(res *sip.Response, seen earlyRSeq, answerOffer func([]byte) []byte) bool {
	h := res.GetHeader("RSeq")
	if h == nil {
		return true // not reliable after all: an ordinary 18x
	}
	rseq64, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil || rseq64 == 0 {
		return false // §7.1: an RSeq we cannot read names nothing to PRACK
	}
	rseq := uint32(rseq64)
	tag, _ := res.To().Params.Get("tag")
	if last, ok := seen[tag]; ok {
		if rseq <= last {
			return false // a repetition: our PRACK is on its way (§4)
		}
		if rseq != last+1 {
			return false // §4: out of order, not PRACKed
		}
	}
	seen[tag] = rseq
	prack, err := d.newPRACK(res, rseq)
	if err != nil {
		d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID}).WithError(err).Debug("PRACK not built")
		return true
	}
	if len(d.invite.Body()) == 0 && len(res.Body()) > 0 && answerOffer != nil {
		// Offerless INVITE: the offer came in the reliable 18x, the
		// answer goes in the PRACK (RFC 3262 §5).
		ans := answerOffer(res.Body())
		prack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		prack.SetBody(ans)
		d.mu.Lock()
		d.local = ans
		d.earlyAnswered = true
		d.mu.Unlock()
	}
	if d.stack.isClosed() {
		return false
	}
	d.stack.fromListener(prack)
	tx, err := d.client.TransactionRequest(d.ctx, prack)
	if err != nil {
		d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID}).WithError(err).Debug("PRACK not sent")
		return true
	}
	d.mu.Lock()
	d.pracked = true
	d.mu.Unlock()
	go func() {
		defer tx.Terminate()
		ctx, cancel := context.WithTimeout(d.ctx, 64*sip.T1)
		defer cancel()
		r, err := finalResponse(ctx, tx)
		if err != nil || !r.IsSuccess() {
			e := d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID, "rseq": rseq})
			if r != nil {
				e = e.WithField("status", r.StatusCode)
			}
			e.WithError(err).Debug("PRACK not accepted")
		}
	}()
	return true
}

// newPRACK builds the PRACK of a reliable 18x: to the 18x's Contact (the
// early dialog's remote target), RAck naming it.
func (d *Dialog) newPRACK(res *sip.Response, rseq uint32) (*sip.Request, error) {
	c := res.Contact()
	if c == nil {
		return nil, errors.New("sip: reliable provisional response without Contact")
	}
	req := sip.NewRequest(sip.PRACK, *c.Address.Clone())
	cseq := d.invite.CSeq()
	req.AppendHeader(sip.NewHeader("RAck", fmt.Sprintf("%d %d %s", rseq, cseq.SeqNo, cseq.MethodName)))
	req.AppendHeader(sip.NewHeader("User-Agent", d.stack.cfg.UserAgent))
	return req, nil
}

// ackInvite acknowledges the 2xx of our INVITE after a PRACK (see the top
// of this file): the INVITE's CSeq number, the 2xx's route set (its
// Record-Route reversed, RFC 3261 §12.1.2) and remote target. The stack
// keeps it to send again for each repeated 2xx (ackrepeat.go).
func (d *Dialog) ackInvite(res *sip.Response, body []byte) error {
	inv := d.invite
	// The same request as an extra dialog's ACK (stray.go): the 2xx's
	// route set and remote target.
	ack := uacDialogRequest(sip.ACK, inv, res, inv.CSeq().SeqNo)
	if len(body) > 0 {
		ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	ack.SetBody(body)
	if len(res.GetHeaders("Record-Route")) == 0 {
		ack.SetDestination(inv.Destination())
	}
	d.stack.fromListener(ack)
	if err := d.stack.client.WriteRequest(ack, sipgo.ClientRequestAddVia); err != nil {
		return err
	}
	// §13.2.2.4: this ACK goes out again for every retransmission of
	// the 2xx (ackrepeat.go).
	if key, ok := d.stack.acks.keep(ack); ok {
		d.mu.Lock()
		d.keptAck = &key
		d.mu.Unlock()
	}
	return nil
}

// clientBye sends the BYE of an outbound dialog. sipgo's session refuses
// one when it did not send the ACK itself (after a PRACK), so that case
// goes through the session's TransactionRequest, which fills in the
// dialog's headers and next CSeq.
func (d *Dialog) clientBye(ctx context.Context, reason string) error {
	d.mu.Lock()
	pracked := d.pracked
	d.mu.Unlock()
	if !pracked {
		// To the remote target as last refreshed (RFC 3261 §12.2.1.1),
		// which sipgo's own Bye would not follow.
		t, err := d.target()
		if err != nil {
			return err
		}
		bye := sip.NewRequest(sip.BYE, t)
		if reason != "" {
			bye.AppendHeader(sip.NewHeader("Reason", reason))
		}
		d.stack.fromListener(bye)
		return d.client.WriteBye(ctx, bye)
	}
	t, err := d.target()
	if err != nil {
		return err
	}
	bye := sip.NewRequest(sip.BYE, t)
	if reason != "" {
		bye.AppendHeader(sip.NewHeader("Reason", reason))
	}
	tx, err := d.transaction(ctx, bye)
	if err != nil {
		return err
	}
	defer tx.Terminate()
	res, err := finalResponse(ctx, tx)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &StatusError{Method: "BYE", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}
