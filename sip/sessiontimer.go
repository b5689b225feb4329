package sip

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// Session timers (RFC 4028): the side named refresher sends a re-INVITE
// or UPDATE every half interval; the other side hangs up when no refresh
// came by the end of the interval less min(32 s, interval/3) (§10).

// headers is what requests and responses share for reading headers.
type headers interface {
	GetHeader(name string) sip.Header
	GetHeaders(name string) []sip.Header
}

type sessionTimer struct {
	interval  time.Duration
	refresher bool // this side refreshes
	timer     *time.Timer
}

// parseSessionExpires reads "Session-Expires: 1800;refresher=uac" (or its
// compact form x).
func parseSessionExpires(m headers) (time.Duration, string, bool) {
	h := m.GetHeader("session-expires")
	if h == nil {
		h = m.GetHeader("x")
	}
	if h == nil {
		return 0, "", false
	}
	parts := strings.Split(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || n <= 0 {
		return 0, "", false
	}
	refresher := ""
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "refresher") {
			refresher = strings.ToLower(strings.TrimSpace(v))
		}
	}
	return time.Duration(n) * time.Second, refresher, true
}

// hasOptionTag reports whether a Supported/Require header lists tag.
func hasOptionTag(m headers, header, tag string) bool {
	// sipgo lowers a header name it looks up unless it is lower case
	// already (one allocation per lookup otherwise).
	switch header {
	case "Supported":
		header = "supported"
	case "Require":
		header = "require"
	case "Allow":
		header = "allow"
	}
	for _, h := range m.GetHeaders(header) {
		for rest, more := h.Value(), true; more; {
			var t string
			t, rest, more = strings.Cut(rest, ",")
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
}

// tooBrief answers 422 (RFC 4028 §8.1) when a request asks for a session
// interval below our Min-SE; it reports whether it did.
func (s *Stack) tooBrief(req *sip.Request, tx sip.ServerTransaction) bool {
	se, _, ok := parseSessionExpires(req)
	if !ok || se >= s.cfg.MinSE {
		return false
	}
	res := sip.NewResponseFromRequest(req, 422, "Session Interval Too Small", nil)
	res.AppendHeader(sip.NewHeader("Min-SE", strconv.Itoa(int(s.cfg.MinSE/time.Second))))
	_ = tx.Respond(res)
	return true
}

// uasTimer says what a request's session timer asks of us as its UAS
// (RFC 4028 §9): the interval and whether we are the refresher.
func uasTimer(req *sip.Request) (time.Duration, bool, bool) {
	se, refresher, ok := parseSessionExpires(req)
	if !ok {
		return 0, false, false
	}
	if refresher == "" {
		// The UAS picks: the UAC when it supports timers, else itself.
		if hasOptionTag(req, "Supported", "timer") || hasOptionTag(req, "k", "timer") {
			refresher = "uac"
		} else {
			refresher = "uas"
		}
	}
	return se, refresher == "uas", true
}

// sessionTimerHeaders adds Session-Expires (and Require: timer when the
// far end refreshes) to our 2xx to req.
func (d *Dialog) sessionTimerHeaders(req *sip.Request, res *sip.Response) {
	se, weRefresh, ok := uasTimer(req)
	if !ok {
		return
	}
	role := "uac"
	if weRefresh {
		role = "uas"
	}
	res.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(se/time.Second))+";refresher="+role))
	if !weRefresh {
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
}

// sessionRefreshed (re)starts the session timer after a successful
// offer/answer or refresh: m is the far end's request (we were UAS) or its
// 2xx (we were UAC).
func (d *Dialog) sessionRefreshed(m sip.Message) {
	defer d.changed() // runs after d.mu is released below
	var se time.Duration
	var weRefresh, ok bool
	switch m := m.(type) {
	case *sip.Request:
		se, weRefresh, ok = uasTimer(m)
	case *sip.Response:
		var refresher string
		se, refresher, ok = parseSessionExpires(m)
		weRefresh = refresher != "uas"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return
	}
	if !ok {
		if d.st == nil {
			return
		}
		se, weRefresh = d.st.interval, d.st.refresher
	}
	if d.st != nil {
		d.st.timer.Stop()
	}
	st := &sessionTimer{interval: se, refresher: weRefresh}
	if weRefresh {
		st.timer = time.AfterFunc(se/2, d.refreshSession)
	} else {
		st.timer = time.AfterFunc(se-min(32*time.Second, se/3), d.sessionExpired)
	}
	d.st = st
}

