package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// Stack is mgsip's SIP endpoint: one sipgo user agent with a server and a
// client sharing the configured listeners, so requests leave from the
// advertised address and answers come back to it.
type Stack struct {
	cfg    Config
	log    *logrus.Entry
	ua     *sipgo.UserAgent
	server *sipgo.Server
	client *sipgo.Client

	udp       []net.PacketConn
	streams   []streamListener
	contact   sip.Uri  // host:port for Contact and Via (advertised or bound)
	transport string   // transport of the first listener
	laddr     sip.Addr // the first listener's bound address, when it is UDP (fromListener)

	ready     chan struct{} // closed once the listeners are serving
	closed    chan struct{} // closed by Close: nothing more is sent
	closeOnce sync.Once

	allow  func(netip.AddrPort) bool
	wrap   func(net.PacketConn) net.PacketConn
	tap    func(out bool, local, remote net.Addr, msg []byte)
	gate   *gate
	acks   *ackKeeper // ACKs we built, repeated for their 2xx (ackrepeat.go)
	strays *strays    // 2xx to our INVITEs that no dialog takes (stray.go)
	// bgCtx ends with Close; bg counts the goroutines of the stack's own
	// requests (the BYEs of extra dialogs), which Close waits for.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	bgMu     sync.Mutex // orders bg.Add before Close's bg.Wait
	refused  atomic.Uint64
	methods  []string // methods with a handler, for Allow

	handler       atomic.Pointer[handlerBox]
	mwi           atomic.Pointer[mwiBox]
	referGate     atomic.Pointer[ReferGate]
	clientDialogs *sipgo.DialogClientCache
	serverDialogs *sipgo.DialogServerCache
	inboundMu     sync.Mutex
	inbound       map[*sipgo.DialogServerSession]*Dialog
	outbound      map[*sipgo.DialogClientSession]*Dialog
	restored      map[string]*Dialog // dialogs rebuilt from a DialogState (restore.go)
}

type streamListener struct {
	l   net.Listener
	tls bool
}

// StackOption configures a Stack.
type StackOption func(*Stack)

// WithStackLogger sets the logger (default: discard).
func WithStackLogger(l *logrus.Entry) StackOption { return func(s *Stack) { s.log = l } }

// WithPacketConnWrapper wraps every UDP listener socket, e.g. to tap the
// messages for traces and metrics. The wrapper must keep LocalAddr.
func WithPacketConnWrapper(w func(net.PacketConn) net.PacketConn) StackOption {
	return func(s *Stack) { s.wrap = w }
}

// WithStreamTap sees every SIP message on the TCP and TLS connections
// peers open to mgsip (in plain text, TLS already removed), one call per
// message read and per write: what WithPacketConnWrapper is for UDP.
// Connections sipgo dials itself are not seen.
func WithStreamTap(tap func(out bool, local, remote net.Addr, msg []byte)) StackOption {
	return func(s *Stack) { s.tap = tap }
}

// WithAccess restricts which source addresses may send requests (the
// configured peers). Others get 403, or nothing when Config.DropUnknown
// is set (against scanners).
func WithAccess(allow func(netip.AddrPort) bool) StackOption {
	return func(s *Stack) { s.allow = allow }
}

