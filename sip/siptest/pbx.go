package siptest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// The Registrar is also the rest of a PBX stand-in: a UAS that answers
// INVITEs as scripted, a UAC that calls registered contacts, a notifier
// for subscriptions and MWI, and a recorder of every message on its
// socket.

// Incoming describes an INVITE the UAS received.
type Incoming struct {
	User   string // Request-URI user: the number called
	From   string // From user
	SDP    []byte
	CallID string
}

// Script says how the UAS treats one INVITE.
type Script struct {
	Ring        time.Duration // send 180 and wait this long before the final answer
	EarlyMedia  []byte        // send 183 with this SDP first (early media)
	Status      int           // final status; 0 means 200
	SDP         []byte        // SDP of the 200 (default: a fixed PCMU answer)
	HangUpAfter time.Duration // send BYE this long after the ACK (0: wait for the far end)
	// Headers go with a non-2xx final answer (a 3xx's Contact, a 422's
	// Min-SE).
	Headers map[string]string
	// Reliable sends the 183 and the 180 reliably (RFC 3262: Require:
	// 100rel, an RSeq), each repeated from T1 doubling until its PRACK,
	// like a provider that requires 100rel: an INVITE that does not
	// support 100rel gets 421, and a reliable 18x not PRACKed within
	// 64*T1 ends the call with 500. Nothing more is sent before the
	// PRACK of the 18x before.
	Reliable bool
	// Forward makes the PBX a B2BUA for this call: it calls the line
	// registered as the called user with the caller's SDP, rings the caller
	// meanwhile, answers with the callee's answer (or its failure status)
	// and passes a hang-up from either side to the other.
	Forward bool
}

// DefaultAnswerSDP is the 200's SDP when a Script gives none.
const DefaultAnswerSDP = "v=0\r\no=siptest 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"

// Message is one datagram the PBX sent or received.
type Message struct {
	At       time.Time
	Outgoing bool
	Peer     string
	Data     []byte
}

// StartLine is the message's first line ("INVITE sip:..." or "SIP/2.0 200 OK").
func (m Message) StartLine() string {
	line, _, _ := strings.Cut(string(m.Data), "\r\n")
	return line
}

// recordingConn records every datagram through it.
type recordingConn struct {
	net.PacketConn
	r *Registrar
}

func (c recordingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if n > 0 && addr != nil {
		c.r.record(false, addr, b[:n])
	}
	return n, addr, err
}

// WriteTo records before sending, so that a test woken by the datagram
// finds it recorded.
func (c recordingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.r.record(true, addr, b)
	return c.PacketConn.WriteTo(b, addr)
}

func (r *Registrar) record(out bool, addr net.Addr, b []byte) {
	if r.cfg.NoRecord {
		return
	}
	r.mu.Lock()
	r.messages = append(r.messages, Message{At: time.Now(), Outgoing: out, Peer: addr.String(), Data: append([]byte(nil), b...)})
	r.mu.Unlock()
}

// Messages returns every datagram sent and received so far, in order.
func (r *Registrar) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.messages...)
}

// Received returns the requests received with method.
func (r *Registrar) Received(method string) []Message {
	var out []Message
	for _, m := range r.Messages() {
		if !m.Outgoing && strings.HasPrefix(m.StartLine(), method+" ") {
			out = append(out, m)
		}
	}
	return out
}

// Sent returns the requests sent with method.
func (r *Registrar) Sent(method string) []Message {
	var out []Message
	for _, m := range r.Messages() {
		if m.Outgoing && strings.HasPrefix(m.StartLine(), method+" ") {
			out = append(out, m)
		}
	}
	return out
}

// Calls counts INVITEs answered by the UAS, by final status.
func (r *Registrar) Calls() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int]int{}
	for k, v := range r.finals {
		out[k] = v
	}
	return out
}

