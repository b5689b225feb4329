package sip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
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

// Handler serves an inbound dialog for its lifetime: it rings, answers or
// rejects it and returns when the call is over (architecture: like
// net/http's Handler).
type Handler interface {
	ServeDialog(d *Dialog)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(d *Dialog)

// ServeDialog calls f.
func (f HandlerFunc) ServeDialog(d *Dialog) { f(d) }

// EventKind says what happened in a dialog.
type EventKind int

// Dialog events.
const (
	EventRinging   EventKind = iota // 180/181/182 received (outbound)
	EventProgress                   // 183 with SDP: early media (outbound)
	EventAnswered                   // 2xx received and acknowledged (outbound) / ACK received (inbound)
	EventFailed                     // final non-2xx (outbound); Status says which
	EventCancelled                  // the caller cancelled before the answer (inbound)
	EventBye                        // the far end hung up
	EventInfo                       // an INFO arrived (DTMF relay): ContentType and Body
	// EventReinvite: the far end sent a re-INVITE (hold, resume, new
	// media); SDP is its offer. Answer with AcceptReinvite or
	// RejectReinvite within 32 s.
	EventReinvite
	// EventUpdate: the far end sent an UPDATE with an offer (RFC 3311);
	// answer it with AcceptReinvite or RejectReinvite like a re-INVITE.
	EventUpdate
	// EventRefer: the far end asks us to transfer the call (RFC 3515):
	// ReferTo is the target, Replaces set for an attended transfer.
	// Report the outcome with NotifyRefer.
	EventRefer
	// EventReferStatus: progress of a transfer we asked for with Refer,
	// from the far end's NOTIFY: Status of its call, Final when done.
	EventReferStatus
)

func (k EventKind) String() string {
	return [...]string{"ringing", "progress", "answered", "failed", "cancelled", "bye", "info", "reinvite",
		"update", "refer", "refer-status"}[k]
}

// Event is something that happened in a dialog.
type Event struct {
	Kind   EventKind
	Status int    // SIP status for responses
	Reason string // reason phrase
	SDP    []byte // body of a 183/2xx

	ContentType string // of an INFO
	Body        []byte // of an INFO

	ReferTo     string // EventRefer: the target URI
	ReferToUser string // EventRefer: its user part (the number to call)
	Replaces    string // EventRefer: Replaces value for an attended transfer
	ReferredBy  string // EventRefer: Referred-By, when given
	Final       bool   // EventReferStatus: the transfer attempt is over

	Contacts []string      // EventFailed with a 3xx: the Contact URIs of the redirect, in order
	MinSE    time.Duration // EventFailed with a 422: the peer's Min-SE (RFC 4028 §6)
}

// failed is the EventFailed of a final non-2xx answer to our INVITE, with
// what a retry needs: a redirect's contacts (RFC 3261 §8.1.3.4), the
// Min-SE of a 422 (RFC 4028 §6).
func failed(res *sip.Response) *Event {
	e := &Event{Kind: EventFailed, Status: res.StatusCode, Reason: res.Reason}
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		for _, h := range res.GetHeaders("Contact") {
			e.Contacts = append(e.Contacts, splitContacts(h.Value())...)
		}
		// RFC 3261 §8.1.3.4 (with §16.6's order): the targets of a
		// redirect are tried highest q-value first; equal ones (and
		// those without q, 1.0) keep the order they came in.
		slices.SortStableFunc(e.Contacts, func(a, b string) int { return cmp.Compare(contactQ(b), contactQ(a)) })
	}
	if res.StatusCode == 422 {
		if h := res.GetHeader("min-se"); h != nil {
			v, _, _ := strings.Cut(h.Value(), ";")
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				e.MinSE = time.Duration(n) * time.Second
			}
		}
	}
	return e
}

// splitContacts splits a Contact header value into its contacts: at the
// commas outside quoted strings and angle brackets (a display name may
// hold a comma, RFC 3261 §25.1).
func splitContacts(v string) []string {
	var out []string
	quoted, angle, start := false, false, 0
	add := func(c string) {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++ // a quoted pair
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			add(v[start:i])
			start = i + 1
		}
	}
	add(v[start:])
	return out
}

