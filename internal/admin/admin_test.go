package admin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/trace"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

const (
	fullToken = "full-token-0123456789"
	readToken = "read-token-0123456789"
)

// testServer is the API over a backend with what the endpoints used here
// need (no bridge: only /metrics, peers, reload and trace are called).
type testServer struct {
	*Server
	h       http.Handler
	reloads atomic.Int32
	logs    *bytes.Buffer
}

func newTestServer(t *testing.T, o Options) *testServer {
	t.Helper()
	ts := &testServer{logs: &bytes.Buffer{}}
	l := logrus.New()
	l.SetOutput(ts.logs)
	o.Log = logrus.NewEntry(l)
	b := Backend{Metrics: prometheus.NewRegistry(), Trace: &trace.Tapper{},
		Peers: func() []PeerView { return []PeerView{{Name: "pbx", Up: true}} },
		Reload: func(context.Context) (any, error) {
			ts.reloads.Add(1)
			return map[string]string{"status": "reloaded"}, nil
		},
		Ready: func() (bool, string) { return true, "" }}
	ts.Server = New(b, o)
	ts.h = ts.Handler()
	return ts
}

type req struct {
	method, path, token, host, ctype, header, remote string
}

func (ts *testServer) do(r req) *httptest.ResponseRecorder {
	var body *strings.Reader
	if r.method == "" {
		r.method = http.MethodGet
	}
	body = strings.NewReader("")
	if r.ctype != "" {
		body = strings.NewReader("{}")
	}
	hr := httptest.NewRequest(r.method, "http://127.0.0.1:8080"+r.path, body)
	if r.host != "" {
		hr.Host = r.host
	}
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.ctype != "" {
		hr.Header.Set("Content-Type", r.ctype)
	}
	if r.header != "" {
		hr.Header.Set(ClientHeader, r.header)
	}
	w := httptest.NewRecorder()
	ts.h.ServeHTTP(w, hr)
	return w
}

// TestTokens: the full token reads and acts, the read-only token reads
// (/metrics, lists) and is refused every change, anything else is 401.
func TestTokens(t *testing.T) {
	ts := newTestServer(t, Options{Token: fullToken, ReadOnlyToken: readToken})
	for _, tt := range []struct {
		name string
		r    req
		want int
	}{
		{"no token", req{path: "/api/v1/peers"}, 401},
		{"wrong token", req{path: "/api/v1/peers", token: "nope-nope-nope-nope"}, 401},
		{"token prefix", req{path: "/metrics", token: fullToken[:len(fullToken)-1]}, 401},
		{"full reads", req{path: "/api/v1/peers", token: fullToken}, 200},
		{"full metrics", req{path: "/metrics", token: fullToken}, 200},
		{"read-only lists", req{path: "/api/v1/peers", token: readToken}, 200},
		{"read-only metrics", req{path: "/metrics", token: readToken}, 200},
		{"read-only may not reload", req{method: "POST", path: "/api/v1/reload", token: readToken, ctype: "application/json"}, 403},
		{"read-only may not trace", req{method: "POST", path: "/api/v1/trace?sip=on", token: readToken, header: "x"}, 403},
		{"full reloads", req{method: "POST", path: "/api/v1/reload", token: fullToken, ctype: "application/json"}, 200},
		{"probes need nothing", req{path: "/healthz"}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if w := ts.do(tt.r); w.Code != tt.want {
				t.Errorf("%d %s, want %d", w.Code, w.Body, tt.want)
			}
		})
	}
	if n := ts.reloads.Load(); n != 1 {
		t.Errorf("%d reloads, want 1 (only the full token's)", n)
	}
	if ts.b.Trace.TraceSIP.Load() {
		t.Error("the read-only token switched the trace on")
	}
}