func (r *Registrar) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To() != nil && req.To().Params.Has("tag") {
		// A re-INVITE: accept it with our SDP, direction mirrored.
		if r.cfg.Reinvite != nil {
			r.mu.Lock()
			r.reinvites++
			n := r.reinvites
			r.mu.Unlock()
			switch st := r.cfg.Reinvite(n); {
			case st < 0:
				return // unanswered: the server transaction absorbs the retransmissions
			case st > 0:
				_ = tx.Respond(sip.NewResponseFromRequest(req, st, "Scripted", nil))
				return
			}
		}
		sdp := []byte(DefaultAnswerSDP)
		if strings.Contains(string(req.Body()), "a=sendonly") {
			sdp = []byte(strings.Replace(DefaultAnswerSDP, "a=sendrecv", "a=recvonly", 1))
		}
		if sess, err := r.uas.MatchDialogRequest(req); err == nil {
			_ = sess.ReadRequest(req, tx)
		} else if csess, err := r.uac.MatchRequestDialog(req); err == nil {
			_ = csess.ReadRequest(req, tx) // a call the PBX placed
		} else {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
			return
		}
		r.refreshTarget(req)
		res := sip.NewSDPResponseFromRequest(req, sdp)
		_ = tx.Respond(res)
		return
	}
	script := Script{}
	if r.cfg.UAS != nil {
		script = r.cfg.UAS(Incoming{User: req.Recipient.User, From: req.From().Address.User, SDP: req.Body(), CallID: req.CallID().Value()})
	}
	sess, err := r.uas.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, err.Error(), nil))
		return
	}
	defer func() { _ = sess.Close() }()
	_ = sess.Respond(sip.StatusTrying, "Trying", nil)
	rel := &reliable{r: r, sess: sess, callID: req.CallID().Value()}
	if script.Reliable && !hasTag(req, "Supported", "100rel") && !hasTag(req, "Require", "100rel") {
		r.count(421)
		_ = sess.Respond(421, "Extension Required", nil, sip.NewHeader("Require", "100rel"))
		return
	}
	if len(script.EarlyMedia) > 0 {
		if script.Reliable {
			if !rel.send(183, "Session Progress", script.EarlyMedia) {
				return
			}
		} else {
			_ = sess.Respond(183, "Session Progress", script.EarlyMedia, sip.NewHeader("Content-Type", "application/sdp"))
		}
	}
	if script.Forward {
		r.forward(req, sess)
		return
	}
	if script.Ring > 0 {
		if script.Reliable {
			if !rel.send(sip.StatusRinging, "Ringing", nil) {
				return
			}
		} else {
			_ = sess.Respond(sip.StatusRinging, "Ringing", nil)
		}
		select {
		case <-time.After(script.Ring):
		case <-sess.Context().Done():
			r.count(sip.StatusRequestTerminated)
			return
		}
	}
	status := script.Status
	if status == 0 {
		status = sip.StatusOK
	}
	r.count(status)
	if status != sip.StatusOK {
		var hs []sip.Header
		for k, v := range script.Headers {
			// Parsed as sipgo parses what it reads: a scripted Contact is
			// then the response's Contact, and the session does not add
			// its own (a 3xx's contacts are its targets, and only those).
			parsed, err := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte(k+": "+v))
			if err != nil {
				parsed = []sip.Header{sip.NewHeader(k, v)}
			}
			hs = append(hs, parsed...)
		}
		_ = sess.Respond(status, "Scripted", nil, hs...)
		return
	}
	sdp := script.SDP
	if sdp == nil {
		sdp = []byte(DefaultAnswerSDP)
	}
	if err := sess.RespondSDP(sdp); err != nil {
		return
	}
	if script.HangUpAfter > 0 {
		select {
		case <-time.After(script.HangUpAfter):
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = r.byeUAS(ctx, sess)
			cancel()
		case <-sess.Context().Done():
		}
		return
	}
	<-sess.Context().Done()
}

// forward bridges an INVITE to the registered callee (B2BUA).
func (r *Registrar) forward(req *sip.Request, sess *sipgo.DialogServerSession) {
	ctx, cancel := context.WithCancel(sess.Context())
	defer cancel()
	_ = sess.Respond(sip.StatusRinging, "Ringing", nil)
	out, err := r.Call(ctx, req.Recipient.User, req.From().Address.User, req.Body())
	if err != nil {
		status := sip.StatusTemporarilyUnavailable
		if out != nil && out.Status >= 300 {
			status = out.Status
		}
		if errors.Is(err, ErrNotRegistered) {
			status = sip.StatusNotFound
		}
		r.count(status)
		_ = sess.Respond(status, "Forwarded failure", nil)
		return
	}
	r.count(sip.StatusOK)
	if err := sess.RespondSDP(out.SDP); err != nil {
		_ = out.HangUp(context.Background())
		return
	}
	select {
	case <-sess.Context().Done(): // the caller hung up
		hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = out.HangUp(hctx)
		hcancel()
	case <-out.Done(): // the callee hung up
		hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = r.byeUAS(hctx, sess)
		hcancel()
	}
}