// contactQ is a contact's q parameter (RFC 3261 §20.10), 1 without one
// or with one that does not parse.
func contactQ(c string) float64 {
	params := c
	if i := strings.LastIndexByte(c, '>'); i >= 0 {
		params = c[i+1:]
	} else if i := strings.IndexByte(c, ';'); i >= 0 {
		params = c[i:] // a bare URI: its parameters are the header's
	} else {
		return 1
	}
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "q") {
			if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && q >= 0 && q <= 1 {
				return q
			}
		}
	}
	return 1
}

// Dialog is one SIP dialog, inbound or outbound. Events arrive on Events;
// Context ends with the dialog.
type Dialog struct {
	stack   *Stack
	Inbound bool
	CallID  string

	events chan Event
	ctx    context.Context
	cancel context.CancelFunc

	client *sipgo.DialogClientSession
	server *sipgo.DialogServerSession
	invite *sip.Request

	// answeredEmitted is closed once an outbound dialog reported its
	// answer; events of in-dialog requests wait for it so that they never
	// come first (the far end may send them as soon as it has our ACK).
	answeredEmitted chan struct{}

	// ackedCh is closed when the ACK of an inbound INVITE arrived.
	ackedCh chan struct{}

	mu sync.Mutex
	// rejected is closed once the final failure answer of an inbound
	// INVITE (Reject) has been acknowledged or timed out.
	rejected chan struct{}
	acked    bool          // the ACK of an inbound INVITE arrived
	pending  *reinvite     // a re-INVITE waiting for our answer
	ackWait  chan struct{} // closed by the ACK of our 2xx to a re-INVITE
	ackCSeq  uint32
	answered bool
	ended    bool
	remote   []byte // remote SDP: the INVITE's (inbound) or the answer's (outbound)
	local    []byte // our latest SDP (offer or answer)
	sending  bool   // our re-INVITE or UPDATE is outstanding
	referSeq uint32 // CSeq of the REFER being reported (Event: refer;id=)
	// referAnswered is closed once the 202 to the REFER being reported
	// is sent: its first NOTIFY must not overtake it.
	referAnswered chan struct{}
	// cancelInvite cancels an outbound INVITE still waiting for its answer.
	cancelInvite context.CancelFunc
	st           *sessionTimer

	// Reliable provisional responses (prack.go). Inbound: whether our
	// 18x are reliable, the next RSeq, the ones sent; inviteTx is the
	// INVITE's server transaction they are sent on. Outbound: pracked is
	// set once a PRACK went out (the ACK and BYE are then ours to
	// build), earlyAnswered once an offer in a reliable 18x was answered
	// in its PRACK.
	reliable      bool
	rseq          uint32
	lastRel       *relProv
	rels          []*relProv
	inviteTx      sip.ServerTransaction
	pracked       bool
	earlyAnswered bool
	// keptAck names our ACK of the 2xx after a PRACK while the stack
	// repeats it (ackrepeat.go); dropped when the dialog ends.
	keptAck *ackKey
	// remoteTag is the To tag of the latest response to our INVITE
	// (outbound; tags).
	remoteTag string
	// Dialogs that move between nodes (restore.go).
	remoteSeq    uint32   // highest CSeq of the far end's ordered requests
	remoteTarget *sip.Uri // the far end's Contact from its last target refresh
	restored     bool     // rebuilt from a DialogState
	restoredUser string   // the user part of our Contact in a restored dialog
	onChange     atomic.Pointer[func()]
}

// Events returns the dialog's events; it is closed when the dialog ends.
func (d *Dialog) Events() <-chan Event { return d.events }

// Context ends when the dialog does.
func (d *Dialog) Context() context.Context { return d.ctx }

// RemoteSDP returns the far end's session description so far.
func (d *Dialog) RemoteSDP() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remote
}

