package sip

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// A dialog moves between nodes (docs/cluster.md): State exports what RFC
// 3261 §12 says a user agent keeps of a confirmed dialog, and
// Stack.RestoreDialog builds a working dialog from it on another stack, so
// that the far end's in-dialog requests are matched to it and ours carry
// the dialog's identifiers, the next CSeq and its route set.

// DialogState is the exported state of a confirmed dialog (RFC 3261
// §12.1: Call-ID, tags, sequence numbers, route set, remote target, and
// the URIs of both sides), with what the session needs besides: the
// last agreed session descriptions and the session timer (RFC 4028).
type DialogState struct {
	CallID    string
	LocalTag  string
	RemoteTag string
	// LocalCSeq is the CSeq of the last request this side sent in the
	// dialog; the next one carries LocalCSeq+1 (§12.2.1.1).
	LocalCSeq uint32
	// RemoteCSeq is the highest CSeq of the far end's ordered requests
	// seen (the INVITE, re-INVITEs, UPDATEs); a request below it is
	// refused with 500 (§12.2.2). 0: none yet (we placed the call).
	RemoteCSeq uint32
	// RouteSet is the Route header values of our requests, in the
	// order they are sent (§12.1.1 for the UAS, §12.1.2 for the UAC).
	RouteSet []string
	// RemoteTarget is the far end's Contact URI, as last refreshed.
	RemoteTarget string
	// LocalURI and RemoteURI are the addresses of the From and To of our
	// requests (name-addr, without the tag).
	LocalURI  string
	RemoteURI string
	// LocalContact is the Contact URI we gave; after a restore only its
	// user part is kept, with the new stack's address.
	LocalContact string
	// UAC: this side sent the INVITE that created the dialog.
	UAC bool
	// Transport of the dialog's requests: UDP, TCP or TLS.
	Transport string
	// PeerAllow lists the methods the far end allows (its Allow).
	PeerAllow []string
	// LocalSDP and RemoteSDP are the session descriptions last agreed.
	LocalSDP  []byte
	RemoteSDP []byte
	// SessionInterval is the negotiated session interval (0: no session
	// timer); Refresher says whether this side refreshes.
	SessionInterval time.Duration
	Refresher       bool
}

// Validate reports what a state lacks to rebuild a dialog, or text that
// cannot go into a header.
func (s *DialogState) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"Call-ID", s.CallID}, {"local tag", s.LocalTag}, {"remote tag", s.RemoteTag},
		{"remote target", s.RemoteTarget}, {"local URI", s.LocalURI}, {"remote URI", s.RemoteURI},
	} {
		if strings.TrimSpace(f.v) == "" {
			errs = append(errs, fmt.Errorf("sip: dialog state: no %s", f.name))
		}
	}
	all := append([]string{s.CallID, s.LocalTag, s.RemoteTag, s.RemoteTarget, s.LocalURI, s.RemoteURI, s.LocalContact, s.Transport},
		append(s.RouteSet, s.PeerAllow...)...)
	for _, v := range all {
		if strings.ContainsAny(v, "\r\n") {
			errs = append(errs, fmt.Errorf("sip: dialog state: line break in %q", v))
		}
	}
	if s.SessionInterval < 0 {
		errs = append(errs, fmt.Errorf("sip: dialog state: session interval %v", s.SessionInterval))
	}
	return errors.Join(errs...)
}

// uas reports whether the dialog is served through a sipgo server
// session: one we answered, or one restored from a DialogState (which is
// rebuilt in that shape whatever its role).
func (d *Dialog) uas() bool { return d.server != nil }

// OnChange sets f to be called whenever the dialog's exportable state
// changes (a request sent or received, an offer answered, a session
// refresh, a new remote target), so that the owner can store it again.
// f runs on the stack's goroutines and must not block.
func (d *Dialog) OnChange(f func()) {
	if f == nil {
		d.onChange.Store(nil)
		return
	}
	d.onChange.Store(&f)
}

func (d *Dialog) changed() {
	if f := d.onChange.Load(); f != nil {
		(*f)()
	}
}

// noteRemoteCSeq records the CSeq of an ordered request from the far end.
func (d *Dialog) noteRemoteCSeq(seq uint32) {
	d.mu.Lock()
	d.remoteSeq = max(d.remoteSeq, seq)
	d.mu.Unlock()
}

// noteTarget updates the remote target from the Contact of a target
// refresh (RFC 3261 §12.2: a re-INVITE or UPDATE the far end sent, or
// the 2xx to ours; RFC 3311 §5.1 for UPDATE).
func (d *Dialog) noteTarget(c *sip.ContactHeader) {
	if c == nil {
		return
	}
	t := *c.Address.Clone()
	d.mu.Lock()
	d.remoteTarget = &t
	d.mu.Unlock()
	d.changed()
}