func (r *Registrar) count(status int) {
	r.mu.Lock()
	r.finals[status]++
	r.mu.Unlock()
}

func (r *Registrar) onAck(req *sip.Request, tx sip.ServerTransaction) {
	if err := r.uas.ReadAck(req, tx); err == nil {
		return
	}
}

func (r *Registrar) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if cid := req.CallID(); cid != nil {
		defer func() {
			r.mu.Lock()
			delete(r.targets, cid.Value())
			r.mu.Unlock()
		}()
	}
	if err := r.uas.ReadBye(req, tx); err == nil {
		return
	}
	if err := r.uac.ReadBye(req, tx); err == nil {
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
}

// ReferIn describes a REFER the PBX received inside a call.
type ReferIn struct {
	ReferTo string // the Refer-To header value
	CallID  string
}

// ReferScript says how the PBX treats one REFER (RFC 3515): Status
// answers it (0: 202 Accepted); after a 2xx, the PBX reports the
// transfer's progress with one NOTIFY (message/sipfrag) per entry of
// Notify, Pause apart; a final status (>= 200) ends the implicit
// subscription, so a list of 1xx only leaves the transfer pending for
// ever. A nil Notify means 100 then 200; an empty, non-nil one sends none.
type ReferScript struct {
	Status int
	Notify []int
	Pause  time.Duration
}

// onRefer answers a transfer request inside a call and reports its
// progress as scripted; the test reads the REFER from the recorder.
func (r *Registrar) onRefer(req *sip.Request, tx sip.ServerTransaction) {
	var send func(ctx context.Context, n *sip.Request) (*sip.Response, error)
	var target sip.Uri
	if sess, err := r.uas.MatchDialogRequest(req); err == nil {
		send, target = sess.Do, contactOf(sess.InviteRequest.Contact())
	} else if csess, err := r.uac.MatchRequestDialog(req); err == nil {
		send = csess.Do
		if csess.InviteResponse != nil {
			target = contactOf(csess.InviteResponse.Contact())
		}
	} else {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
		return
	}
	script := ReferScript{}
	if r.cfg.Refer != nil {
		in := ReferIn{CallID: req.CallID().Value()}
		if h := req.GetHeader("Refer-To"); h != nil {
			in.ReferTo = h.Value()
		}
		script = r.cfg.Refer(in)
	}
	status := script.Status
	if status == 0 {
		status = sip.StatusAccepted
	}
	if status >= 300 {
		_ = tx.Respond(sip.NewResponseFromRequest(req, status, "Scripted", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, status, "Accepted", nil))
	notify := script.Notify
	if notify == nil {
		notify = []int{sip.StatusTrying, sip.StatusOK}
	}
	if target.Host == "" || len(notify) == 0 {
		return
	}
	id := strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)
	go func() {
		for i, code := range notify {
			if i > 0 && script.Pause > 0 {
				time.Sleep(script.Pause)
			}
			n := sip.NewRequest(sip.NOTIFY, target)
			n.AppendHeader(sip.NewHeader("Event", "refer;id="+id))
			if code >= 200 {
				n.AppendHeader(sip.NewHeader("Subscription-State", "terminated;reason=noresource"))
			} else {
				n.AppendHeader(sip.NewHeader("Subscription-State", "active;expires=60"))
			}
			n.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
			n.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", code, referReason(code))))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := send(ctx, n)
			cancel()
			if err != nil {
				return
			}
		}
	}()
}

// referReason is a reason phrase for a sipfrag status line.
func referReason(code int) string {
	switch {
	case code < 200:
		return "Trying"
	case code < 300:
		return "OK"
	case code == 486:
		return "Busy Here"
	case code == 404:
		return "Not Found"
	}
	return "Failed"
}

func contactOf(c *sip.ContactHeader) sip.Uri {
	if c == nil {
		return sip.Uri{}
	}
	return *c.Address.Clone()
}

// simple answers requests the PBX only acknowledges (INFO, UPDATE, NOTIFY).
func (r *Registrar) simple(req *sip.Request, tx sip.ServerTransaction) {
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
}

