// Package siptest provides a scriptable SIP peer for tests that stands in
// for a PBX on 127.0.0.1:0: a registrar with digest authentication, a UAS
// answering INVITEs as scripted, a UAC calling registered lines, MWI
// subscriptions and NOTIFYs, and a recorder of every message.
package siptest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// RegistrarConfig scripts a Registrar.
type RegistrarConfig struct {
	// Users maps user names to passwords.
	Users map[string]string
	// Realm of the challenges (default "pbx.test").
	Realm string
	// Algorithms offered, one WWW-Authenticate header each, in order
	// (default MD5). "" means no algorithm parameter (plain MD5).
	Algorithms []string
	// MinExpires answers 423 to shorter non-zero requests.
	MinExpires int
	// MaxExpires caps the granted expiry (0: grant what is asked).
	MaxExpires int
	// Fail, if set, may answer a REGISTER itself: return a status code
	// (and an optional Retry-After) or 0 to go on.
	Fail func(user string, n int) (code int, retryAfter int)
	// UAS scripts the answer to each INVITE (default: 200 at once).
	UAS func(in Incoming) Script
	// NoRecord turns the message recorder off (for load runs).
	NoRecord bool
	// Refer scripts the PBX's part in a transfer a line asks for with
	// REFER (default: 202, then NOTIFYs 100 and 200).
	Refer func(in ReferIn) ReferScript
	// Reinvite, if set, answers the n-th re-INVITE received (from 1): 0
	// accepts it as by default, -1 leaves it unanswered (a far end that
	// never answers), another value is the final status (491, 488...).
	Reinvite func(n int) int
}

// Binding is a registered contact.
type Binding struct {
	Contact string
	Expires time.Time
}

// Request is one REGISTER the registrar received.
type Request struct {
	At         time.Time
	User       string
	Expires    int
	Authorized bool
	Algorithm  string
	Source     string
}

// Registrar is a SIP registrar on 127.0.0.1:0.
type Registrar struct {
	cfg    RegistrarConfig
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	uas    *sipgo.DialogServerCache
	uac    *sipgo.DialogClientCache
	conn   net.PacketConn
	done   chan struct{}

	mu       sync.Mutex
	nonces   map[string]string // nonce -> algorithm it was issued for
	bindings map[string]Binding
	requests []Request
	counts   map[string]int

	finals         map[int]int
	reinvites      int // re-INVITEs received (Reinvite)
	messages       []Message
	subscribers    map[string]*subscriber
	subscribeCount map[string]int
	pracks         map[string]chan struct{} // "Call-ID RSeq" of reliable 18x waiting for their PRACK
	targets        map[string]sip.Uri       // by Call-ID: remote targets refreshed in calls
}

// NewRegistrar starts a registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if cfg.Realm == "" {
		cfg.Realm = "pbx.test"
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"MD5"}
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("siptest-registrar"))
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	r := &Registrar{cfg: cfg, ua: ua, srv: srv, done: make(chan struct{}),
		nonces: map[string]string{}, bindings: map[string]Binding{}, counts: map[string]int{},
		finals: map[int]int{}, subscribers: map[string]*subscriber{}, subscribeCount: map[string]int{},
		targets: map[string]sip.Uri{}}
	r.conn = recordingConn{PacketConn: conn, r: r}
	addr := conn.LocalAddr().(*net.UDPAddr)
	r.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(addr.IP.String()), sipgo.WithClientPort(addr.Port),
		sipgo.WithClientConnectionAddr(addr.String()))
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: addr.IP.String(), Port: addr.Port}}
	r.uas = sipgo.NewDialogServerCache(r.client, contact)
	r.uac = sipgo.NewDialogClientCache(r.client, contact)
	srv.OnRegister(r.onRegister)
	srv.OnInvite(r.onInvite)
	srv.OnAck(r.onAck)
	srv.OnBye(r.onBye)
	srv.OnSubscribe(r.onSubscribe)
	srv.OnRefer(r.onRefer)
	srv.OnRequest(sip.PRACK, r.onPrack)
	srv.OnInfo(r.simple)
	srv.OnUpdate(r.onUpdate)
	srv.OnNotify(r.simple)
	srv.OnOptions(r.simple)
	go func() {
		defer close(r.done)
		_ = srv.ServeUDP(r.conn)
	}()
	return r, nil
}

