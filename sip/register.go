package sip

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/sirupsen/logrus"
)

// Account is a SIP identity that registers: one per MGCP line.
type Account struct {
	ID          string        // the line id; key for Status and Remove
	User        string        // user part of the address of record and Contact
	AuthUser    string        // digest user name (default User)
	Password    string        // digest password
	Domain      string        // host part of the address of record (default: registrar host)
	Registrar   string        // host:port REGISTER goes to
	Transport   string        // udp (default), tcp, tls
	Expiry      time.Duration // Expires asked for (default 300s)
	DisplayName string
}

// RegState is where a registration stands.
type RegState int

// Registration states.
const (
	RegPending      RegState = iota // added, first attempt not made yet
	RegRegistering                  // a REGISTER is in flight
	RegRegistered                   // bound at the registrar until Status.Expires
	RegRetrying                     // the last attempt failed; another comes at NextAttempt
	RegFailed                       // credentials refused: no more attempts until the account changes
	RegUnregistered                 // removed and unbound
)

func (s RegState) String() string {
	return [...]string{"pending", "registering", "registered", "retrying", "failed", "unregistered"}[s]
}

// RegStatus is a snapshot of one registration.
type RegStatus struct {
	State       RegState
	Reason      string // why the last attempt failed, "" when registered
	Code        int    // last SIP status code, 0 when there was no answer
	Expires     time.Time
	NextAttempt time.Time
	Failures    int    // consecutive failed attempts
	Algorithm   string // digest algorithm of the last authentication
	Refreshes   int    // successful registrations since Add
}

// RegistrationConfig tunes the registration scheduler.
type RegistrationConfig struct {
	// Rate is the ceiling of REGISTER exchanges per second (default
	// Config.RegisterRate). The pace adapts below it (pace.go): it starts
	// at StartRate (default 50/s, or Rate when lower), grows while the
	// registrar answers and halves on 503, 500, 408 or no answer, never
	// below MinRate (default 1/s, or Rate when lower).
	Rate               float64
	StartRate, MinRate float64
	// MaxInFlight bounds concurrent exchanges (default 256).
	MaxInFlight int
	// RetryMin and RetryMax bound the exponential backoff after failures
	// (default 5s and 10m); each delay gets ±20% jitter.
	RetryMin, RetryMax time.Duration
	// Timeout bounds one exchange, challenges included (default 32s).
	Timeout time.Duration
	// OnChange, if set, is called (on its own goroutine) after each state
	// change.
	OnChange func(id string, st RegStatus)
}

// Registrations keeps every account registered: first registration paced
// by a rate limit, refresh before expiry, digest authentication, backoff
// after failures, unregistration on removal and on shutdown.
type Registrations struct {
	stack *Stack
	cfg   RegistrationConfig
	log   *logrus.Entry
	pace  *pacer
	sem   chan struct{}

	mu      sync.Mutex
	entries map[string]*regEntry
	queue   regQueue
	wake    chan struct{}
	wg      sync.WaitGroup

	rngMu sync.Mutex
	rng   *mrand.Rand
}

type regEntry struct {
	acct    Account
	status  RegStatus
	callID  string
	fromTag string
	cseq    uint32
	expiry  time.Duration // asked for; raised by 423
	due     time.Time
	index   int // in the queue, -1 when not queued
	busy    bool
	removed bool
	bound   bool // the registrar holds a binding for us
	gen     int  // bumped by Add so a stale attempt does not overwrite a new account
}

// NewRegistrations returns a scheduler on the stack. Run drives it.
func (s *Stack) NewRegistrations(cfg RegistrationConfig) *Registrations {
	if cfg.Rate == 0 {
		cfg.Rate = s.cfg.RegisterRate
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = 5 * time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 32 * time.Second
	}
	if cfg.StartRate <= 0 {
		cfg.StartRate = 50
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 1
	}
	cfg.MinRate = min(cfg.MinRate, cfg.Rate)
	return &Registrations{
		stack: s, cfg: cfg, log: s.log.WithField("component", "registrations"),
		pace:    newPacer(cfg.StartRate, cfg.MinRate, cfg.Rate),
		sem:     make(chan struct{}, cfg.MaxInFlight),
		entries: map[string]*regEntry{}, wake: make(chan struct{}, 1),
		rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7)),
	}
}

func randomToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Add registers an account, or replaces one with the same ID (a failed
// registration is tried again with the new details).
func (r *Registrations) Add(a Account) {
	if a.AuthUser == "" {
		a.AuthUser = a.User
	}
	if a.Transport == "" {
		a.Transport = "udp"
	}
	if a.Expiry == 0 {
		a.Expiry = 300 * time.Second
	}
	r.mu.Lock()
	e, ok := r.entries[a.ID]
	if !ok {
		e = &regEntry{callID: randomToken() + "@mgsip", fromTag: randomToken(), index: -1}
		r.entries[a.ID] = e
	}
	e.acct, e.expiry, e.removed = a, a.Expiry, false
	e.gen++
	e.status = RegStatus{State: RegPending}
	r.schedule(e, time.Now())
	r.mu.Unlock()
	r.notify(a.ID, RegStatus{State: RegPending})
}

// Remove unregisters an account and forgets it once unbound.
func (r *Registrations) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return
	}
	e.removed = true
	e.gen++
	r.schedule(e, time.Now())
}

// Status returns the state of one account.
func (r *Registrations) Status(id string) (RegStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return RegStatus{}, false
	}
	return e.status, true
}

// Counts returns how many accounts are in each state.
func (r *Registrations) Counts() map[RegState]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[RegState]int{}
	for _, e := range r.entries {
		out[e.status.State]++
	}
	return out
}

// schedule queues e at t; must hold r.mu.
func (r *Registrations) schedule(e *regEntry, t time.Time) {
	e.due = t
	if !e.busy {
		if e.index >= 0 {
			heap.Fix(&r.queue, e.index)
		} else {
			heap.Push(&r.queue, e)
		}
	}
	e.status.NextAttempt = t
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Registrations) notify(id string, st RegStatus) {
	if r.cfg.OnChange != nil {
		go r.cfg.OnChange(id, st)
	}
}

// Run drives the registrations until ctx ends, then unregisters every
// bound account (for at most 5 seconds) and returns.
func (r *Registrations) Run(ctx context.Context) error {
	select {
	case <-r.stack.Ready():
	case <-ctx.Done():
		return nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		var next *regEntry
		wait := time.Hour
		if len(r.queue) > 0 {
			top := r.queue[0]
			if d := time.Until(top.due); d <= 0 {
				next = heap.Pop(&r.queue).(*regEntry)
				next.busy = true
			} else {
				wait = d
			}
		}
		r.mu.Unlock()
		if next == nil {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return r.shutdown()
			case <-r.wake:
			case <-timer.C:
			}
			continue
		}
		if err := r.pace.limiter.Wait(ctx); err != nil {
			r.release(next)
			return r.shutdown()
		}
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			r.release(next)
			return r.shutdown()
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.sem }()
			r.attempt(ctx, next)
		}()
	}
}

// release puts an entry taken for an attempt back; must not hold r.mu.
func (r *Registrations) release(e *regEntry) {
	r.mu.Lock()
	e.busy = false
	r.schedule(e, e.due)
	r.mu.Unlock()
}