// State exports the dialog. ok is false before the dialog is confirmed
// (answered) or after it ended.
func (d *Dialog) State() (DialogState, bool) {
	d.mu.Lock()
	// An inbound dialog is confirmed by the ACK of our 200 (RFC 3261
	// §13.3.1.4): sipgo's session knows it before onAck notes it here.
	answered := d.answered && (!d.uas() || d.acked || d.server.LoadState() == sip.DialogStateConfirmed)
	ended := d.ended
	st := DialogState{CallID: d.CallID, RemoteCSeq: d.remoteSeq, UAC: !d.Inbound,
		LocalSDP: append([]byte(nil), d.local...), RemoteSDP: append([]byte(nil), d.remote...)}
	if d.st != nil {
		st.SessionInterval, st.Refresher = d.st.interval, d.st.refresher
	}
	d.mu.Unlock()
	if !answered || ended {
		return DialogState{}, false
	}
	if !d.uas() && (d.client.InviteResponse == nil || !d.client.InviteResponse.IsSuccess()) {
		return DialogState{}, false
	}
	if d.uas() {
		// Not tags(): sipgo writes the session's InviteResponse while it
		// repeats our 200; the To tag of its INVITE copy is set once.
		st.LocalTag, _ = d.server.InviteRequest.To().Params.Get("tag")
		st.RemoteTag, _ = d.server.InviteRequest.From().Params.Get("tag")
	} else {
		st.LocalTag, st.RemoteTag = d.tags()
	}
	if t, err := d.target(); err == nil {
		st.RemoteTarget = t.String()
	}
	var allow headers
	if d.uas() {
		inv := d.server.InviteRequest
		st.LocalCSeq = d.server.CSEQ()
		for _, h := range inv.GetHeaders("Record-Route") {
			st.RouteSet = append(st.RouteSet, h.Value())
		}
		st.LocalURI = nameAddr(inv.To().DisplayName, inv.To().Address)
		st.RemoteURI = nameAddr(inv.From().DisplayName, inv.From().Address)
		st.Transport = inv.Transport()
		allow = inv
		c := d.stack.contact
		if d.restoredUser != "" {
			c.User = d.restoredUser
		}
		st.LocalContact = c.String()
	} else {
		inv, res := d.client.InviteRequest, d.client.InviteResponse
		st.LocalCSeq = d.client.CSEQ()
		rr := res.GetHeaders("Record-Route")
		for i := len(rr) - 1; i >= 0; i-- {
			st.RouteSet = append(st.RouteSet, rr[i].Value())
		}
		st.LocalURI = nameAddr(inv.From().DisplayName, inv.From().Address)
		st.RemoteURI = nameAddr(res.To().DisplayName, res.To().Address)
		st.Transport = inv.Transport()
		allow = res
		if c := inv.Contact(); c != nil {
			st.LocalContact = c.Address.String()
		}
	}
	for _, h := range allow.GetHeaders("allow") {
		for _, m := range strings.Split(h.Value(), ",") {
			if m = strings.TrimSpace(m); m != "" {
				st.PeerAllow = append(st.PeerAllow, m)
			}
		}
	}
	return st, true
}

func nameAddr(display string, u sip.Uri) string {
	h := sip.ToHeader{DisplayName: display, Address: u}
	return h.Value()
}

// ErrDialogExists: a dialog with the same Call-ID and tags is already
// served by this stack.
var ErrDialogExists = errors.New("sip: the dialog already exists on this stack")