// onUpdate answers UPDATE 200; one inside a call refreshes its remote
// target (RFC 3311 §5.2).
func (r *Registrar) onUpdate(req *sip.Request, tx sip.ServerTransaction) {
	if _, err := r.uas.MatchDialogRequest(req); err == nil {
		r.refreshTarget(req)
	} else if _, err := r.uac.MatchRequestDialog(req); err == nil {
		r.refreshTarget(req)
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
}

// refreshTarget records the Contact of a target refresh (a re-INVITE or
// UPDATE in a call): the PBX's next requests in the call go there (RFC
// 3261 §12.2), as a real PBX's do.
func (r *Registrar) refreshTarget(req *sip.Request) {
	c := req.Contact()
	if c == nil || req.CallID() == nil {
		return
	}
	r.mu.Lock()
	r.targets[req.CallID().Value()] = *c.Address.Clone()
	r.mu.Unlock()
}

// target returns the refreshed remote target of a call, if any.
func (r *Registrar) target(callID string) (sip.Uri, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.targets[callID]
	return t, ok
}

// byeUAS hangs up a call the PBX answered, at its remote target.
func (r *Registrar) byeUAS(ctx context.Context, sess *sipgo.DialogServerSession) error {
	t, ok := r.target(sess.InviteRequest.CallID().Value())
	if !ok {
		return sess.Bye(ctx)
	}
	bye := sip.NewRequest(sip.BYE, t)
	bye.SetTransport(sess.InviteRequest.Transport())
	return sess.WriteBye(ctx, bye)
}

// OutCall is a call the PBX placed to a registered line.
type OutCall struct {
	r      *Registrar
	sess   *sipgo.DialogClientSession
	Status int    // final status
	SDP    []byte // the answer's SDP
}

// Done is closed when the call ends (a BYE either way).
func (c *OutCall) Done() <-chan struct{} { return c.sess.Context().Done() }

// HangUp sends BYE.
func (c *OutCall) HangUp(ctx context.Context) error {
	defer func() { _ = c.sess.Close() }()
	if t, ok := c.r.target(c.sess.InviteRequest.CallID().Value()); ok {
		return c.sess.WriteBye(ctx, sip.NewRequest(sip.BYE, t))
	}
	return c.sess.Bye(ctx)
}

// Refer asks the called line to transfer itself (REFER in the call, RFC
// 3515) to referTo, a Refer-To value such as "<sip:2000@pbx.test>"
// (with ?Replaces=... for an attended transfer), and returns the REFER's
// final status. The line's NOTIFYs are answered 200 and recorded.
func (c *OutCall) Refer(ctx context.Context, referTo string) (int, error) {
	if c.sess.InviteResponse == nil || c.sess.InviteResponse.Contact() == nil {
		return 0, errors.New("siptest: the call has no remote target")
	}
	target := *c.sess.InviteResponse.Contact().Address.Clone()
	if t, ok := c.r.target(c.sess.InviteRequest.CallID().Value()); ok {
		target = t
	}
	req := sip.NewRequest(sip.REFER, target)
	req.AppendHeader(sip.NewHeader("Refer-To", referTo))
	req.AppendHeader(sip.NewHeader("Referred-By", "<"+c.sess.InviteRequest.From().Address.String()+">"))
	res, err := c.sess.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// ReplacesValue is the Replaces header value (RFC 3891 §6.1) naming this
// call's dialog as the called line sees it: to-tag is the line's tag,
// from-tag the PBX's.
func (c *OutCall) ReplacesValue() string {
	fromTag, _ := c.sess.InviteRequest.From().Params.Get("tag")
	toTag := ""
	if c.sess.InviteResponse != nil {
		toTag, _ = c.sess.InviteResponse.To().Params.Get("tag")
	}
	return c.sess.InviteRequest.CallID().Value() + ";to-tag=" + toTag + ";from-tag=" + fromTag
}

// ErrNotRegistered: Call found no binding for the user.
var ErrNotRegistered = errors.New("siptest: user not registered")

// Call places an INVITE with sdp to user's registered contact, waits for
// the final answer and acknowledges a 2xx. A non-2xx comes back as an
// error carrying its status.
func (r *Registrar) Call(ctx context.Context, user, from string, sdp []byte) (*OutCall, error) {
	return r.CallWith(ctx, user, from, sdp, nil)
}

// CallWith is Call with more headers in the INVITE (e.g. Replaces).
func (r *Registrar) CallWith(ctx context.Context, user, from string, sdp []byte, headers map[string]string) (*OutCall, error) {
	return r.call(ctx, user, from, sdp, headers, nil)
}

// CallOfferless places an INVITE without SDP (RFC 3264 §4: the callee
// offers in its 2xx); answer turns that offer into the body of the ACK
// (RFC 3261 §13.2.1), nil or returning nil sends an ACK without one.
// OutCall.SDP is the offer received.
func (r *Registrar) CallOfferless(ctx context.Context, user, from string, headers map[string]string, answer func(offer []byte) []byte) (*OutCall, error) {
	if answer == nil {
		answer = func([]byte) []byte { return nil }
	}
	return r.call(ctx, user, from, nil, headers, answer)
}

func (r *Registrar) call(ctx context.Context, user, from string, sdp []byte, headers map[string]string, answer func([]byte) []byte) (*OutCall, error) {
	b, ok := r.Binding(user)
	if !ok {
		return nil, ErrNotRegistered
	}
	var target sip.Uri
	if err := sip.ParseUri(b.Contact, &target); err != nil {
		return nil, err
	}
	req := sip.NewRequest(sip.INVITE, target)
	fromHdr := &sip.FromHeader{DisplayName: from, Address: sip.Uri{Scheme: "sip", User: from, Host: r.cfg.Realm}, Params: sip.NewParams()}
	fromHdr.Params.Add("tag", token())
	req.AppendHeader(fromHdr)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: r.cfg.Realm}, Params: sip.NewParams()})
	for k, v := range headers {
		req.AppendHeader(sip.NewHeader(k, v))
	}
	if answer == nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	req.SetBody(sdp)
	sess, err := r.uac.WriteInvite(ctx, req)
	if err != nil {
		return nil, err
	}
	c := &OutCall{r: r, sess: sess}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		var de *sipgo.ErrDialogResponse
		if errors.As(err, &de) {
			c.Status = de.Res.StatusCode
			return c, fmt.Errorf("siptest: call to %s answered %d", user, de.Res.StatusCode)
		}
		return c, err
	}
	c.Status = sess.InviteResponse.StatusCode
	c.SDP = sess.InviteResponse.Body()
	if answer != nil {
		if body := answer(c.SDP); len(body) > 0 {
			target := sess.InviteRequest.Recipient
			if ct := sess.InviteResponse.Contact(); ct != nil {
				target = ct.Address
			}
			ack := sip.NewRequest(sip.ACK, *target.Clone())
			ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			ack.SetBody(body)
			return c, sess.WriteAck(ctx, ack)
		}
	}
	if err := sess.Ack(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// subscriber is one accepted SUBSCRIBE dialog.
type subscriber struct {
	contact sip.Uri
	callID  string
	from    sip.FromHeader // the subscriber's From, becomes our To
	toTag   string
	cseq    uint32
	event   string
}

func (r *Registrar) onSubscribe(req *sip.Request, tx sip.ServerTransaction) {
	user := req.From().Address.User
	rec := Request{}
	if !r.authorized(req, user, &rec) {
		res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
		r.challenge(res)
		_ = tx.Respond(res)
		return
	}
	event := ""
	if h := req.GetHeader("Event"); h != nil {
		event = strings.TrimSpace(h.Value())
	}
	if event != "message-summary" {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 489, "Bad Event", nil))
		return
	}
	expires := 3600
	if h := req.GetHeader("Expires"); h != nil {
		expires, _ = strconv.Atoi(strings.TrimSpace(h.Value()))
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	toTag, _ := req.To().Params.Get("tag")
	if toTag == "" {
		toTag = token()
		res.To().Params.Add("tag", toTag)
	}
	res.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	r.mu.Lock()
	r.subscribeCount[user]++
	if expires == 0 {
		delete(r.subscribers, user)
	} else if c := req.Contact(); c != nil {
		r.subscribers[user] = &subscriber{contact: *c.Address.Clone(), callID: req.CallID().Value(), from: *req.From(), toTag: toTag, event: event}
	}
	r.mu.Unlock()
	_ = tx.Respond(res)
}