// RequestUser is the user part of the INVITE's Request-URI (the called
// number or account).
func (d *Dialog) RequestUser() string { return d.invite.Recipient.User }

// FromUser and FromName are the caller's user and display name.
func (d *Dialog) FromUser() string { return d.invite.From().Address.User }

// FromName is the caller's display name.
func (d *Dialog) FromName() string { return d.invite.From().DisplayName }

// Header returns the first value of a header of the INVITE, or "".
func (d *Dialog) Header(name string) string {
	if h := d.invite.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// Source is the address the INVITE came from (inbound).
func (d *Dialog) Source() string { return d.invite.Source() }

func (d *Dialog) emit(e Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return
	}
	select {
	case d.events <- e:
	default:
		d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID, "event": e.Kind.String()}).Warn("dialog event dropped: the handler is not reading events")
	}
}

// end closes the dialog once.
func (d *Dialog) end(last *Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return
	}
	if last != nil {
		select {
		case d.events <- *last:
		default:
		}
	}
	d.ended = true
	if d.st != nil {
		d.st.timer.Stop()
	}
	close(d.events)
	d.cancel()
}

func newDialog(s *Stack, inbound bool, invite *sip.Request) *Dialog {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dialog{stack: s, Inbound: inbound, invite: invite, events: make(chan Event, 16), ctx: ctx, cancel: cancel,
		answeredEmitted: make(chan struct{}), ackedCh: make(chan struct{})}
	if c := invite.CallID(); c != nil {
		d.CallID = c.Value()
	}
	if cs := invite.CSeq(); inbound && cs != nil {
		d.remoteSeq = cs.SeqNo
	}
	return d
}

// ---- outbound ----

// Call describes an outbound INVITE.
type Call struct {
	From      Account // the line's identity and credentials (Registrar is not used)
	To        string  // the called user (number)
	Peer      string  // host:port of the PBX or provider
	Transport string  // udp (default), tcp, tls
	SDP       []byte  // the offer; empty for an offerless INVITE
	Headers   map[string]string
	// AnswerOffer, for an offerless INVITE, turns the offer in the 2xx
	// into the answer sent in the ACK (RFC 3261 §13.2.1).
	AnswerOffer func(offer []byte) []byte
	// SessionExpires overrides the stack's session interval for this
	// call; negative: ask for no session timer.
	SessionExpires time.Duration
	// MinSE overrides the Min-SE sent (a retry after 422 sends the
	// peer's, RFC 4028 §7.3); 0: the stack's.
	MinSE time.Duration
	// PRACK says whether the INVITE offers or requires reliable
	// provisional responses (RFC 3262); reliable ones are PRACKed
	// whatever it says.
	PRACK PRACKMode
	// FromHost, when set, is the host of the From URI in place of the
	// domain (To and the Request-URI keep theirs): "anonymous.invalid"
	// for an anonymous caller (RFC 3323 §4.1.1.3).
	FromHost string
}

// ErrCallFailed is wrapped by Invite errors for non-2xx answers.
var ErrCallFailed = errors.New("sip: call failed")

// ErrStackClosed: the stack was closed; nothing more is sent.
var ErrStackClosed = errors.New("sip: stack closed")

