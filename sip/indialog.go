package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// Errors of in-dialog requests.
var (
	// ErrOfferPending: an offer/answer exchange (re-INVITE or UPDATE) is
	// already under way in this dialog, in either direction.
	ErrOfferPending = errors.New("sip: an offer is already in progress in this dialog")
	// ErrDialogEnded: the dialog is over.
	ErrDialogEnded = errors.New("sip: the dialog has ended")
	// ErrGlare: the far end kept answering 491 Request Pending.
	ErrGlare = errors.New("sip: re-INVITE glare (491) persisted")
)

// StatusError is a final non-2xx answer to an in-dialog request.
type StatusError struct {
	Method string
	Status int
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("sip: %s answered %d %s", e.Method, e.Status, e.Reason)
}

// target returns the remote target of in-dialog requests (RFC 3261
// §12.2.1.1); sipgo's session adds the route set.
func (d *Dialog) target() (sip.Uri, error) {
	d.mu.Lock()
	rt := d.remoteTarget
	d.mu.Unlock()
	if rt != nil {
		return *rt.Clone(), nil
	}
	var c *sip.ContactHeader
	if d.uas() {
		c = d.invite.Contact()
	} else {
		res := d.client.InviteResponse
		if res == nil {
			return sip.Uri{}, errors.New("sip: no answer yet, the dialog has no remote target")
		}
		c = res.Contact()
	}
	if c == nil {
		return sip.Uri{}, errors.New("sip: the far end sent no Contact")
	}
	return *c.Address.Clone(), nil
}

// newRequest builds an in-dialog request to the remote target.
func (d *Dialog) newRequest(method sip.RequestMethod) (*sip.Request, error) {
	if d.isEnded() {
		return nil, ErrDialogEnded
	}
	t, err := d.target()
	if err != nil {
		return nil, err
	}
	req := sip.NewRequest(method, t)
	req.AppendHeader(sip.NewHeader("User-Agent", d.stack.cfg.UserAgent))
	return req, nil
}

// transaction sends an in-dialog request through the session, which
// fills in the dialog's headers, the next CSeq and the route set.
func (d *Dialog) transaction(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	if d.stack.isClosed() {
		return nil, ErrStackClosed // sipgo would open a socket of its own
	}
	defer d.changed() // the local CSeq moved on
	d.stack.fromListener(req)
	if d.uas() {
		return d.server.TransactionRequest(ctx, req)
	}
	return d.client.TransactionRequest(ctx, req)
}

// do sends an in-dialog request and returns its final response.
func (d *Dialog) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := d.transaction(ctx, req)
	if err != nil {
		return nil, err
	}
	return d.final(ctx, tx)
}

// final waits for the final response of an in-dialog request.
func (d *Dialog) final(ctx context.Context, tx sip.ClientTransaction) (*sip.Response, error) {
	res, err := finalResponse(ctx, tx)
	if err == nil && (res.StatusCode == sip.StatusCallTransactionDoesNotExists || res.StatusCode == sip.StatusRequestTimeout) {
		// RFC 3261 §12.2.1.2: 481 or 408 to an in-dialog request ends
		// the dialog.
		d.end(&Event{Kind: EventBye, Status: res.StatusCode, Reason: res.Reason})
	}
	return res, err
}

// tags returns the dialog's local and remote tags. It reads nothing
// sipgo writes while the dialog lives (its sessions' InviteResponse is
// replaced by every response): inbound, our tag is in the session's copy
// of the INVITE from the start; outbound, the far end's is kept from the
// responses as they arrive.
func (d *Dialog) tags() (local, remote string) {
	if d.uas() {
		local, _ = d.server.InviteRequest.To().Params.Get("tag")
		remote, _ = d.invite.From().Params.Get("tag")
		return local, remote
	}
	local, _ = d.invite.From().Params.Get("tag")
	d.mu.Lock()
	remote = d.remoteTag
	d.mu.Unlock()
	return local, remote
}

// ReplacesValue is the Replaces header value (RFC 3891 §6.1) that makes
// the far end of this dialog replace it: its to-tag is the far end's tag,
// its from-tag ours.
func (d *Dialog) ReplacesValue() string {
	local, remote := d.tags()
	return d.CallID + ";to-tag=" + remote + ";from-tag=" + local
}

