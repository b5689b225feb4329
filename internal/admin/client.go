package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
)

// Client talks to a running mgsip over its admin API.
type Client struct {
	// Base is the API's base URL, such as http://127.0.0.1:8080 or
	// https://mgsip.example:8443, or unix:/path for a unix socket.
	Base  string
	Token string
	// CACert is a PEM file of the CA (or the self-signed certificate)
	// that an https API's certificate must chain to; empty: the system's.
	CACert string
	// HTTP is the client to use; nil: one made from Base and CACert, once,
	// so that its connections are reused from one request to the next.
	HTTP *http.Client

	once     sync.Once
	made     *http.Client
	madeBase string
	madeErr  error
}

// httpClient returns the client and the URL prefix for Base.
func (c *Client) httpClient() (*http.Client, string, error) {
	base := strings.TrimSuffix(c.Base, "/")
	if c.HTTP != nil {
		return c.HTTP, base, nil
	}
	c.once.Do(func() { c.made, c.madeBase, c.madeErr = c.newHTTPClient(base) })
	return c.made, c.madeBase, c.madeErr
}

func (c *Client) newHTTPClient(base string) (*http.Client, string, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if path, ok := strings.CutPrefix(base, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://localhost"
	}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, "", fmt.Errorf("%w: CA certificate: %v", ErrBadURL, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("%w: %s holds no PEM certificate", ErrBadURL, c.CACert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, base, nil
}

// ErrBadURL: the base URL does not make a request.
var ErrBadURL = errors.New("bad admin API URL")

// UnreachableError: no answer from the API (refused, timed out, cut).
type UnreachableError struct {
	Base string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach mgsip at %s: %v", e.Base, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// StatusError: the API answered with a non-2xx status.
type StatusError struct {
	Status  string // "404 Not Found"
	Code    int
	Message string // the API's error text, if any
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return e.Status
	}
	return e.Status + ": " + e.Message
}

// Do performs a request and returns the body of a 2xx answer. A non-2xx
// answer is a *StatusError, no answer an *UnreachableError.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	hc, base, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if method != http.MethodGet && method != http.MethodHead {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	req.Header.Set(ClientHeader, "mgsip")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	if res.StatusCode/100 != 2 {
		se := &StatusError{Status: res.Status, Code: res.StatusCode}
		var ae APIError
		if json.Unmarshal(data, &ae) == nil {
			se.Message = ae.Error
		}
		return nil, se
	}
	return data, nil
}