// Invite places a call. It returns once the INVITE is sent; progress,
// the answer (after the ACK is sent) or the failure arrive as events.
// Cancelling ctx before the answer sends CANCEL.
func (s *Stack) Invite(ctx context.Context, c Call) (*Dialog, error) {
	// Requests must leave from the listener socket, which sipgo knows only
	// once Serve runs.
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	host, port, err := splitHostPort(c.Peer)
	if err != nil {
		return nil, err
	}
	domain := c.From.Domain
	if domain == "" {
		domain = host
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: c.To, Host: host, Port: port})
	from := &sip.FromHeader{DisplayName: c.From.DisplayName, Address: sip.Uri{Scheme: "sip", User: c.From.User, Host: cmp.Or(c.FromHost, domain)}, Params: sip.NewParams()}
	from.Params.Add("tag", randomToken())
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: c.To, Host: domain}, Params: sip.NewParams()})
	contact := s.contact
	contact.User = c.From.User
	req.AppendHeader(&sip.ContactHeader{Address: contact, Params: sip.NewParams()})
	for k, v := range c.Headers {
		req.AppendHeader(sip.NewHeader(k, v))
	}
	req.AppendHeader(sip.NewHeader("Allow", strings.Join(s.methods, ", ")))
	switch c.PRACK {
	case PRACKSupported:
		req.AppendHeader(sip.NewHeader("Supported", "timer, replaces, 100rel"))
	case PRACKRequired:
		// RFC 3262 §4: the UAC may insist on reliable provisionals.
		req.AppendHeader(sip.NewHeader("Supported", "timer, replaces, 100rel"))
		req.AppendHeader(sip.NewHeader("Require", "100rel"))
	default:
		req.AppendHeader(sip.NewHeader("Supported", "timer, replaces"))
	}
	if se := cmp.Or(c.SessionExpires, s.cfg.SessionExpires); se > 0 {
		// RFC 4028 §7.1: ask for a session interval; the UAS picks the
		// refresher. The interval is never below our own Min-SE (§4).
		minSE := cmp.Or(c.MinSE, s.cfg.MinSE)
		se = max(se, minSE)
		req.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(se/time.Second))))
		req.AppendHeader(sip.NewHeader("Min-SE", strconv.Itoa(int(minSE/time.Second))))
	}
	if len(c.SDP) > 0 {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(c.SDP)
	}
	if c.Transport != "" {
		req.SetTransport(strings.ToUpper(c.Transport))
	}
	sess, err := s.clientDialogs.WriteInvite(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("sip: INVITE %s: %w", c.To, err)
	}
	// A second 2xx from another fork, or one that crosses our CANCEL,
	// finds no dialog: strays acknowledges and hangs it up (stray.go).
	s.strays.watchInvite(sess.InviteRequest)
	d := newDialog(s, false, sess.InviteRequest)
	d.client = sess
	s.inboundMu.Lock()
	s.outbound[sess] = d
	s.inboundMu.Unlock()
	authUser := c.From.AuthUser
	if authUser == "" {
		authUser = c.From.User
	}
	// Cancelling the wait sends CANCEL: Bye before the answer uses it.
	ictx, icancel := context.WithCancel(ctx)
	d.mu.Lock()
	d.cancelInvite = icancel
	d.mu.Unlock()
	go func() {
		defer icancel()
		seen := earlyRSeq{}
		err := sess.WaitAnswer(ictx, sipgo.AnswerOptions{Username: authUser, Password: c.From.Password,
			OnResponse: func(res *sip.Response) error {
				if tag, ok := res.To().Params.Get("tag"); ok && res.StatusCode > 100 {
					d.mu.Lock()
					d.remoteTag = tag
					d.mu.Unlock()
				}
				if res.StatusCode > 100 && res.StatusCode < 200 && hasOptionTag(res, "Require", "100rel") {
					if !d.onReliable(res, seen, c.AnswerOffer) {
						return nil
					}
				}
				switch {
				case res.StatusCode == 183 && len(res.Body()) > 0:
					d.mu.Lock()
					d.remote = res.Body()
					d.mu.Unlock()
					d.emit(Event{Kind: EventProgress, Status: res.StatusCode, Reason: res.Reason, SDP: res.Body()})
				case res.StatusCode >= 180 && res.StatusCode < 200:
					d.emit(Event{Kind: EventRinging, Status: res.StatusCode, Reason: res.Reason})
				}
				return nil
			}})
		var de *sipgo.ErrDialogResponse
		if err == nil {
			s.strays.settle(sess.InviteRequest, sess.InviteResponse)
		} else {
			s.strays.settle(sess.InviteRequest, nil)
		}
		switch {
		case err == nil:
		case errors.As(err, &de):
			d.end(failed(de.Res))
			return
		default:
			d.end(&Event{Kind: EventFailed, Reason: err.Error()})
			return
		}
		res := sess.InviteResponse
		local := c.SDP
		d.mu.Lock()
		pracked, earlyAnswered := d.pracked, d.earlyAnswered
		if earlyAnswered {
			local = d.local
		}
		d.mu.Unlock()
		if len(c.SDP) == 0 && c.AnswerOffer != nil && len(res.Body()) > 0 && !earlyAnswered {
			// Offerless INVITE: the 2xx carried the offer, our answer
			// goes in the ACK.
			local = c.AnswerOffer(res.Body())
		}
		var ackErr error
		if pracked {
			body := local
			if earlyAnswered || len(c.SDP) > 0 {
				body = nil // the answer went in the PRACK, or the offer in the INVITE
			}
			ackErr = d.ackInvite(res, body)
		} else {
			ackErr = d.ack(sess, local)
		}
		if err := ackErr; err != nil {
			d.end(&Event{Kind: EventFailed, Reason: "ACK: " + err.Error()})
			return
		}
		d.mu.Lock()
		d.answered = true
		if len(res.Body()) > 0 || !earlyAnswered {
			d.remote = res.Body()
		}
		d.local = local
		d.mu.Unlock()
		d.sessionRefreshed(res)
		d.emit(Event{Kind: EventAnswered, Status: res.StatusCode, Reason: res.Reason, SDP: res.Body()})
		close(d.answeredEmitted)
		select {
		case <-sess.Context().Done():
			d.end(&Event{Kind: EventBye})
		case <-d.ctx.Done():
		}
	}()
	go func() {
		<-d.ctx.Done()
		s.inboundMu.Lock()
		delete(s.outbound, sess)
		s.inboundMu.Unlock()
		d.mu.Lock()
		kept := d.keptAck
		d.mu.Unlock()
		if kept != nil {
			s.acks.drop(*kept)
		}
		// sipgo keeps an established session in its dialog cache until
		// Close, which sends nothing: without it every outbound call
		// stayed in the cache for the life of the stack.
		_ = sess.Close()
	}()
	return d, nil
}