// FindReplaced returns the dialog a Replaces header value names (RFC 3891
// §3: call-id, to-tag = our local tag, from-tag = the remote tag), or nil.
func (s *Stack) FindReplaced(replaces string) *Dialog {
	parts := strings.Split(replaces, ";")
	callID := strings.TrimSpace(parts[0])
	var toTag, fromTag string
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(k) {
		case "to-tag":
			toTag = v
		case "from-tag":
			fromTag = v
		}
	}
	s.inboundMu.Lock()
	var all []*Dialog
	for _, d := range s.inbound {
		all = append(all, d)
	}
	for _, d := range s.outbound {
		all = append(all, d)
	}
	s.inboundMu.Unlock()
	for _, d := range all {
		if d.CallID != callID {
			continue
		}
		if local, remote := d.tags(); local == toTag && remote == fromTag {
			return d
		}
	}
	return nil
}

// ByeWithReason hangs up with a Reason header (RFC 3326), e.g.
// `Q.850;cause=41;text="gateway restarted"`.
func (d *Dialog) ByeWithReason(ctx context.Context, reason string) error {
	err := d.writeBye(ctx, reason)
	d.end(nil)
	return err
}

// writeBye sends BYE to the remote target (as last refreshed, RFC 3261
// §12.2.1.1), with a Reason header when reason is set.
func (d *Dialog) writeBye(ctx context.Context, reason string) error {
	if !d.uas() {
		return d.clientBye(ctx, reason) // prack.go: after a PRACK the BYE is ours to build
	}
	t, err := d.target()
	if err != nil {
		return err
	}
	bye := sip.NewRequest(sip.BYE, t)
	if reason != "" {
		bye.AppendHeader(sip.NewHeader("Reason", reason))
	}
	bye.SetTransport(d.invite.Transport())
	d.stack.fromListener(bye)
	return d.server.WriteBye(ctx, bye)
}

// ---- offers we send: re-INVITE ----

// Reinvite sends a re-INVITE with a new offer (hold: a=sendonly or
// inactive; resume: sendrecv; a codec or address change) and returns the
// far end's answer. On 491 it waits as RFC 3261 §14.1 says (2.1-4 s when
// this side placed the call, 0-2 s otherwise) and tries again, twice at
// most. Other failures come back as *StatusError; the dialog goes on with
// its previous media.
func (d *Dialog) Reinvite(ctx context.Context, sdp []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		answer, err := d.reinviteOnce(ctx, sdp, nil)
		var se *StatusError
		if !errors.As(err, &se) || se.Status != sip.StatusRequestPending {
			return answer, err
		}
		if attempt == 2 {
			return nil, fmt.Errorf("%w: %v", ErrGlare, err)
		}
		wait := rand.N(2 * time.Second)
		if !d.Inbound {
			wait = 2100*time.Millisecond + rand.N(1900*time.Millisecond)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-d.ctx.Done():
			return nil, ErrDialogEnded
		}
	}
}

// beginOffer marks an offer of ours as outstanding; false when one is
// already under way in either direction.
func (d *Dialog) beginOffer() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.ended:
		return ErrDialogEnded
	case d.pending != nil || d.sending:
		return ErrOfferPending
	}
	d.sending = true
	return nil
}

func (d *Dialog) endOffer() {
	d.mu.Lock()
	d.sending = false
	d.mu.Unlock()
}

func (d *Dialog) reinviteOnce(ctx context.Context, sdp []byte, extra []sip.Header) ([]byte, error) {
	return d.sendOffer(ctx, sip.INVITE, sdp, extra)
}