func (r *Registrations) shutdown() error {
	r.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.mu.Lock()
	var bound []*regEntry
	for _, e := range r.entries {
		if e.bound {
			bound = append(bound, e)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.MaxInFlight)
	for _, e := range bound {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if res, err := r.exchange(ctx, e, 0); err == nil && res.IsSuccess() {
				r.mu.Lock()
				e.bound = false
				e.status = RegStatus{State: RegUnregistered}
				r.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return nil
}

// attempt runs one registration (or unregistration) and schedules the next.
func (r *Registrations) attempt(ctx context.Context, e *regEntry) {
	r.mu.Lock()
	gen, removed, bound := e.gen, e.removed, e.bound
	expiry := e.expiry
	if !bound {
		e.status.State = RegRegistering
	}
	r.mu.Unlock()
	if removed && !bound {
		r.mu.Lock()
		if e.gen == gen {
			delete(r.entries, e.acct.ID)
		}
		e.busy = false
		r.mu.Unlock()
		return
	}
	if removed {
		expiry = 0
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	started := time.Now()
	res, err := r.exchange(actx, e, expiry)
	cancel()
	switch {
	case ctx.Err() != nil: // shutting down: says nothing of the registrar
	case err != nil || res.StatusCode == sip.StatusServiceUnavailable || res.StatusCode == sip.StatusInternalServerError ||
		res.StatusCode == sip.StatusRequestTimeout:
		r.pace.overloaded(started)
	default:
		r.pace.answered()
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	e.busy = false
	if e.gen != gen {
		// The account changed (or was removed) while the request was
		// out. A REGISTER answered 2xx made a binding (RFC 3261 §10.3):
		// remember it, so that a removal sends the Expires: 0 request
		// that takes it away (§10.2.2) instead of forgetting a binding
		// nobody refreshes. One that got no final answer may have made
		// one too (a retransmission the registrar took late): a removal
		// unregisters it as well; a registrar without it answers 200.
		if expiry > 0 && ctx.Err() == nil && (err != nil || res.IsSuccess()) {
			e.bound = e.bound || err == nil || e.removed
		}
		r.schedule(e, time.Now())
		return
	}
	id := e.acct.ID
	log := r.log.WithFields(logrus.Fields{"line": id, "user": e.acct.User, "registrar": e.acct.Registrar})
	st := &e.status
	now := time.Now()
	switch {
	case removed && (err == nil && res.IsSuccess() || st.Failures >= 2):
		// Unbound (or tried three times): forget the account.
		delete(r.entries, id)
		e.bound = false
		st.State = RegUnregistered
		r.notify(id, *st)
		return
	case err != nil:
		st.Code, st.Reason = 0, err.Error()
	case res.IsSuccess():
		granted := grantedExpiry(res, r.stack.contact, expiry)
		e.bound = true
		*st = RegStatus{State: RegRegistered, Code: res.StatusCode, Expires: now.Add(granted), Algorithm: st.Algorithm, Refreshes: st.Refreshes}
		next := r.jitter(refreshAfter(granted), 0.05)
		if st.Refreshes == 0 && granted > 2*time.Minute {
			// The first refresh lands anywhere in the second half of
			// the refresh time: lines registered in one burst (a start,
			// a registrar back) refresh spread over the interval, not in
			// a burst of their own; later refreshes keep that spread.
			next = refreshAfter(granted)/2 + r.jitter(refreshAfter(granted)/4, 1)
		}
		st.Refreshes++
		r.schedule(e, now.Add(next))
		r.notify(id, *st)
		return
	case res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired:
		// Challenged again after answering with our credentials: they are
		// wrong. Stop, say so once, and wait for a new account.
		*st = RegStatus{State: RegFailed, Code: res.StatusCode, Reason: "credentials refused", Algorithm: st.Algorithm}
		log.WithField("code", res.StatusCode).Error("registration failed: credentials refused; not retrying until the account changes")
		r.notify(id, *st)
		return
	case res.StatusCode == sip.StatusIntervalToBrief:
		// 423: ask again with the registrar's minimum (RFC 3261 §10.2.8).
		if h := res.GetHeader("min-expires"); h != nil {
			if n, perr := strconv.Atoi(strings.TrimSpace(h.Value())); perr == nil && n > 0 && time.Duration(n)*time.Second > e.expiry {
				e.expiry = time.Duration(n) * time.Second
				st.Code, st.Reason = res.StatusCode, "interval too brief; asking for "+e.expiry.String()
				r.schedule(e, now)
				return
			}
		}
		st.Code, st.Reason = res.StatusCode, "423 without a usable Min-Expires"
	default:
		st.Code, st.Reason = res.StatusCode, res.Reason
	}
	// Failure: back off exponentially, or as the registrar asked. A
	// binding that has not expired yet still counts as registered.
	st.Failures++
	if !e.bound || now.After(st.Expires) {
		st.State = RegRetrying
		e.bound = false
	}
	delay := r.cfg.RetryMin << min(st.Failures-1, 20)
	if delay > r.cfg.RetryMax || delay <= 0 {
		delay = r.cfg.RetryMax
	}
	delay = r.jitter(delay, 0.2)
	if res != nil {
		if h := res.GetHeader("retry-after"); h != nil {
			if n, perr := strconv.Atoi(strings.Fields(h.Value() + " x")[0]); perr == nil && n > 0 {
				delay = time.Duration(n) * time.Second
			}
		}
	}
	if st.Failures == 1 {
		log.WithFields(logrus.Fields{"code": st.Code, "reason": st.Reason, "retry_in": delay.Round(time.Millisecond)}).Warn("registration failed; retrying with backoff")
	}
	r.schedule(e, now.Add(delay))
	r.notify(id, *st)
}

// jitter spreads d by ±frac so that many lines do not act in lock step.
func (r *Registrations) jitter(d time.Duration, frac float64) time.Duration {
	r.rngMu.Lock()
	f := 1 + frac*(2*r.rng.Float64()-1)
	r.rngMu.Unlock()
	return time.Duration(float64(d) * f)
}

// refreshAfter says when to refresh a binding granted for d: half-way for
// short bindings, a minute before expiry for long ones.
func refreshAfter(d time.Duration) time.Duration {
	if d <= 2*time.Minute {
		return d / 2
	}
	return d - time.Minute
}

// grantedExpiry reads the expiry the registrar granted to our contact
// (its ;expires parameter, else the Expires header, else what we asked).
func grantedExpiry(res *sip.Response, contact sip.Uri, asked time.Duration) time.Duration {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || !strings.EqualFold(c.Address.Host, contact.Host) || (c.Address.Port != 0 && c.Address.Port != contact.Port) {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := res.GetHeader("expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return asked
}

// ErrNoAnswer is returned when a registrar never answered.
var ErrNoAnswer = errors.New("sip: no final response")

// exchange sends REGISTER with the given expiry and answers one digest
// challenge (a second one only when the first nonce was stale).
func (r *Registrations) exchange(ctx context.Context, e *regEntry, expiry time.Duration) (*sip.Response, error) {
	r.mu.Lock()
	acct := e.acct
	r.mu.Unlock()
	req := r.newRegister(e, acct, expiry)
	return r.stack.doAuth(ctx, req, acct, func(algo string) uint32 {
		r.mu.Lock()
		defer r.mu.Unlock()
		e.status.Algorithm = algo
		e.cseq++
		return e.cseq
	})
}

// doAuth runs an out-of-dialog request, answering a 401/407 digest
// challenge with acct's credentials, and a second one only when the first
// credentials were stale. retry is told the algorithm used and gives the
// CSeq of the repeated request.
func (s *Stack) doAuth(ctx context.Context, req *sip.Request, acct Account, retry func(algo string) uint32) (*sip.Response, error) {
	res, err := s.do(ctx, req)
	for tries := 0; err == nil && tries < 2 && (res.StatusCode == 401 || res.StatusCode == 407); tries++ {
		if tries == 1 && !staleChallenge(res) {
			break
		}
		algo, aerr := authorize(req, res, acct)
		if aerr != nil {
			return res, aerr
		}
		req.CSeq().SeqNo = retry(algo)
		req.RemoveHeader("Via")
		res, err = s.do(ctx, req, sipgo.ClientRequestAddVia)
	}
	return res, err
}

func staleChallenge(res *sip.Response) bool {
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		for _, h := range res.GetHeaders(name) {
			if c, err := digest.ParseChallenge(h.Value()); err == nil && c.Stale {
				return true
			}
		}
	}
	return false
}

// authorize adds credentials for the strongest challenge offered: SHA-256
// before MD5 when a registrar offers both (RFC 8760 §2.4).
func authorize(req *sip.Request, res *sip.Response, acct Account) (string, error) {
	hdr, auth := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		hdr, auth = "Proxy-Authenticate", "Proxy-Authorization"
	}
	var best *digest.Challenge
	rank := func(c *digest.Challenge) int {
		switch strings.ToUpper(c.Algorithm) {
		case "SHA-512-256", "SHA-512":
			return 4
		case "SHA-256":
			return 3
		case "", "MD5":
			return 1
		}
		return 0
	}
	for _, h := range res.GetHeaders(hdr) {
		c, err := digest.ParseChallenge(h.Value())
		if err != nil || !digest.CanDigest(c) {
			continue
		}
		c.Algorithm = strings.ToUpper(c.Algorithm)
		if best == nil || rank(c) > rank(best) {
			best = c
		}
	}
	if best == nil {
		return "", fmt.Errorf("sip: %d without a digest challenge we support", res.StatusCode)
	}
	cred, err := digest.Digest(best, digest.Options{Method: string(req.Method), URI: req.Recipient.Addr(), Username: acct.AuthUser, Password: acct.Password, Count: 1})
	if err != nil {
		return "", err
	}
	req.RemoveHeader(auth)
	req.AppendHeader(sip.NewHeader(auth, cred.String()))
	algo := best.Algorithm
	if algo == "" {
		algo = "MD5"
	}
	return algo, nil
}

func (r *Registrations) newRegister(e *regEntry, acct Account, expiry time.Duration) *sip.Request {
	host, portStr, err := net.SplitHostPort(acct.Registrar)
	if err != nil {
		host, portStr = acct.Registrar, ""
	}
	port, _ := strconv.Atoi(portStr)
	domain := acct.Domain
	if domain == "" {
		domain = host
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: host, Port: port})
	aor := sip.Uri{Scheme: "sip", User: acct.User, Host: domain}
	from := &sip.FromHeader{DisplayName: acct.DisplayName, Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", e.fromTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	callID := sip.CallIDHeader(e.callID)
	req.AppendHeader(&callID)
	r.mu.Lock()
	e.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: e.cseq, MethodName: sip.REGISTER})
	r.mu.Unlock()
	contact := r.stack.contact
	contact.User = acct.User
	ch := &sip.ContactHeader{Address: contact, Params: sip.NewParams()}
	if t := strings.ToLower(acct.Transport); t != "udp" {
		ch.Address.UriParams = sip.NewParams()
		ch.Address.UriParams.Add("transport", t)
	}
	req.AppendHeader(ch)
	exp := sip.ExpiresHeader(uint32(expiry / time.Second))
	req.AppendHeader(&exp)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", r.stack.cfg.UserAgent))
	req.SetTransport(strings.ToUpper(acct.Transport))
	return req
}

// do runs one client transaction outside any dialog and returns its
// final response.
func (s *Stack) do(ctx context.Context, req *sip.Request, opts ...sipgo.ClientRequestOption) (*sip.Response, error) {
	// Requests leave from the listener's socket, which sipgo knows only
	// once Serve runs; sent before, they would go out of a socket of
	// sipgo's own (another source port, never closed).
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-s.closed:
		// sipgo would open a socket of its own for it, and never close it.
		return nil, ErrStackClosed
	default:
	}
	tx, err := s.client.TransactionRequest(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	return finalResponse(ctx, tx)
}

// finalResponse waits for the final response of a client transaction.
func finalResponse(ctx context.Context, tx sip.ClientTransaction) (*sip.Response, error) {
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrNoAnswer, err)
			}
			return nil, ErrNoAnswer
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrNoAnswer, ctx.Err())
		}
	}
}

// regQueue is a min-heap of entries by due time.
type regQueue []*regEntry

func (q regQueue) Len() int           { return len(q) }
func (q regQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q regQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *regQueue) Push(x any) {
	e := x.(*regEntry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *regQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}

// Pacing reports the adaptive pace of REGISTER exchanges (for metrics).
func (r *Registrations) Pacing() PacingStats { return r.pace.stats() }