// ack acknowledges the 2xx of the initial INVITE, with an SDP answer
// when the INVITE was offerless.
func (d *Dialog) ack(sess *sipgo.DialogClientSession, answer []byte) error {
	if len(answer) == 0 || len(d.invite.Body()) > 0 {
		return sess.Ack(context.Background())
	}
	target := sess.InviteRequest.Recipient
	if c := sess.InviteResponse.Contact(); c != nil {
		target = c.Address
	}
	ack := sip.NewRequest(sip.ACK, *target.Clone())
	ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ack.SetBody(answer)
	return sess.WriteAck(context.Background(), ack)
}

func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return hp, 0, nil
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("sip: bad port in %q", hp)
	}
	return host, port, nil
}

// ---- inbound ----

// Ring answers 180 Ringing (inbound, before the answer); reliably
// (RFC 3262) when SetPRACK or the INVITE's Require says so.
func (d *Dialog) Ring() error {
	return d.provisional(sip.StatusRinging, "Ringing", nil)
}

// Progress answers 183 Session Progress with early media SDP; reliably
// like Ring.
func (d *Dialog) Progress(sdp []byte) error {
	return d.provisional(183, "Session Progress", sdp)
}

// Answer answers 200 OK with the SDP answer (or, to an offerless INVITE,
// our offer: the answer arrives with EventAnswered from the ACK). It
// returns once the ACK arrived; without one in 64*T1 the call is hung up
// (RFC 3261 §13.3.1.4) and EventFailed reported.
func (d *Dialog) Answer(sdp []byte) error {
	// RFC 3262 §3: no 2xx while a reliable provisional with SDP waits
	// for its PRACK.
	if err := d.awaitPRACKs(); err != nil {
		return err
	}
	// The session's copy of the INVITE carries our To tag.
	res := sip.NewResponseFromRequest(d.server.InviteRequest, sip.StatusOK, "OK", nil)
	res.AppendHeader(&sip.ContactHeader{Address: d.stack.contact})
	res.AppendHeader(sip.NewHeader("Allow", strings.Join(d.stack.methods, ", ")))
	res.AppendHeader(sip.NewHeader("Supported", "timer, replaces"))
	d.sessionTimerHeaders(d.invite, res)
	if len(sdp) > 0 {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(sdp)
	}
	d.mu.Lock()
	d.answered = true
	d.local = sdp
	d.mu.Unlock()
	// sipgo repeats the 200 until the ACK comes but restarts its 64*T1
	// limit with every repetition, so the limit is kept here.
	errc := make(chan error, 1)
	go func() { errc <- d.server.WriteResponse(res) }()
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-time.After(64 * sip.T1):
		d.hangup(&Event{Kind: EventFailed, Status: sip.StatusRequestTimeout, Reason: "no ACK for our 200"})
		return ErrNoAck
	}
	d.sessionRefreshed(d.invite)
	return nil
}