// sendOffer sends a re-INVITE or an UPDATE carrying sdp (an UPDATE may
// carry none: a session refresh) and returns the answer. A 2xx to an
// INVITE is acknowledged here (RFC 3261 §13.2.2.4); a 481 or 408 ends the
// dialog (see do).
func (d *Dialog) sendOffer(ctx context.Context, method sip.RequestMethod, sdp []byte, hdrs []sip.Header) ([]byte, error) {
	if err := d.beginOffer(); err != nil {
		return nil, err
	}
	defer d.endOffer()
	req, err := d.newRequest(method)
	if err != nil {
		return nil, err
	}
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if len(sdp) > 0 {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	req.SetBody(sdp)
	tx, err := d.transaction(ctx, req)
	if err != nil {
		return nil, err
	}
	var rid reinviteID
	var watched bool
	if method == sip.INVITE {
		// A 2xx that comes once nobody waits (the call ended, RFC 3261
		// §15) is still acknowledged (§13.2.2.4, stray.go).
		rid, watched = d.stack.strays.watchReinvite(req)
	}
	res, err := d.final(ctx, tx)
	if err != nil {
		if watched {
			d.stack.strays.abandon(rid)
		}
		return nil, err
	}
	if watched {
		defer d.stack.strays.forget(rid)
	}
	if !res.IsSuccess() {
		return nil, &StatusError{Method: string(method), Status: res.StatusCode, Reason: res.Reason}
	}
	if method == sip.INVITE {
		if err := d.stack.ackFor(req, res, nil); err != nil {
			return nil, fmt.Errorf("sip: ACK of re-INVITE: %w", err)
		}
	}
	if method == sip.INVITE || len(sdp) > 0 {
		d.mu.Lock()
		d.local = sdp
		if len(res.Body()) > 0 {
			d.remote = res.Body()
		}
		d.mu.Unlock()
	}
	d.noteTarget(res.Contact()) // RFC 3261 §12.2.1.2: the 2xx to a target refresh
	d.sessionRefreshed(res)
	return res.Body(), nil
}

// ackFor sends the ACK of a 2xx to an INVITE: same Call-ID, tags, CSeq
// number and route as the INVITE (RFC 3261 §13.2.2.4). The ACK is kept
// and goes out again for every repetition of the 2xx (ackrepeat.go):
// the re-INVITE's transaction ended with the wait, so nothing else
// would answer them.
func (s *Stack) ackFor(inv *sip.Request, res *sip.Response, body []byte) error {
	ack := inDialogAck(inv, res)
	if len(body) > 0 {
		ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	ack.SetBody(body)
	s.fromListener(ack)
	if err := s.client.WriteRequest(ack, sipgo.ClientRequestAddVia); err != nil {
		return err
	}
	s.acks.keep(ack)
	return nil
}

// ---- offers we receive: re-INVITE and UPDATE ----

// awaitOffer registers an offer from the far end, reports it and waits
// for the application's answer. ok is false when the request was already
// answered (glare or overlap).
func (d *Dialog) awaitOffer(req *sip.Request, tx sip.ServerTransaction, kind EventKind) (a reinviteAnswer, ok bool) {
	d.mu.Lock()
	switch {
	case d.sending:
		d.mu.Unlock()
		// RFC 3261 §14.2 and RFC 3311 §5.2: an offer arriving while ours
		// is outstanding is glare: 491 Request Pending.
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusRequestPending, "Request Pending", nil))
		return a, false
	case d.pending != nil:
		d.mu.Unlock()
		// §14.2: one arriving while the far end's previous one is still
		// being answered gets 500 with a Retry-After of 0 to 10 seconds.
		res := sip.NewResponseFromRequest(req, sip.StatusInternalServerError, "Another offer in progress", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(int(req.CSeq().SeqNo%11))))
		_ = tx.Respond(res)
		return a, false
	}
	p := &reinvite{answer: make(chan reinviteAnswer, 1)}
	d.pending = p
	d.mu.Unlock()
	d.emit(Event{Kind: kind, SDP: req.Body()})
	select {
	case a = <-p.answer:
	case <-time.After(32 * time.Second):
		a = reinviteAnswer{code: sip.StatusInternalServerError, reason: "No answer to the offer"}
	case <-d.ctx.Done():
		a = reinviteAnswer{code: sip.StatusRequestTerminated, reason: "Request Terminated"}
	}
	d.mu.Lock()
	d.pending = nil
	if a.code/100 == 2 {
		if len(req.Body()) > 0 {
			d.remote = req.Body()
		}
		if len(a.sdp) > 0 {
			d.local = a.sdp
		}
	}
	d.mu.Unlock()
	return a, true
}

// answerOffer builds the response to an offer (re-INVITE or UPDATE).
func (d *Dialog) answerOffer(req *sip.Request, a reinviteAnswer) *sip.Response {
	res := sip.NewResponseFromRequest(req, a.code, a.reason, nil)
	if a.code/100 == 2 {
		res.AppendHeader(&sip.ContactHeader{Address: d.stack.contact})
		d.sessionTimerHeaders(req, res)
		if len(a.sdp) > 0 {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.SetBody(a.sdp)
		}
	}
	return res
}

// onUpdate serves UPDATE (RFC 3311): with SDP it is an offer answered
// through AcceptReinvite/RejectReinvite; without, a session refresh.
func (s *Stack) onUpdate(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogFor(req, tx)
	if d == nil {
		return
	}
	if !d.readInDialog(req, tx) {
		return
	}
	a := reinviteAnswer{code: sip.StatusOK, reason: "OK"}
	if len(req.Body()) > 0 {
		var ok bool
		if a, ok = d.awaitOffer(req, tx, EventUpdate); !ok {
			return
		}
	}
	_ = tx.Respond(d.answerOffer(req, a))
	if a.code/100 == 2 {
		d.noteTarget(req.Contact()) // RFC 3311 §5.2: UPDATE is a target refresh
		d.sessionRefreshed(req)
	}
}