// RestoreDialog rebuilds a confirmed dialog from its exported state on
// this stack (after a takeover): requests of the far end that carry its
// Call-ID and tags are matched to it, and its own requests go to the
// remote target through the route set with CSeq numbers following
// st.LocalCSeq, and this stack's Contact. The session timer restarts from
// now with the stored interval. Events arrive on the dialog's Events as
// for any dialog; it is over when the far end or this side hangs up.
// Send a target refresh (TargetRefresh) so that the far end sends its
// next requests here.
func (s *Stack) RestoreDialog(st DialogState) (*Dialog, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, ErrStackClosed
	}
	invite, err := restoredInvite(st)
	if err != nil {
		return nil, err
	}
	ua := &sipgo.DialogUA{Client: s.client, ContactHDR: sip.ContactHeader{Address: s.contact}}
	sess, err := ua.ReadInvite(invite, restoredTx{})
	if err != nil {
		return nil, fmt.Errorf("sip: restore dialog %s: %w", st.CallID, err)
	}
	// The session was given a fresh To tag: ours is the stored one.
	sess.InviteRequest.To().Params.Add("tag", st.LocalTag)
	if sess.ID, err = sip.DialogIDFromRequestUAS(sess.InviteRequest); err != nil {
		return nil, fmt.Errorf("sip: restore dialog %s: %w", st.CallID, err)
	}
	res := sip.NewResponseFromRequest(sess.InviteRequest, sip.StatusOK, "OK", nil)
	contact := s.contact
	if u := contactUser(st.LocalContact); u != "" {
		contact.User = u
	}
	res.AppendHeader(&sip.ContactHeader{Address: contact})
	sess.InviteResponse = res
	// Our next request carries LocalCSeq+1: sipgo counts from the CSeq
	// of the session's INVITE when it is set up, and later checks the far
	// end's BYE against it, so that is set to the far end's number after.
	sess.InitWithState(sip.DialogStateConfirmed)
	sess.InviteRequest.CSeq().SeqNo = st.RemoteCSeq

	d := newDialog(s, !st.UAC, sess.InviteRequest)
	d.server = sess
	d.restored = true
	d.restoredUser = contact.User
	d.answered, d.acked = true, true
	close(d.ackedCh)
	close(d.answeredEmitted)
	d.remoteSeq = st.RemoteCSeq
	d.local = append([]byte(nil), st.LocalSDP...)
	d.remote = append([]byte(nil), st.RemoteSDP...)
	key := restoredKey(st.CallID, st.LocalTag, st.RemoteTag)
	s.inboundMu.Lock()
	if s.restored == nil {
		s.restored = map[string]*Dialog{}
	}
	if _, dup := s.restored[key]; dup {
		s.inboundMu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrDialogExists, st.CallID)
	}
	s.restored[key] = d
	s.inboundMu.Unlock()
	if st.SessionInterval > 0 {
		d.mu.Lock()
		d.st = &sessionTimer{interval: st.SessionInterval, refresher: st.Refresher}
		if st.Refresher {
			d.st.timer = time.AfterFunc(st.SessionInterval/2, d.refreshSession)
		} else {
			d.st.timer = time.AfterFunc(st.SessionInterval-min(32*time.Second, st.SessionInterval/3), d.sessionExpired)
		}
		d.mu.Unlock()
	}
	go func() {
		<-d.ctx.Done()
		s.inboundMu.Lock()
		if s.restored[key] == d {
			delete(s.restored, key)
		}
		s.inboundMu.Unlock()
		_ = sess.Close()
	}()
	if s.isClosed() {
		d.end(nil)
		return nil, ErrStackClosed
	}
	return d, nil
}

func restoredKey(callID, local, remote string) string {
	return callID + "\x00" + local + "\x00" + remote
}

// restoredOf finds the restored dialog a request from the far end
// belongs to: its To tag is ours, its From tag the far end's.
func (s *Stack) restoredOf(req *sip.Request) *Dialog {
	cid, to, from := req.CallID(), req.To(), req.From()
	if cid == nil || to == nil || from == nil {
		return nil
	}
	lt, _ := to.Params.Get("tag")
	rt, _ := from.Params.Get("tag")
	s.inboundMu.Lock()
	defer s.inboundMu.Unlock()
	return s.restored[restoredKey(cid.Value(), lt, rt)]
}

