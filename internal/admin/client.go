package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to a running mgsip over its admin API.
type Client struct {
	// Base is the API's base URL, such as http://127.0.0.1:8080.
	Base  string
	Token string
	// HTTP is the client to use; nil: http.DefaultClient.
	HTTP *http.Client
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
	u := strings.TrimSuffix(c.Base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	if res.StatusCode/100 != 2 {
		se := &StatusError{Status: res.Status, Code: res.StatusCode}
		var ae APIError
		if json.Unmarshal(body, &ae) == nil {
			se.Message = ae.Error
		}
		return nil, se
	}
	return body, nil
}