// ---- REFER and NOTIFY (RFC 3515) ----

// Refer asks the far end to call target (a SIP URI, or a user at the
// far end's domain); with replaces set the far end's new INVITE carries
// Replaces for that dialog (attended transfer, RFC 3891). Progress
// arrives as EventReferStatus from the far end's NOTIFYs.
func (d *Dialog) Refer(ctx context.Context, target string, replaces *Dialog) error {
	req, err := d.newRequest(sip.REFER)
	if err != nil {
		return err
	}
	uri := target
	if !strings.Contains(target, ":") {
		t, _ := d.target()
		uri = "sip:" + target + "@" + t.HostPort()
	}
	if replaces != nil {
		uri += "?Replaces=" + url.QueryEscape(replaces.ReplacesValue())
	}
	req.AppendHeader(sip.NewHeader("Refer-To", "<"+uri+">"))
	local := d.localURI()
	req.AppendHeader(sip.NewHeader("Referred-By", "<"+local.String()+">"))
	res, err := d.do(ctx, req)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &StatusError{Method: "REFER", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

// localURI is this side's address in the dialog.
func (d *Dialog) localURI() sip.Uri {
	if d.uas() {
		return *d.invite.To().Address.Clone()
	}
	return *d.invite.From().Address.Clone()
}

// ParseReferTo splits a Refer-To value into the target URI and the
// Replaces value carried in its headers, if any.
func ParseReferTo(v string) (target sip.Uri, replaces string, err error) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return target, "", fmt.Errorf("sip: Refer-To %q: no closing >", v)
		}
		v = v[i+1 : i+j]
	}
	raw, headers, _ := strings.Cut(v, "?")
	if err := sip.ParseUri(raw, &target); err != nil {
		return target, "", fmt.Errorf("sip: Refer-To %q: %w", v, err)
	}
	for _, kv := range strings.Split(headers, "&") {
		k, val, _ := strings.Cut(kv, "=")
		if strings.EqualFold(k, "Replaces") {
			if replaces, err = url.QueryUnescape(val); err != nil {
				return target, "", fmt.Errorf("sip: Refer-To %q: Replaces: %w", v, err)
			}
		}
	}
	return target, replaces, nil
}

func (s *Stack) onRefer(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogFor(req, tx)
	if d == nil {
		return
	}
	// RFC 3515 §2.4.1: exactly one Refer-To.
	hs := req.GetHeaders("refer-to")
	if len(hs) != 1 {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Exactly one Refer-To required", nil))
		return
	}
	target, replaces, err := ParseReferTo(hs[0].Value())
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Refer-To", nil))
		return
	}
	referredBy := ""
	if h := req.GetHeader("referred-by"); h != nil {
		referredBy = h.Value()
	}
	g := s.referGate.Load()
	// A gate's owner may send the first NOTIFY at once, from another
	// goroutine: it waits until the answer to the REFER is on the wire.
	answered := make(chan struct{})
	d.mu.Lock()
	d.referAnswered = answered
	d.mu.Unlock()
	defer close(answered)
	if g != nil {
		ev := Event{Kind: EventRefer, ReferTo: target.String(), ReferToUser: target.User, Replaces: replaces, ReferredBy: referredBy}
		if code, reason := (*g)(d, ev); code >= 300 {
			_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
			return
		}
	}
	d.mu.Lock()
	d.referSeq = req.CSeq().SeqNo
	d.mu.Unlock()
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusAccepted, "Accepted", nil))
	go func() {
		// §2.4.4: the implicit subscription starts with a NOTIFY right
		// away; the application reports the outcome with NotifyRefer.
		// With a gate, the gate's owner sends it (in order with the
		// NOTIFYs that follow).
		ctx, cancel := context.WithTimeout(d.ctx, 32*time.Second)
		defer cancel()
		if g == nil {
			if err := d.NotifyRefer(ctx, sip.StatusTrying, "Trying"); err != nil {
				d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID}).WithError(err).Debug("first NOTIFY of a REFER failed")
			}
		}
		d.emit(Event{Kind: EventRefer, ReferTo: target.String(), ReferToUser: target.User, Replaces: replaces, ReferredBy: referredBy})
	}()
}