// ErrNoAck: our 200 was never acknowledged; the call was hung up.
var ErrNoAck = errors.New("sip: no ACK for our 200 within 64*T1")

// Reject answers the INVITE with a final failure status, e.g. 486. It
// does not wait: sipgo holds the answer until the caller's ACK (or Timer
// H, 32 s, when the ACK is lost), which must not hold up the caller of
// Reject; the stack waits for it before it lets the transaction go. A
// second Reject does nothing.
func (d *Dialog) Reject(status int, reason string) error {
	d.mu.Lock()
	if d.rejected != nil || d.answered {
		d.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	d.rejected = done
	d.mu.Unlock()
	go func() {
		defer close(done)
		_ = d.server.Respond(status, reason, nil)
		d.end(nil)
	}()
	return nil
}

// Bye hangs up an established dialog; an outbound call not answered yet
// is cancelled (CANCEL) instead.
func (d *Dialog) Bye(ctx context.Context) error {
	d.mu.Lock()
	cancelInvite, answered := d.cancelInvite, d.answered
	d.mu.Unlock()
	if !d.Inbound && !answered && cancelInvite != nil {
		cancelInvite()
		return nil
	}
	if d.stack.isClosed() {
		d.end(nil)
		return ErrStackClosed
	}
	err := d.writeBye(ctx, "")
	d.end(nil)
	return err
}

type handlerBox struct{ h Handler }

// SetHandler sets the handler of inbound dialogs (INVITEs that match no
// dialog); safe to call while serving. Without one, INVITEs get 480.
func (s *Stack) SetHandler(h Handler) { s.handler.Store(&handlerBox{h}) }

func (s *Stack) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To() != nil && req.To().Params.Has("tag") {
		s.onReinvite(req, tx)
		return
	}
	if s.tooBrief(req, tx) {
		return
	}
	hb := s.handler.Load()
	if hb == nil || hb.h == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil))
		return
	}
	sess, err := s.serverDialogs.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, err.Error(), nil))
		return
	}
	d := newDialog(s, true, req)
	d.server = sess
	d.inviteTx = tx
	d.remote = req.Body()
	s.inboundMu.Lock()
	s.inbound[sess] = d
	s.inboundMu.Unlock()
	defer func() {
		s.inboundMu.Lock()
		delete(s.inbound, sess)
		s.inboundMu.Unlock()
	}()
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusTrying, "Trying", nil))
	go func() {
		// Before the answer, the end of the INVITE transaction means the
		// caller cancelled (sipgo answers the CANCEL and sends 487) or
		// gave up; after it, the dialog lasts until a BYE.
		// sipgo ends the session's context as soon as a CANCEL arrives;
		// the transaction itself lingers for Timer I after the 487's ACK.
		select {
		case <-tx.Done():
			d.mu.Lock()
			answered := d.answered
			d.mu.Unlock()
			if !answered {
				d.end(&Event{Kind: EventCancelled})
				return
			}
		case <-sess.Context().Done():
			d.mu.Lock()
			answered := d.answered
			d.mu.Unlock()
			if !answered {
				d.end(&Event{Kind: EventCancelled})
				return
			}
		case <-d.ctx.Done():
			return
		}
		select {
		case <-sess.Context().Done():
			d.end(&Event{Kind: EventBye})
		case <-d.ctx.Done():
		}
	}()
	hb.h.ServeDialog(d)
	d.mu.Lock()
	answered, rejected := d.answered, d.rejected
	d.mu.Unlock()
	switch {
	case rejected != nil:
		<-rejected
	case !answered && !d.isEnded():
		_ = sess.Respond(sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil)
	}
	d.end(nil)
	_ = sess.Close()
}