// NewStack binds every listener of cfg (so port 0 is resolved before
// anything is sent) and prepares the user agent. Serve starts serving.
func NewStack(cfg Config, opts ...StackOption) (*Stack, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, ready: make(chan struct{}), closed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		l := logrus.New()
		l.Out = discardWriter{}
		s.log = logrus.NewEntry(l)
	}
	s.gate = newGate(cfg, s.allow, func() string { return strings.Join(s.methods, ", ") }, s.log)
	var tlsConf *tls.Config
	for i, l := range cfg.Listeners {
		switch l.Transport {
		case "udp":
			c, err := net.ListenPacket("udp", l.Listen)
			if err != nil {
				s.closeListeners()
				return nil, fmt.Errorf("sip.listeners[%d]: %w", i, err)
			}
			if cfg.SocketBuffer > 0 {
				rcv, snd, err := setSocketBuffers(c, cfg.SocketBuffer)
				if err != nil {
					_ = c.Close()
					s.closeListeners()
					return nil, fmt.Errorf("sip.listeners[%d]: %w", i, err)
				}
				if (rcv >= 0 && rcv < cfg.SocketBuffer) || (snd >= 0 && snd < cfg.SocketBuffer) {
					s.log.WithFields(logrus.Fields{"listen": l.Listen, "asked": cfg.SocketBuffer, "receive": rcv, "send": snd}).
						Warn("sip.socket_buffer: the kernel granted smaller UDP buffers than asked (raise net.core.rmem_max and wmem_max, docs/operations.md)")
				}
			}
			if s.wrap != nil {
				c = s.wrap(c)
			}
			s.udp = append(s.udp, &packetGate{PacketConn: c, g: s.gate})
		case "tcp", "tls":
			ln, err := net.Listen("tcp", l.Listen)
			if err != nil {
				s.closeListeners()
				return nil, fmt.Errorf("sip.listeners[%d]: %w", i, err)
			}
			if l.Transport == "tls" {
				cert, err := tls.LoadX509KeyPair(l.Cert, l.Key)
				if err != nil {
					_ = ln.Close()
					s.closeListeners()
					return nil, fmt.Errorf("sip.listeners[%d]: %w", i, err)
				}
				tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
				ln = tls.NewListener(ln, tlsConf)
			}
			s.streams = append(s.streams, streamListener{l: &listenerGate{Listener: ln, g: s.gate, tap: s.tap}, tls: l.Transport == "tls"})
		}
	}
	first := cfg.Listeners[0]
	s.transport = first.Transport
	// The first listener's bound address: where requests leave from, and
	// what Contact and Via carry unless an advertised one is configured.
	// (ListenerAddr numbers the UDP sockets first, then the streams.)
	firstIdx := 0
	if first.Transport != "udp" {
		firstIdx = len(s.udp)
	}
	bound := s.ListenerAddr(firstIdx).String()
	host, p, err := net.SplitHostPort(bound)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	port, _ := strconv.Atoi(p)
	if first.Transport == "udp" {
		s.laddr = sip.Addr{IP: net.ParseIP(host), Port: port, Hostname: host}
	}
	if first.Advertise != "" {
		h, p, err := net.SplitHostPort(first.Advertise)
		if err != nil {
			h, p = first.Advertise, strconv.Itoa(port)
		}
		host = h
		port, _ = strconv.Atoi(p)
	}
	s.contact = sip.Uri{Scheme: "sip", Host: host, Port: port}
	slogger := newSlogLogger(s.log.WithField("component", "sipgo"))
	uaOpts := []sipgo.UserAgentOption{sipgo.WithUserAgent(cfg.UserAgent), sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slogger)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger),
			sip.WithTransactionLayerUnhandledResponseHandler(s.gate.unmatchedResponse))}
	if tlsConf != nil {
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	s.ua, err = sipgo.NewUA(uaOpts...)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	if s.server, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(slogger)); err != nil {
		s.closeListeners()
		return nil, err
	}
	// Via/Contact carry the advertised address; requests leave from the
	// listener's own socket, so answers come back to it (and through the
	// same NAT binding).
	s.client, err = sipgo.NewClient(s.ua, sipgo.WithClientLogger(slogger), sipgo.WithClientHostname(host),
		sipgo.WithClientPort(port), sipgo.WithClientConnectionAddr(bound))
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	s.acks = newAckKeeper(func(ack *sip.Request) error {
		if s.isClosed() {
			return ErrStackClosed
		}
		return s.client.WriteRequest(ack, asBuilt)
	})
	s.strays = newStrays(s.acks, func(ack *sip.Request) error {
		if s.isClosed() {
			return ErrStackClosed
		}
		s.fromListener(ack)
		return s.client.WriteRequest(ack, sipgo.ClientRequestAddVia)
	}, s.byeExtra, s.log)
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.gate.stray = s.stray2xx
	s.ua.TransportLayer().OnMessage(func(msg sip.Message) {
		res, ok := msg.(*sip.Response)
		if !ok {
			return
		}
		// The kept ACK first: a stray 2xx seen for the first time gets
		// its ACK from strays, which then keeps it.
		s.acks.repeat(res)
		s.strays.handle(res, false)
	})
	contactHdr := sip.ContactHeader{Address: s.contact}
	s.clientDialogs = sipgo.NewDialogClientCache(s.client, contactHdr)
	s.serverDialogs = sipgo.NewDialogServerCache(s.client, contactHdr)
	s.inbound = map[*sipgo.DialogServerSession]*Dialog{}
	s.outbound = map[*sipgo.DialogClientSession]*Dialog{}
	s.OnRequest(sip.INVITE, s.onInvite)
	s.OnRequest(sip.ACK, s.onAck)
	s.OnRequest(sip.BYE, s.onBye)
	s.OnRequest(sip.INFO, s.onInfo)
	s.OnRequest(sip.UPDATE, s.onUpdate)
	s.OnRequest(sip.REFER, s.onRefer)
	s.OnRequest(sip.NOTIFY, s.onNotify)
	s.OnRequest(sip.PRACK, s.onPrack)
	// sipgo answers a CANCEL that matches an INVITE transaction itself
	// (200, then 487 to the INVITE); one that reaches us matches nothing
	// (RFC 3261 §9.2).
	s.OnRequest(sip.CANCEL, func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
	})
	s.OnRequest(sip.OPTIONS, func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", strings.Join(s.methods, ", ")))
		_ = tx.Respond(res)
	})
	s.server.OnNoRoute(s.guard(func(req *sip.Request, tx sip.ServerTransaction) {
		if req.IsAck() || tx == nil {
			return // an ACK is never answered
		}
		res := sip.NewResponseFromRequest(req, sip.StatusMethodNotAllowed, "Method Not Allowed", nil)
		res.AppendHeader(sip.NewHeader("Allow", strings.Join(s.methods, ", ")))
		_ = tx.Respond(res)
	}))
	return s, nil
}