// TestFailedAuthenticationThrottled: after the burst of failures a source
// gets 429 with Retry-After, even with the right token; other sources are
// not affected; the failures are logged once a second at most, without
// what was offered.
func TestFailedAuthenticationThrottled(t *testing.T) {
	ts := newTestServer(t, Options{Token: fullToken, FailRate: 0.01, FailBurst: 5})
	attacker, other := "192.0.2.66:40000", "192.0.2.7:50000"
	counts := map[int]int{}
	for i := range 1000 {
		w := ts.do(req{path: "/api/v1/peers", token: "guess-guess-guess-" + string(rune('a'+i%26)), remote: attacker})
		counts[w.Code]++
		if w.Code == 429 && w.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if counts[401] != 5 || counts[429] != 995 {
		t.Fatalf("1000 guesses: %v, want 5x401 then 429", counts)
	}
	if w := ts.do(req{path: "/api/v1/peers", token: fullToken, remote: attacker}); w.Code != 429 {
		t.Errorf("a locked-out source with the right token: %d", w.Code)
	}
	if w := ts.do(req{path: "/api/v1/peers", token: fullToken, remote: other}); w.Code != 200 {
		t.Errorf("another source: %d %s", w.Code, w.Body)
	}
	logs := ts.logs.String()
	if n := strings.Count(logs, "authentication failed"); n != 1 {
		t.Errorf("%d log lines for 5 failures within a second, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "192.0.2.66") || strings.Contains(logs, "guess-") {
		t.Errorf("log: %s", logs)
	}
}

func TestThrottleTableBounded(t *testing.T) {
	th := newThrottle(0.001, 1, 8)
	now := time.Now()
	for i := range 100 {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()
		th.fail(src, now)
	}
	if len(th.sources) > 8 {
		t.Fatalf("%d sources kept", len(th.sources))
	}
	// Sources past the table share one bucket, which the guesses drained.
	if _, locked := th.locked("203.0.113.1", now); !locked {
		t.Error("a new source while the table is full of guessers is not throttled")
	}
}

// TestHostHeaderWithoutToken: without a token only loopback names (and
// allowed_hosts) are served, so a web page rebinding its name to
// 127.0.0.1 cannot read the API.
func TestHostHeaderWithoutToken(t *testing.T) {
	ts := newTestServer(t, Options{AllowedHosts: []string{"mgsip.lan"}})
	for host, want := range map[string]int{
		"127.0.0.1:8080": 200, "127.0.0.1": 200, "localhost:8080": 200, "LOCALHOST": 200, "[::1]:8080": 200,
		"127.9.9.9:1": 200, "mgsip.lan:8080": 200, "mgsip.lan": 200,
		"evil.example:8080": 421, "evil.example": 421, "192.0.2.1:8080": 421, "localhost.evil.example": 421, "": 421,
	} {
		w := ts.do(req{path: "/api/v1/peers", host: host})
		if host == "" {
			hr := httptest.NewRequest("GET", "/api/v1/peers", nil)
			hr.Host = ""
			rec := httptest.NewRecorder()
			ts.h.ServeHTTP(rec, hr)
			w = rec
		}
		if w.Code != want {
			t.Errorf("Host %q: %d, want %d", host, w.Code, want)
		}
	}
	// With a token the Host does not matter (a page cannot know it).
	tt := newTestServer(t, Options{Token: fullToken})
	if w := tt.do(req{path: "/api/v1/peers", host: "mgsip.example.net", token: fullToken}); w.Code != 200 {
		t.Errorf("with a token: %d", w.Code)
	}
}

// TestStateChangingNeedsJSONOrHeader: a form POST (what a web page can
// send cross-origin without a preflight) is refused, token or not.
func TestStateChangingNeedsJSONOrHeader(t *testing.T) {
	for _, tok := range []string{"", fullToken} {
		ts := newTestServer(t, Options{Token: tok})
		for _, tt := range []struct {
			ctype, header string
			want          int
		}{
			{"", "", 415},
			{"application/x-www-form-urlencoded", "", 415},
			{"multipart/form-data; boundary=x", "", 415},
			{"text/plain", "", 415},
			{"application/json", "", 200},
			{"application/json; charset=utf-8", "", 200},
			{"", "mgsip", 200},
			{"text/plain", "curl", 200},
		} {
			w := ts.do(req{method: "POST", path: "/api/v1/trace?mgcp=on", token: tok, ctype: tt.ctype, header: tt.header})
			if w.Code != tt.want {
				t.Errorf("token %v, Content-Type %q, header %q: %d %s, want %d", tok != "", tt.ctype, tt.header, w.Code, w.Body, tt.want)
			}
		}
	}
}

// serve runs the API on ln until the test ends.
func serve(t *testing.T, h http.Handler, ln net.Listener) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
}

// TestTLSListener: with tls_cert and tls_key the API speaks HTTPS; the
// client trusts it through --cacert; plain HTTP gets nothing useful.
func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	ln, err := Listen(config.Admin{Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, Options{Token: fullToken})
	serve(t, ts.h, ln)
	addr := ln.Addr().String()
	ctx := context.Background()
	c := &Client{Base: "https://" + addr, Token: fullToken, CACert: certFile}
	if body, err := c.Do(ctx, "GET", "/api/v1/peers", nil); err != nil || !strings.Contains(string(body), "pbx") {
		t.Fatalf("over TLS: %v %s", err, body)
	}
	if _, err := c.Do(ctx, "POST", "/api/v1/reload", nil); err != nil {
		t.Fatalf("POST over TLS: %v", err)
	}
	// Without the CA the certificate is refused.
	var ue *UnreachableError
	if _, err := (&Client{Base: "https://" + addr, Token: fullToken}).Do(ctx, "GET", "/api/v1/peers", nil); !errors.As(err, &ue) {
		t.Errorf("untrusted certificate: %v", err)
	}
	// Plain HTTP to the TLS port is no API.
	if _, err := (&Client{Base: "http://" + addr, Token: fullToken}).Do(ctx, "GET", "/api/v1/peers", nil); err == nil {
		t.Error("plain HTTP answered")
	}
	if _, err := Listen(config.Admin{Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: certFile}); err == nil {
		t.Error("a certificate as its own key was accepted")
	}
}

// TestUnixSocket: the socket gets its mode before it can be reached, the
// client talks over it, a stale socket is replaced, a live one or a file
// is not, and closing removes it.
func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "mgsip-admin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(config.Admin{Listen: "unix:" + path, Mode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	// No token: over the socket, the Host header does not matter.
	ts := newTestServer(t, Options{})
	serve(t, ts.h, ln)
	c := &Client{Base: "unix:" + path}
	if body, err := c.Do(context.Background(), "GET", "/api/v1/peers", nil); err != nil || !strings.Contains(string(body), "pbx") {
		t.Fatalf("over the socket: %v %s", err, body)
	}
	if _, err := Listen(config.Admin{Listen: "unix:" + path}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("a live socket was taken over: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	// A stale socket (its process died) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	ln2, err := Listen(config.Admin{Listen: "unix:" + path})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("default mode %v", fi.Mode().Perm())
	}
	_ = ln2.Close()
	// A file that is not a socket is never removed.
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(config.Admin{Listen: "unix:" + path}); err == nil {
		t.Error("a regular file was replaced")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Error("the file was touched")
	}
}

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mgsip test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestClientReusesConnections: one Client keeps its connection from one
// request to the next (a follower that opened one per request used up the
// daemon's descriptors).
func TestClientReusesConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := &Client{Base: srv.URL}
	for range 20 {
		if _, err := c.Do(context.Background(), http.MethodGet, "/api/v1/cdr", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 requests", n)
	}
}