// waitAck holds an in-dialog request of an inbound dialog until the ACK
// of our 200 was processed: handlers run concurrently, and a request the
// caller sent right after its ACK could otherwise be read first and make
// sipgo refuse the ACK's older CSeq.
func (d *Dialog) waitAck() {
	if !d.Inbound {
		return
	}
	select {
	case <-d.ackedCh:
	case <-d.ctx.Done():
	case <-time.After(time.Second):
	}
}

func (d *Dialog) isEnded() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended
}

func (s *Stack) onAck(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogOf(req)
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.ackWait != nil && req.CSeq().SeqNo == d.ackCSeq {
		// The ACK of our 2xx to a re-INVITE.
		close(d.ackWait)
		d.ackWait = nil
		d.mu.Unlock()
		return
	}
	first := d.Inbound && !d.acked
	d.mu.Unlock()
	if !first {
		return
	}
	if err := d.server.ReadAck(req, tx); err == nil {
		d.mu.Lock()
		d.acked = true
		close(d.ackedCh)
		if len(req.Body()) > 0 {
			// The answer to the offer of our 200 (offerless INVITE).
			d.remote = req.Body()
		}
		d.mu.Unlock()
		d.emit(Event{Kind: EventAnswered, Status: 200, SDP: req.Body()})
	}
}

// noDialog answers a request that matches no dialog (RFC 3261 §12.2.2).
func noDialog(req *sip.Request, tx sip.ServerTransaction) {
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
}

// dialogFor is dialogOf that answers 481 when there is none.
func (s *Stack) dialogFor(req *sip.Request, tx sip.ServerTransaction) *Dialog {
	d := s.dialogOf(req)
	if d == nil {
		noDialog(req, tx)
	}
	return d
}

