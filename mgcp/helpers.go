package mgcp

import (
	"context"
	"errors"
	"fmt"
)

// ErrMissingParameter is returned by the typed helpers when a parameter
// RFC 3435 requires for the verb is absent; nothing is sent.
var ErrMissingParameter = errors.New("mgcp: missing required parameter")

func missing(v Verb, name string) error {
	return fmt.Errorf("%w: %s needs %s", ErrMissingParameter, v, name)
}

// exec sends one command built from its parts and turns a non-2xx answer
// into *ResponseError.
func (ca *CallAgent) exec(ctx context.Context, to string, v Verb, ep EndpointName, p Parameters, sdp []byte) (*Response, error) {
	cmd := &Command{Verb: v, Endpoint: ep, Parameters: p, SDP: sdp}
	r, err := ca.Do(ctx, to, cmd)
	if err != nil {
		return nil, err
	}
	if !r.Code.IsSuccess() {
		return r, &ResponseError{Verb: v, Endpoint: ep.String(), Response: r}
	}
	return r, nil
}

// CreateConnection sends CRCX (RFC 3435 §2.3.5). CallID and Mode are
// required; sdp is the optional RemoteConnectionDescriptor. On success the
// response carries ConnectionID and the gateway's SDP.
func (ca *CallAgent) CreateConnection(ctx context.Context, to string, ep EndpointName, p Parameters, sdp []byte) (*Response, error) {
	if p.CallID == "" {
		return nil, missing(VerbCRCX, "C: CallId")
	}
	if p.Mode == "" {
		return nil, missing(VerbCRCX, "M: ConnectionMode")
	}
	return ca.exec(ctx, to, VerbCRCX, ep, p, sdp)
}

// ModifyConnection sends MDCX (RFC 3435 §2.3.6). ConnectionID is required.
func (ca *CallAgent) ModifyConnection(ctx context.Context, to string, ep EndpointName, p Parameters, sdp []byte) (*Response, error) {
	if p.ConnectionID == "" {
		return nil, missing(VerbMDCX, "I: ConnectionId")
	}
	return ca.exec(ctx, to, VerbMDCX, ep, p, sdp)
}

// DeleteConnection sends DLCX (RFC 3435 §2.3.7-2.3.9). Without
// ConnectionID it deletes every connection of the call (CallID) or of the
// endpoint. A successful answer is 250 with P: statistics, or 200.
func (ca *CallAgent) DeleteConnection(ctx context.Context, to string, ep EndpointName, p Parameters) (*Response, error) {
	return ca.exec(ctx, to, VerbDLCX, ep, p, nil)
}

// NotificationRequest sends RQNT (RFC 3435 §2.3.3). RequestID is required.
func (ca *CallAgent) NotificationRequest(ctx context.Context, to string, ep EndpointName, p Parameters) (*Response, error) {
	if p.RequestID == "" {
		return nil, missing(VerbRQNT, "X: RequestIdentifier")
	}
	return ca.exec(ctx, to, VerbRQNT, ep, p, nil)
}

// AuditEndpoint sends AUEP (RFC 3435 §2.3.10) asking for the given
// RequestedInfo codes (e.g. "R", "S", "ES", "I"). With a "*" endpoint and
// no codes, the answer lists the endpoints in Z: lines.
func (ca *CallAgent) AuditEndpoint(ctx context.Context, to string, ep EndpointName, info ...string) (*Response, error) {
	var p Parameters
	if len(info) > 0 {
		p.RequestedInfo = info
	}
	return ca.exec(ctx, to, VerbAUEP, ep, p, nil)
}

// AuditConnection sends AUCX (RFC 3435 §2.3.11) for one connection.
func (ca *CallAgent) AuditConnection(ctx context.Context, to string, ep EndpointName, connID string, info ...string) (*Response, error) {
	if connID == "" {
		return nil, missing(VerbAUCX, "I: ConnectionId")
	}
	p := Parameters{ConnectionID: connID}
	if len(info) > 0 {
		p.RequestedInfo = info
	}
	return ca.exec(ctx, to, VerbAUCX, ep, p, nil)
}

// EndpointConfiguration sends EPCF (RFC 3435 §2.3.2) with the bearer
// information, e.g. "e:mu" or "e:A".
func (ca *CallAgent) EndpointConfiguration(ctx context.Context, to string, ep EndpointName, bearer string) (*Response, error) {
	if bearer == "" {
		return nil, missing(VerbEPCF, "B: BearerInformation")
	}
	return ca.exec(ctx, to, VerbEPCF, ep, Parameters{BearerInformation: bearer}, nil)
}
