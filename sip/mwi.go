package sip

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// MWI is a message-waiting indication (RFC 3842) for one account.
type MWI struct {
	User    string // the account it is for: Request-URI user of the NOTIFY
	Waiting bool   // Messages-Waiting: yes
	Account string // Message-Account, when given

	// Voice-Message counts: new/old (urgent new/urgent old).
	New, Old, UrgentNew, UrgentOld int
}

// ParseMessageSummary reads an application/simple-message-summary body
// (RFC 3842 §5.2). Messages-Waiting is the one mandatory line; unknown
// lines and other message classes are ignored.
func ParseMessageSummary(body []byte) (MWI, error) {
	var m MWI
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "messages-waiting":
			switch strings.ToLower(value) {
			case "yes":
				m.Waiting = true
			case "no":
			default:
				return m, fmt.Errorf("sip: Messages-Waiting %q is neither yes nor no", value)
			}
			seen = true
		case "message-account":
			m.Account = value
		case "voice-message":
			var err error
			if m.New, m.Old, m.UrgentNew, m.UrgentOld, err = parseMsgCounts(value); err != nil {
				return m, err
			}
		}
	}
	if !seen {
		return m, fmt.Errorf("sip: message summary without Messages-Waiting")
	}
	return m, nil
}

// parseMsgCounts reads "new/old" with an optional "(urgentnew/urgentold)".
func parseMsgCounts(v string) (n, o, un, uo int, err error) {
	main, urgent, _ := strings.Cut(v, "(")
	pair := func(s string) (int, int, error) {
		a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
		if !ok {
			return 0, 0, fmt.Errorf("sip: message counts %q are not new/old", v)
		}
		x, err1 := strconv.Atoi(strings.TrimSpace(a))
		y, err2 := strconv.Atoi(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || x < 0 || y < 0 {
			return 0, 0, fmt.Errorf("sip: message counts %q are not numbers", v)
		}
		return x, y, nil
	}
	if n, o, err = pair(main); err != nil {
		return
	}
	if urgent != "" {
		un, uo, err = pair(strings.TrimSuffix(strings.TrimSpace(urgent), ")"))
	}
	return
}

type mwiBox struct{ f func(MWI) }

// SetMWIHandler sets the function called for every message-summary
// NOTIFY, solicited or not (many PBXes send them unsolicited).
func (s *Stack) SetMWIHandler(f func(MWI)) { s.mwi.Store(&mwiBox{f}) }

func (s *Stack) onMWI(req *sip.Request, tx sip.ServerTransaction) {
	m, err := ParseMessageSummary(req.Body())
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad message summary", nil))
		return
	}
	m.User = req.Recipient.User
	if m.User == "" && req.To() != nil {
		m.User = req.To().Address.User
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	if b := s.mwi.Load(); b != nil && b.f != nil {
		b.f(m)
	}
}

// Subscription describes a SUBSCRIBE mgsip keeps alive for a line, e.g.
// to message-summary when the PBX sends MWI only to subscribers.
type Subscription struct {
	Account Account       // the line's identity and credentials
	Peer    string        // host:port; default Account.Registrar
	Event   string        // default message-summary
	Accept  string        // default application/simple-message-summary
	Expires time.Duration // asked for; default 3600 s
}

// Subscribe keeps a subscription alive until ctx ends, then removes it
// (Expires: 0). Digest challenges are answered; failures are retried with
// backoff, except refusals that will not change (403, 404, 405, 489,
// 501), which end it with a *StatusError.
func (s *Stack) Subscribe(ctx context.Context, sub Subscription) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	if sub.Peer == "" {
		sub.Peer = sub.Account.Registrar
	}
	if sub.Event == "" {
		sub.Event = "message-summary"
	}
	if sub.Accept == "" {
		sub.Accept = "application/simple-message-summary"
	}
	if sub.Expires == 0 {
		sub.Expires = time.Hour
	}
	if sub.Account.AuthUser == "" {
		sub.Account.AuthUser = sub.Account.User
	}
	host, port, err := splitHostPort(sub.Peer)
	if err != nil {
		return err
	}
	domain := sub.Account.Domain
	if domain == "" {
		domain = host
	}
	log := s.log.WithFields(logrus.Fields{"line": sub.Account.ID, "event": sub.Event})
	callID, fromTag, toTag := randomToken(), randomToken(), ""
	var cseq uint32
	build := func(expires time.Duration) *sip.Request {
		aor := sip.Uri{Scheme: "sip", User: sub.Account.User, Host: domain}
		req := sip.NewRequest(sip.SUBSCRIBE, aor)
		req.Recipient.Port = port
		from := &sip.FromHeader{DisplayName: sub.Account.DisplayName, Address: aor, Params: sip.NewParams()}
		from.Params.Add("tag", fromTag)
		req.AppendHeader(from)
		to := &sip.ToHeader{Address: aor, Params: sip.NewParams()}
		if toTag != "" {
			to.Params.Add("tag", toTag)
		}
		req.AppendHeader(to)
		cid := sip.CallIDHeader(callID)
		req.AppendHeader(&cid)
		cseq++
		req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.SUBSCRIBE})
		contact := s.contact
		contact.User = sub.Account.User
		req.AppendHeader(&sip.ContactHeader{Address: contact})
		req.AppendHeader(sip.NewHeader("Event", sub.Event))
		req.AppendHeader(sip.NewHeader("Accept", sub.Accept))
		exp := sip.ExpiresHeader(uint32(expires / time.Second))
		req.AppendHeader(&exp)
		req.AppendHeader(sip.NewHeader("User-Agent", s.cfg.UserAgent))
		req.SetDestination(sub.Peer)
		if sub.Account.Transport != "" {
			req.SetTransport(strings.ToUpper(sub.Account.Transport))
		}
		return req
	}
	exchange := func(ctx context.Context, expires time.Duration) (*sip.Response, error) {
		return s.doAuth(ctx, build(expires), sub.Account, func(string) uint32 { cseq++; return cseq })
	}
	backoff := 5 * time.Second
	for {
		var next time.Duration
		res, err := exchange(ctx, sub.Expires)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			log.WithError(err).Warn("SUBSCRIBE failed")
			next, backoff = backoff, min(2*backoff, 5*time.Minute)
		case res.IsSuccess():
			toTag, _ = res.To().Params.Get("tag")
			granted := sub.Expires
			if h := res.GetHeader("expires"); h != nil {
				if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
					granted = time.Duration(n) * time.Second
				}
			}
			next, backoff = refreshAfter(granted), 5*time.Second
		default:
			switch res.StatusCode {
			case 403, 404, 405, 489, 501:
				return &StatusError{Method: "SUBSCRIBE", Status: res.StatusCode, Reason: res.Reason}
			}
			log.WithField("status", res.StatusCode).Warn("SUBSCRIBE refused")
			toTag = "" // start a new subscription next time
			next, backoff = backoff, min(2*backoff, 5*time.Minute)
		}
		select {
		case <-ctx.Done():
			if toTag != "" {
				uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = exchange(uctx, 0)
				cancel()
			}
			return nil
		case <-time.After(next):
		}
	}
}