// OnRequest serves one method. The handler runs only for allowed sources;
// a panic in it is answered 500 and logged.
func (s *Stack) OnRequest(method sip.RequestMethod, h sipgo.RequestHandler) {
	s.methods = append(s.methods, string(method))
	s.server.OnRequest(method, s.guard(h))
}

// Refused counts requests refused for their source address.
func (s *Stack) Refused() uint64 { return s.Stats().Refused }

func (s *Stack) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if s.allow != nil {
			src, err := netip.ParseAddrPort(req.Source())
			if err != nil || !s.allow(netip.AddrPortFrom(src.Addr().Unmap(), src.Port())) {
				s.refused.Add(1)
				if !s.cfg.DropUnknown && !req.IsAck() && tx != nil {
					s.gate.stats.forbidden.Add(1)
					_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil))
				} else {
					s.gate.stats.dropped.Add(1)
					s.gate.stats.strangerDropped.Add(1)
				}
				return
			}
		}
		if res := checkRequest(req); res != nil {
			if !req.IsAck() && tx != nil {
				_ = tx.Respond(res)
			}
			return
		}
		defer func() {
			if v := recover(); v != nil {
				s.log.WithFields(logrus.Fields{"panic": v, "method": string(req.Method), "sip_call_id": callID(req)}).Error("handler panicked")
				if !req.IsAck() && tx != nil {
					_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusInternalServerError, "Server Internal Error", nil))
				}
			}
		}()
		h(req, tx)
	}
}

// statusUnsupportedURIScheme is 416 (RFC 3261 §21.4.13); sipgo's table
// gives the number its HTTP name.
const statusUnsupportedURIScheme = 416

// supportedExtensions are the option tags a Require header may name.
// 100rel: reliable provisional responses (RFC 3262, prack.go); replaces:
// an INVITE may require that we understand Replaces (RFC 3891 §6.1).
var supportedExtensions = map[string]bool{"100rel": true, "replaces": true}