// Subscribed reports how many SUBSCRIBEs a user sent (refreshes and the
// final Expires: 0 included) and whether a subscription is active.
func (r *Registrar) Subscribed(user string) (count int, active bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, active = r.subscribers[user]
	return r.subscribeCount[user], active
}

// NotifyMWI sends a message-summary NOTIFY to user: inside its
// subscription when it has one, else unsolicited to its registered
// contact.
func (r *Registrar) NotifyMWI(ctx context.Context, user string, waiting bool, newMsgs, oldMsgs int) (int, error) {
	yes := "no"
	if waiting {
		yes = "yes"
	}
	body := fmt.Sprintf("Messages-Waiting: %s\r\nMessage-Account: sip:%s@%s\r\nVoice-Message: %d/%d (0/0)\r\n", yes, user, r.cfg.Realm, newMsgs, oldMsgs)
	r.mu.Lock()
	sub := r.subscribers[user]
	var target sip.Uri
	req := (*sip.Request)(nil)
	if sub != nil {
		sub.cseq++
		target = sub.contact
		req = sip.NewRequest(sip.NOTIFY, target)
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: r.cfg.Realm}, Params: sip.NewParams()}
		from.Params.Add("tag", sub.toTag)
		req.AppendHeader(from)
		to := sub.from.AsTo()
		req.AppendHeader(&to)
		cid := sip.CallIDHeader(sub.callID)
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: sub.cseq, MethodName: sip.NOTIFY})
		req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires=3600"))
	}
	r.mu.Unlock()
	if req == nil {
		b, ok := r.Binding(user)
		if !ok {
			return 0, ErrNotRegistered
		}
		if err := sip.ParseUri(b.Contact, &target); err != nil {
			return 0, err
		}
		req = sip.NewRequest(sip.NOTIFY, target)
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: r.cfg.Realm}, Params: sip.NewParams()}
		from.Params.Add("tag", token())
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: r.cfg.Realm}, Params: sip.NewParams()})
	}
	req.AppendHeader(sip.NewHeader("Event", "message-summary"))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/simple-message-summary"))
	req.SetBody([]byte(body))
	tx, err := r.client.TransactionRequest(ctx, req, sipgo.ClientRequestBuild)
	if err != nil {
		return 0, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res.StatusCode, nil
		case <-tx.Done():
			return 0, tx.Err()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// hasTag reports whether a Supported or Require header lists tag.
func hasTag(req *sip.Request, name, tag string) bool {
	for _, h := range req.GetHeaders(name) {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
}

// reliable sends one INVITE's reliable provisional responses.
type reliable struct {
	r      *Registrar
	sess   *sipgo.DialogServerSession
	callID string
	rseq   uint32
}

// send sends a reliable 18x and waits for its PRACK, repeating it from
// T1 doubling (RFC 3262 §3). Without a PRACK within 64*T1 the INVITE
// gets 500 and send reports false.
func (rl *reliable) send(status int, reason string, sdp []byte) bool {
	if rl.rseq == 0 {
		rl.rseq = 1 + uint32(time.Now().UnixNano()%1000)
	} else {
		rl.rseq++
	}
	key := rl.callID + " " + strconv.FormatUint(uint64(rl.rseq), 10)
	acked := make(chan struct{})
	rl.r.mu.Lock()
	if rl.r.pracks == nil {
		rl.r.pracks = map[string]chan struct{}{}
	}
	rl.r.pracks[key] = acked
	rl.r.mu.Unlock()
	defer func() {
		rl.r.mu.Lock()
		delete(rl.r.pracks, key)
		rl.r.mu.Unlock()
	}()
	hs := []sip.Header{sip.NewHeader("Require", "100rel"), sip.NewHeader("RSeq", strconv.FormatUint(uint64(rl.rseq), 10))}
	if len(sdp) > 0 {
		hs = append(hs, sip.NewHeader("Content-Type", "application/sdp"))
	}
	if err := rl.sess.Respond(status, reason, sdp, hs...); err != nil {
		return false
	}
	interval := sip.T1
	deadline := time.After(64 * sip.T1)
	for {
		select {
		case <-acked:
			return true
		case <-rl.sess.Context().Done():
			return false
		case <-deadline:
			rl.r.count(500)
			_ = rl.sess.Respond(500, "No PRACK", nil)
			return false
		case <-time.After(interval):
			if err := rl.sess.Respond(status, reason, sdp, hs...); err != nil {
				return false
			}
			interval *= 2
		}
	}
}

// onPrack answers a PRACK: 200 when its RAck names a reliable 18x of that
// call still waiting for it (and the INVITE's method), 481 otherwise.
func (r *Registrar) onPrack(req *sip.Request, tx sip.ServerTransaction) {
	rack := req.GetHeader("RAck")
	if rack == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Missing RAck", nil))
		return
	}
	f := strings.Fields(rack.Value())
	if len(f) != 3 || f[2] != "INVITE" {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad RAck", nil))
		return
	}
	key := req.CallID().Value() + " " + f[0]
	r.mu.Lock()
	ch := r.pracks[key]
	if ch != nil {
		delete(r.pracks, key)
	}
	r.mu.Unlock()
	if ch == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "No Such Reliable Response", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	close(ch)
}