// restoredInvite is the INVITE a restored dialog is rebuilt around, as
// if the far end had sent it to us (sipgo's server session keeps the
// dialog in that shape, whoever sent the real INVITE): From is the far
// end, To this side, Contact the remote target, Record-Route the route
// set in the order our requests carry it.
func restoredInvite(st DialogState) (*sip.Request, error) {
	transport := strings.ToUpper(st.Transport)
	if transport == "" {
		transport = "UDP"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INVITE %s SIP/2.0\r\n", contactURI(st.LocalContact))
	fmt.Fprintf(&b, "Via: SIP/2.0/%s restored.invalid;branch=z9hG4bK-restored\r\n", transport)
	fmt.Fprintf(&b, "From: %s;tag=%s\r\n", st.RemoteURI, st.RemoteTag)
	fmt.Fprintf(&b, "To: %s;tag=%s\r\n", st.LocalURI, st.LocalTag)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", st.CallID)
	fmt.Fprintf(&b, "CSeq: %d INVITE\r\n", st.LocalCSeq)
	fmt.Fprintf(&b, "Contact: <%s>\r\n", strings.Trim(strings.TrimSpace(st.RemoteTarget), "<>"))
	for _, r := range st.RouteSet {
		fmt.Fprintf(&b, "Record-Route: %s\r\n", r)
	}
	if len(st.PeerAllow) > 0 {
		fmt.Fprintf(&b, "Allow: %s\r\n", strings.Join(st.PeerAllow, ", "))
	}
	b.WriteString("Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	m, err := sip.ParseMessage([]byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("sip: restore dialog %s: %w", st.CallID, err)
	}
	req, ok := m.(*sip.Request)
	if !ok || req.From() == nil || req.To() == nil || req.Contact() == nil || req.CallID() == nil || req.CSeq() == nil {
		return nil, fmt.Errorf("sip: restore dialog %s: the stored addresses do not parse", st.CallID)
	}
	req.SetTransport(transport)
	return req, nil
}

// contactURI is the URI of a stored contact, or a placeholder (the
// restored INVITE's Request-URI is never sent).
func contactURI(c string) string {
	c = strings.Trim(strings.TrimSpace(c), "<>")
	if c == "" {
		return "sip:restored.invalid"
	}
	return c
}

func contactUser(c string) string {
	var u sip.Uri
	if err := sip.ParseUri(contactURI(c), &u); err != nil {
		return ""
	}
	return u.User
}

// Forget ends the dialog here without sending anything: another node
// serves it now (it restored it from an export). Events end; no BYE, no
// refresh goes out from this stack.
func (d *Dialog) Forget() { d.end(nil) }

// readRestoredBye answers the far end's BYE in a restored dialog (RFC
// 3261 §15.1.2) and ends it.
func (d *Dialog) readRestoredBye(req *sip.Request, tx sip.ServerTransaction) {
	d.mu.Lock()
	low := req.CSeq().SeqNo < d.remoteSeq
	d.mu.Unlock()
	if low {
		// §12.2.2: out of order.
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusInternalServerError, "CSeq out of order", nil))
		return
	}
	d.noteRemoteCSeq(req.CSeq().SeqNo)
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	d.end(&Event{Kind: EventBye})
}

// checkRestoredCSeq is the ordering check of a restored dialog (sipgo's
// own counts from the restored INVITE, which carries our number).
func (d *Dialog) checkRestoredCSeq(req *sip.Request) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.CSeq().SeqNo < d.remoteSeq {
		return sipgo.ErrDialogInvalidCseq
	}
	return nil
}

// TargetRefresh sends a target refresh with this stack's Contact (RFC
// 3261 §12.2: the far end's next requests go to it): an UPDATE without a
// body when the far end allows UPDATE (RFC 3311 §5.1), else a re-INVITE
// offering sdp. With a session timer running, it refreshes the session
// too (RFC 4028 §7.4).
func (d *Dialog) TargetRefresh(ctx context.Context, sdp []byte) error {
	var hdrs []sip.Header
	d.mu.Lock()
	if d.st != nil {
		hdrs = append(hdrs, sip.NewHeader("Session-Expires", strconv.Itoa(int(d.st.interval/time.Second))+";refresher="+d.refresherRole()),
			sip.NewHeader("Supported", "timer"))
	}
	d.mu.Unlock()
	c := d.stack.contact
	if d.restoredUser != "" {
		c.User = d.restoredUser
	}
	hdrs = append(hdrs, &sip.ContactHeader{Address: c})
	if d.peerAllows("UPDATE") || len(sdp) == 0 {
		err := d.sendUpdate(ctx, hdrs)
		var se *StatusError
		if len(sdp) == 0 || !errors.As(err, &se) || (se.Status != sip.StatusMethodNotAllowed && se.Status != sip.StatusNotImplemented) {
			return err
		}
		// Allowed but refused after all: a re-INVITE does the same.
	}
	_, err := d.reinviteOnce(ctx, sdp, hdrs)
	return err
}

// refresherRole names this side's role as refresher in a request we send
// (we are its UAC): "uac" when we refresh, else "uas" (d.mu held).
func (d *Dialog) refresherRole() string {
	if d.st.refresher {
		return "uac"
	}
	return "uas"
}

// restoredTx stands for the INVITE transaction of a restored dialog,
// which ended on the node that served it: it is over and answers
// nothing.
type restoredTx struct{}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (restoredTx) Terminate()                         {}
func (restoredTx) OnTerminate(sip.FnTxTerminate) bool { return true }
func (restoredTx) Done() <-chan struct{}              { return closedChan }
func (restoredTx) Err() error                         { return nil }
func (restoredTx) Respond(*sip.Response) error        { return errRestoredTx }
func (restoredTx) Acks() <-chan *sip.Request          { return nil }
func (restoredTx) OnCancel(sip.FnTxCancel) bool       { return true }

var errRestoredTx = errors.New("sip: the INVITE transaction of a restored dialog is over")