// readInDialog checks an in-dialog request's CSeq once the ACK of an
// inbound INVITE was processed; out of order it answers 500 with
// Retry-After (RFC 3261 §12.2.2, §14.2) and reports false.
func (d *Dialog) readInDialog(req *sip.Request, tx sip.ServerTransaction) bool {
	d.waitAck()
	var err error
	switch {
	case d.restored:
		err = d.checkRestoredCSeq(req)
	case d.uas():
		err = d.server.ReadRequest(req, tx)
	default:
		err = d.client.ReadRequest(req, tx)
	}
	if err == nil {
		d.noteRemoteCSeq(req.CSeq().SeqNo)
		d.changed()
	}
	if err != nil {
		res := sip.NewResponseFromRequest(req, sip.StatusInternalServerError, "CSeq out of order", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", "1"))
		_ = tx.Respond(res)
		return false
	}
	return true
}

// dialogOf finds the dialog an in-dialog request belongs to, inbound or
// outbound.
func (s *Stack) dialogOf(req *sip.Request) *Dialog {
	if sess, err := s.serverDialogs.MatchDialogRequest(req); err == nil {
		return s.findInbound(sess)
	}
	if sess, err := s.clientDialogs.MatchRequestDialog(req); err == nil {
		s.inboundMu.Lock()
		defer s.inboundMu.Unlock()
		return s.outbound[sess]
	}
	return s.restoredOf(req)
}

type reinvite struct {
	answer chan reinviteAnswer
}

type reinviteAnswer struct {
	code   int
	reason string
	sdp    []byte
}

// AcceptReinvite answers the pending re-INVITE with 200 and sdp.
func (d *Dialog) AcceptReinvite(sdp []byte) error {
	return d.answerReinvite(reinviteAnswer{code: sip.StatusOK, reason: "OK", sdp: sdp})
}

// RejectReinvite answers the pending re-INVITE with a failure, e.g. 488;
// the dialog goes on with the media it had.
func (d *Dialog) RejectReinvite(code int, reason string) error {
	return d.answerReinvite(reinviteAnswer{code: code, reason: reason})
}

func (d *Dialog) answerReinvite(a reinviteAnswer) error {
	d.mu.Lock()
	p := d.pending
	d.mu.Unlock()
	if p == nil {
		return errors.New("sip: no re-INVITE is pending")
	}
	select {
	case p.answer <- a:
		return nil
	default:
		return errors.New("sip: the re-INVITE was already answered")
	}
}

// onReinvite serves an INVITE inside a dialog (RFC 3261 §14.2).
func (s *Stack) onReinvite(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogFor(req, tx)
	if d == nil {
		return
	}
	if s.tooBrief(req, tx) {
		return
	}
	if !d.readInDialog(req, tx) {
		return
	}
	a, ok := d.awaitOffer(req, tx, EventReinvite)
	if !ok {
		return
	}
	res := d.answerOffer(req, a)
	ackWait := make(chan struct{})
	if a.code/100 == 2 {
		d.mu.Lock()
		if d.ackWait != nil {
			// A newer re-INVITE implies the previous 2xx arrived.
			close(d.ackWait)
		}
		d.ackWait, d.ackCSeq = ackWait, req.CSeq().SeqNo
		d.mu.Unlock()
	}
	if err := tx.Respond(res); err != nil || a.code/100 != 2 {
		return
	}
	d.noteTarget(req.Contact()) // RFC 3261 §12.2.2: a target refresh
	d.sessionRefreshed(req)
	// §13.3.1.4: the 2xx is repeated (T1 doubling to T2) until its ACK
	// arrives, for at most 64*T1.
	interval := sip.T1
	deadline := time.After(64 * sip.T1)
	for {
		select {
		case <-ackWait:
			return
		case <-d.ctx.Done():
			return
		case <-deadline:
			d.mu.Lock()
			if d.ackWait == ackWait {
				d.ackWait = nil
			}
			d.mu.Unlock()
			return
		case <-time.After(interval):
			_ = tx.Respond(res)
			interval = min(2*interval, sip.T2)
		}
	}
}

func (s *Stack) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if d := s.dialogOf(req); d != nil && d.Inbound {
		d.mu.Lock()
		answered := d.answered
		d.mu.Unlock()
		if answered {
			// A BYE sent right after the ACK of our 2xx may be read
			// first; sipgo would then end the dialog before the ACK
			// and Answer would report no ACK.
			d.waitAck()
		}
	}
	if err := s.serverDialogs.ReadBye(req, tx); err == nil {
		return
	}
	if err := s.clientDialogs.ReadBye(req, tx); err == nil {
		return
	}
	if d := s.restoredOf(req); d != nil {
		d.readRestoredBye(req, tx)
		return
	}
	noDialog(req, tx)
}

func (s *Stack) findInbound(sess *sipgo.DialogServerSession) *Dialog {
	s.inboundMu.Lock()
	defer s.inboundMu.Unlock()
	return s.inbound[sess]
}

// Info sends an INFO in the dialog, e.g. a DTMF digit as
// application/dtmf-relay ("Signal=5\r\nDuration=160\r\n").
func (d *Dialog) Info(ctx context.Context, contentType string, body []byte) error {
	req, err := d.newRequest(sip.INFO)
	if err != nil {
		return err
	}
	req.AppendHeader(sip.NewHeader("Content-Type", contentType))
	req.SetBody(body)
	res, err := d.do(ctx, req)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &StatusError{Method: "INFO", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

func (s *Stack) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	d := s.dialogFor(req, tx)
	if d == nil {
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	if !d.Inbound {
		select {
		case <-d.answeredEmitted:
		case <-d.ctx.Done():
			return
		}
	}
	d.emit(Event{Kind: EventInfo, ContentType: ct, Body: req.Body()})
}