// Addr returns host:port of the registrar.
func (r *Registrar) Addr() string { return r.conn.LocalAddr().String() }

// Close stops the registrar.
func (r *Registrar) Close() error {
	_ = r.conn.Close()
	<-r.done
	return r.ua.Close()
}

// Binding returns the binding of a user, if any and not expired.
func (r *Registrar) Binding(user string) (Binding, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.bindings[user]
	if !ok || time.Now().After(b.Expires) {
		return Binding{}, false
	}
	return b, true
}

// Requests returns every REGISTER received, in order.
func (r *Registrar) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// RequestsFor returns the REGISTERs of one user.
func (r *Registrar) RequestsFor(user string) []Request {
	var out []Request
	for _, q := range r.Requests() {
		if q.User == user {
			out = append(out, q)
		}
	}
	return out
}

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (r *Registrar) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	user := req.To().Address.User
	expires := 3600
	if h := req.GetHeader("Expires"); h != nil {
		expires, _ = strconv.Atoi(strings.TrimSpace(h.Value()))
	}
	rec := Request{At: time.Now(), User: user, Expires: expires, Source: req.Source()}
	respond := func(res *sip.Response) {
		r.mu.Lock()
		r.requests = append(r.requests, rec)
		r.mu.Unlock()
		_ = tx.Respond(res)
	}
	r.mu.Lock()
	r.counts[user]++
	n := r.counts[user]
	r.mu.Unlock()
	if r.cfg.Fail != nil {
		if code, retry := r.cfg.Fail(user, n); code != 0 {
			res := sip.NewResponseFromRequest(req, code, "Scripted failure", nil)
			if retry > 0 {
				res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(retry)))
			}
			respond(res)
			return
		}
	}
	if !r.authorized(req, user, &rec) {
		res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
		r.challenge(res)
		respond(res)
		return
	}
	if expires > 0 && r.cfg.MinExpires > 0 && expires < r.cfg.MinExpires {
		res := sip.NewResponseFromRequest(req, sip.StatusIntervalToBrief, "Interval Too Brief", nil)
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(r.cfg.MinExpires)))
		respond(res)
		return
	}
	granted := expires
	if r.cfg.MaxExpires > 0 && granted > r.cfg.MaxExpires {
		granted = r.cfg.MaxExpires
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	r.mu.Lock()
	if c := req.Contact(); c != nil {
		if granted == 0 {
			delete(r.bindings, user)
		} else {
			r.bindings[user] = Binding{Contact: c.Address.String(), Expires: time.Now().Add(time.Duration(granted) * time.Second)}
			cc := c.Clone()
			cc.Params = sip.NewParams()
			cc.Params.Add("expires", strconv.Itoa(granted))
			res.AppendHeader(cc)
		}
	}
	r.mu.Unlock()
	respond(res)
}

// challenge adds one WWW-Authenticate per configured algorithm.
func (r *Registrar) challenge(res *sip.Response) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, alg := range r.cfg.Algorithms {
		nonce := token()
		r.nonces[nonce] = alg
		chal := digest.Challenge{Realm: r.cfg.Realm, Nonce: nonce, Algorithm: alg, QOP: []string{"auth"}}
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", chal.String()))
	}
}

// authorized checks the request's digest credentials.
func (r *Registrar) authorized(req *sip.Request, user string, rec *Request) bool {
	h := req.GetHeader("Authorization")
	if h == nil {
		return false
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil {
		return false
	}
	r.mu.Lock()
	alg, known := r.nonces[cred.Nonce]
	pw, hasUser := r.cfg.Users[cred.Username]
	r.mu.Unlock()
	if !known || !hasUser || cred.Username != user && r.cfg.Users[user] == "" {
		return false
	}
	chal := &digest.Challenge{Realm: r.cfg.Realm, Nonce: cred.Nonce, Algorithm: alg, QOP: []string{"auth"}}
	want, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: cred.URI, Username: cred.Username,
		Password: pw, Count: cred.Nc, Cnonce: cred.Cnonce})
	if err != nil || want.Response != cred.Response {
		return false
	}
	rec.Authorized = true
	rec.Algorithm = alg
	if rec.Algorithm == "" {
		rec.Algorithm = "MD5"
	}
	return true
}