// SessionInterval returns the negotiated session interval and whether
// this side refreshes; zero when no session timer runs.
func (d *Dialog) SessionInterval() (time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return 0, false
	}
	return d.st.interval, d.st.refresher
}

// peerAllows reports whether the far end listed method in its Allow.
func (d *Dialog) peerAllows(method string) bool {
	var m headers = d.invite
	if !d.uas() {
		if d.client.InviteResponse == nil {
			return false
		}
		m = d.client.InviteResponse
	}
	return hasOptionTag(m, "Allow", method)
}

// refreshSession sends the refresh: an UPDATE without a body when the far
// end allows it (RFC 4028 §7.4 prefers it), else a re-INVITE repeating our
// last SDP.
func (d *Dialog) refreshSession() {
	d.mu.Lock()
	if d.ended || d.st == nil {
		d.mu.Unlock()
		return
	}
	se, local := d.st.interval, d.local
	d.mu.Unlock()
	log := d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID})
	hdrs := func() []sip.Header {
		return []sip.Header{
			sip.NewHeader("Session-Expires", strconv.Itoa(int(se/time.Second))+";refresher=uac"),
			sip.NewHeader("Supported", "timer"),
		}
	}
	ctx, cancel := context.WithTimeout(d.ctx, 32*time.Second)
	defer cancel()
	var err error
	if d.peerAllows("UPDATE") {
		err = d.sendUpdate(ctx, hdrs())
	} else {
		_, err = d.reinviteOnce(ctx, local, hdrs())
	}
	switch {
	case err == nil:
		return
	case errors.Is(err, ErrOfferPending):
		// An exchange is under way; it refreshes the session when it
		// completes. Check again shortly in case it fails.
		d.mu.Lock()
		if d.st != nil && !d.ended {
			d.st.timer = time.AfterFunc(2*time.Second, d.refreshSession)
		}
		d.mu.Unlock()
		return
	case errors.Is(err, ErrDialogEnded):
		return
	}
	log.WithError(err).Warn("session refresh failed; hanging up")
	d.hangup(&Event{Kind: EventBye, Reason: "session refresh failed"})
}

// Update sends an UPDATE with a new offer (RFC 3311), e.g. before the
// call is answered, and returns the far end's answer.
func (d *Dialog) Update(ctx context.Context, sdp []byte) ([]byte, error) {
	return d.update(ctx, sdp, nil)
}

// sendUpdate sends an UPDATE without an offer (a session refresh).
func (d *Dialog) sendUpdate(ctx context.Context, hdrs []sip.Header) error {
	_, err := d.update(ctx, nil, hdrs)
	return err
}

func (d *Dialog) update(ctx context.Context, sdp []byte, hdrs []sip.Header) ([]byte, error) {
	return d.sendOffer(ctx, sip.UPDATE, sdp, hdrs)
}

// sessionExpired hangs up a session the far end stopped refreshing.
func (d *Dialog) sessionExpired() {
	d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID}).Info("session timer expired without refresh; hanging up")
	d.hangup(&Event{Kind: EventBye, Reason: "session expired"})
}

// hangup ends the dialog with last (nil: no event) and sends BYE. The
// event goes first: the BYE ends sipgo's session, which the dialog's
// watcher would otherwise report as the far end's hang-up.
func (d *Dialog) hangup(last *Event) {
	d.end(last)
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	if err := d.writeBye(ctx, ""); err != nil {
		d.stack.log.WithFields(logrus.Fields{"sip_call_id": d.CallID}).WithError(err).Debug("BYE failed")
	}
}