// ReferGate decides whether a REFER received in dialog d is accepted: a
// status of 300 or more refuses it with that status and reason (RFC 3515
// §2.4.2: the REFER is answered before anything is tried); anything else
// accepts it (202, then EventRefer). e is the REFER as EventRefer will
// carry it: a gate that acts on it at once is ahead of any BYE that
// follows the 202. With a gate the stack sends no NOTIFY of its own: the
// first one (100 Trying, RFC 3515 §2.4.4) is the gate owner's, so that
// it cannot overtake the final one. It runs on the stack's goroutine and
// must not block.
type ReferGate func(d *Dialog, e Event) (status int, reason string)

// SetReferGate installs the gate REFERs pass before they are accepted
// (nil: every REFER is accepted).
func (s *Stack) SetReferGate(g ReferGate) {
	if g == nil {
		s.referGate.Store(nil)
		return
	}
	s.referGate.Store(&g)
}

// NotifyRefer reports the progress of a transfer we were asked to make
// (RFC 3515 §2.4.5): a message/sipfrag status line; a final status ends
// the implicit subscription.
func (d *Dialog) NotifyRefer(ctx context.Context, status int, reason string) error {
	req, err := d.newRequest(sip.NOTIFY)
	if err != nil {
		return err
	}
	d.mu.Lock()
	answered := d.referAnswered
	d.mu.Unlock()
	if answered != nil {
		select {
		case <-answered:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	d.mu.Lock()
	id := d.referSeq
	d.mu.Unlock()
	req.AppendHeader(sip.NewHeader("Event", "refer;id="+strconv.FormatUint(uint64(id), 10)))
	if status >= 200 {
		req.AppendHeader(sip.NewHeader("Subscription-State", "terminated;reason=noresource"))
	} else {
		req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires=60"))
	}
	req.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", status, reason)))
	res, err := d.do(ctx, req)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &StatusError{Method: "NOTIFY", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

// parseSipfrag reads the status line of a message/sipfrag body.
func parseSipfrag(body []byte) (int, string, bool) {
	line, _, _ := strings.Cut(string(body), "\n")
	f := strings.SplitN(strings.TrimSpace(line), " ", 3)
	if len(f) < 2 || !strings.HasPrefix(f[0], "SIP/") {
		return 0, "", false
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 100 || code > 699 {
		return 0, "", false
	}
	reason := ""
	if len(f) == 3 {
		reason = f[2]
	}
	return code, reason, true
}

// eventPackage is the package name of an Event header, lower case.
func eventPackage(req *sip.Request) string {
	h := req.GetHeader("event")
	if h == nil {
		return ""
	}
	name, _, _ := strings.Cut(h.Value(), ";")
	return strings.ToLower(strings.TrimSpace(name))
}

func (s *Stack) onNotify(req *sip.Request, tx sip.ServerTransaction) {
	switch eventPackage(req) {
	case "message-summary":
		s.onMWI(req, tx)
	case "refer":
		d := s.dialogFor(req, tx)
		if d == nil {
			return
		}
		code, reason, ok := parseSipfrag(req.Body())
		if !ok {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad message/sipfrag", nil))
			return
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
		final := false
		if h := req.GetHeader("subscription-state"); h != nil {
			final = strings.HasPrefix(strings.ToLower(strings.TrimSpace(h.Value())), "terminated")
		}
		d.emit(Event{Kind: EventReferStatus, Status: code, Reason: reason, Final: final || code >= 200})
	default:
		// RFC 6665 §8.2.1: an event package we do not support.
		res := sip.NewResponseFromRequest(req, 489, "Bad Event", nil)
		res.AppendHeader(sip.NewHeader("Allow-Events", "refer, message-summary"))
		_ = tx.Respond(res)
	}
}

// ---- OPTIONS keepalive ----

// Ping sends an out-of-dialog OPTIONS to peer (host:port) and returns the
// round trip and the status. Any final answer proves the peer is up;
// ErrNoAnswer means it is not.
func (s *Stack) Ping(ctx context.Context, peer, transport string) (time.Duration, int, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	host, port, err := splitHostPort(peer)
	if err != nil {
		return 0, 0, err
	}
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "mgsip", Host: s.contact.Host}, Params: sip.NewParams()}
	from.Params.Add("tag", randomToken())
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port}})
	req.AppendHeader(sip.NewHeader("User-Agent", s.cfg.UserAgent))
	if transport != "" {
		req.SetTransport(strings.ToUpper(transport))
	}
	start := time.Now()
	res, err := s.do(ctx, req)
	if err != nil {
		return 0, 0, err
	}
	return time.Since(start), res.StatusCode, nil
}