// checkRequest applies the UAS checks of RFC 3261 §8.2.2 before a handler
// sees a request; it returns the rejection, or nil.
func checkRequest(req *sip.Request) *sip.Response {
	// §8.2.2.1: a Request-URI scheme we do not understand gets 416.
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return sip.NewResponseFromRequest(req, statusUnsupportedURIScheme, "Unsupported URI Scheme", nil)
	}
	// A message with conflicting lengths cannot be framed (RFC 4475
	// "mcl01"): reject it rather than guess.
	if cls := req.GetHeaders("Content-Length"); len(cls) > 1 {
		for _, h := range cls[1:] {
			if strings.TrimSpace(h.Value()) != strings.TrimSpace(cls[0].Value()) {
				return sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Conflicting Content-Length", nil)
			}
		}
	}
	// §8.2.2.3: extensions required but not supported get 420 with an
	// Unsupported header listing them (never for ACK and CANCEL).
	if req.Method != sip.ACK && req.Method != sip.CANCEL {
		var unsupported []string
		for _, h := range req.GetHeaders("require") {
			for _, tag := range strings.Split(h.Value(), ",") {
				if tag = strings.TrimSpace(tag); tag != "" && !supportedExtensions[strings.ToLower(tag)] {
					unsupported = append(unsupported, tag)
				}
			}
		}
		if len(unsupported) > 0 {
			res := sip.NewResponseFromRequest(req, sip.StatusBadExtension, "Bad Extension", nil)
			res.AppendHeader(sip.NewHeader("Unsupported", strings.Join(unsupported, ", ")))
			return res
		}
	}
	return nil
}

func callID(m sip.Message) string {
	if c := m.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// ListenerAddr returns the bound address of listener i (UDP listeners
// first, then TCP and TLS).
func (s *Stack) ListenerAddr(i int) net.Addr {
	if i < len(s.udp) {
		return s.udp[i].LocalAddr()
	}
	return s.streams[i-len(s.udp)].l.Addr()
}

// Ready is closed once Serve has the listeners serving.
func (s *Stack) Ready() <-chan struct{} { return s.ready }

// LocalAddr returns the first listener's bound address.
func (s *Stack) LocalAddr() net.Addr { return s.ListenerAddr(0) }

// ContactURI returns the host:port used in Contact and Via.
func (s *Stack) ContactURI() sip.Uri { return s.contact }

// Serve serves every listener until ctx ends or Close is called.
func (s *Stack) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.udp)+len(s.streams))
	for _, c := range s.udp {
		go func() { errc <- s.server.ServeUDP(c) }()
	}
	for _, l := range s.streams {
		go func() {
			if l.tls {
				errc <- s.server.ServeTLS(l.l)
			} else {
				errc <- s.server.ServeTCP(l.l)
			}
		}()
	}
	// Requests must leave from the listener sockets; sipgo knows them only
	// once its serving goroutines have started, so wait for that before
	// saying the stack is ready.
	for _, c := range s.udp {
		for i := 0; i < 2000; i++ {
			if conn, err := s.ua.TransportLayer().GetConnection("udp", c.LocalAddr().String()); err == nil && conn != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(s.ready)
	select {
	case <-ctx.Done():
		_ = s.Close()
		return nil
	case err := <-errc:
		_ = s.Close()
		if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
			return nil
		}
		return err
	}
}

func (s *Stack) closeListeners() {
	for _, c := range s.udp {
		_ = c.Close()
	}
	for _, l := range s.streams {
		_ = l.l.Close()
	}
}

// isClosed reports whether Close was called.
func (s *Stack) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Close stops the stack. Safe to call more than once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.bgMu.Lock()
		close(s.closed)
		s.bgMu.Unlock()
		if s.bgCancel != nil {
			s.bgCancel()
		}
		s.bg.Wait()
		// Dialogs still up end here, so that nothing waits on them.
		s.inboundMu.Lock()
		var open []*Dialog
		for _, d := range s.inbound {
			open = append(open, d)
		}
		for _, d := range s.outbound {
			open = append(open, d)
		}
		for _, d := range s.restored {
			open = append(open, d)
		}
		s.inboundMu.Unlock()
		for _, d := range open {
			d.end(nil)
		}
		s.closeListeners()
		if s.client != nil {
			_ = s.client.Close()
		}
		if s.ua != nil {
			_ = s.ua.Close()
		}
	})
	return nil
}

// fromListener makes a UDP request leave from the first listener's
// socket, the address its Via and Contact name. sipgo sets the local
// address only on requests built without options; in-dialog requests
// (its dialog sessions pass one) would otherwise take the pooled
// connection of their destination and, toward a remote target mgsip has
// not exchanged a datagram with on that socket (no proxy in the route
// set, a far end's Contact), open a socket of their own on another port,
// from which the far end would see requests and answer to.
func (s *Stack) fromListener(req *sip.Request) {
	if s.laddr.IP == nil || req.Laddr.IP != nil || !strings.EqualFold(req.Transport(), "udp") {
		return
	}
	s.laddr.Copy(&req.Laddr)
}
