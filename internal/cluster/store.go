package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CallState is what a new owner needs to keep a connected call after a
// takeover (docs/cluster.md, "What each call stores"). It is stored as
// JSON under <prefix>calls/<gateway>/<endpoint>/<MGCP call id>.
type CallState struct {
	Gateway   string `json:"gateway"`
	Endpoint  string `json:"endpoint"` // local name, e.g. aaln/1
	Line      string `json:"line,omitempty"`
	Direction string `json:"direction,omitempty"` // incoming, outgoing, local
	Number    string `json:"number,omitempty"`    // the far party's number

	MGCP MGCPState   `json:"mgcp"`
	SIP  DialogState `json:"sip"`

	// LocalSDP and RemoteSDP are the session descriptions last agreed:
	// what mgsip offered or answered for the gateway's side, and what the
	// far end sent.
	LocalSDP  string `json:"local_sdp,omitempty"`
	RemoteSDP string `json:"remote_sdp,omitempty"`

	SessionTimer *SessionTimer `json:"session_timer,omitempty"`

	Started  time.Time `json:"started,omitzero"`
	Answered time.Time `json:"answered,omitzero"`
	Updated  time.Time `json:"updated"`
}

// MGCPState is the gateway side of a call.
type MGCPState struct {
	CallID        string   `json:"call_id"`                  // C:, RFC 3435 §3.2.2.2
	ConnectionIDs []string `json:"connection_ids,omitempty"` // I:, §3.2.2.5
	Mode          string   `json:"mode,omitempty"`           // M:, §3.2.2.6
	// GatewaySDP is the connection's LocalConnectionDescriptor, and
	// Codecs the codecs the call uses, in order.
	GatewaySDP string   `json:"gateway_sdp,omitempty"`
	Codecs     []string `json:"codecs,omitempty"`
}

// DialogState is the SIP dialog of a call (RFC 3261 §12: the dialog
// state a UA keeps).
type DialogState struct {
	CallID       string   `json:"call_id"`
	LocalTag     string   `json:"local_tag"`
	RemoteTag    string   `json:"remote_tag"`
	LocalCSeq    uint32   `json:"local_cseq"`
	RemoteCSeq   uint32   `json:"remote_cseq"`
	RouteSet     []string `json:"route_set,omitempty"`
	RemoteTarget string   `json:"remote_target"`
	LocalURI     string   `json:"local_uri"`
	RemoteURI    string   `json:"remote_uri"`
	LocalContact string   `json:"local_contact,omitempty"`
	// UAC: mgsip sent the INVITE that created the dialog.
	UAC bool `json:"uac"`
	// Transport of the dialog (UDP, TCP, TLS) and the methods the far
	// end allows (its Allow: UPDATE decides the kind of target refresh).
	Transport string   `json:"transport,omitempty"`
	PeerAllow []string `json:"peer_allow,omitempty"`
}

// SessionTimer is the negotiated session timer (RFC 4028).
type SessionTimer struct {
	IntervalSeconds int    `json:"interval_s"`
	Refresher       string `json:"refresher"` // "uac" or "uas"
}

// Validate reports what a stored call needs and lacks.
func (c *CallState) Validate() error {
	var errs []error
	if c.Gateway == "" {
		errs = append(errs, errors.New("call state: no gateway"))
	}
	if c.Endpoint == "" {
		errs = append(errs, errors.New("call state: no endpoint"))
	}
	if c.MGCP.CallID == "" {
		errs = append(errs, errors.New("call state: no MGCP call id"))
	}
	if t := c.SessionTimer; t != nil {
		if t.IntervalSeconds <= 0 {
			errs = append(errs, fmt.Errorf("call state: session interval %d s", t.IntervalSeconds))
		}
		if t.Refresher != "uac" && t.Refresher != "uas" {
			errs = append(errs, fmt.Errorf("call state: refresher %q is neither uac nor uas", t.Refresher))
		}
	}
	return errors.Join(errs...)
}

func (n *Node) callsPrefix(gw string) string {
	return n.cfg.Prefix + "calls/" + url.PathEscape(gw) + "/"
}

func (n *Node) callKey(gw, endpoint, callID string) string {
	return n.callsPrefix(gw) + url.PathEscape(endpoint) + "/" + url.PathEscape(callID)
}

// ownerGuard returns the comparisons that make a write valid only while
// this node's ownership key for gw is the one it created (revision
// fencing): a node that lost the gateway, even without knowing it yet,
// cannot write for it.
func (n *Node) ownerGuard(gw string) ([]clientv3.Cmp, clientv3.LeaseID, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rev, ok := n.owned[gw]
	if !ok || !n.entitledLocked(time.Now()) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotOwner, gw)
	}
	if n.storeLease == 0 {
		return nil, 0, ErrNoLease
	}
	key := n.gatewayKey(gw)
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", rev),
		clientv3.Compare(clientv3.LeaseValue(key), "=", n.lease),
	}, n.storeLease, nil
}

// PutCall stores (or replaces) a call of a gateway this node owns. It
// fails with ErrNotOwner when the node does not own the gateway, also
// when etcd finds that the ownership changed (revision fencing).
func (n *Node) PutCall(ctx context.Context, c CallState) (err error) {
	defer func() { n.stats.countWrite(err) }()
	if err := c.Validate(); err != nil {
		return err
	}
	guard, store, err := n.ownerGuard(c.Gateway)
	if err != nil {
		return err
	}
	if c.Updated.IsZero() {
		c.Updated = time.Now().UTC()
	}
	val, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("cluster: encode call: %w", err)
	}
	return n.guardedOp(ctx, c.Gateway, guard, clientv3.OpPut(n.callKey(c.Gateway, c.Endpoint, c.MGCP.CallID), string(val), clientv3.WithLease(store)))
}

// DeleteCall removes a stored call of a gateway this node owns (the call
// ended). Deleting a call that is not stored is not an error.
func (n *Node) DeleteCall(ctx context.Context, gw, endpoint, callID string) (err error) {
	defer func() { n.stats.countWrite(err) }()
	guard, _, err := n.ownerGuard(gw)
	if err != nil {
		return err
	}
	return n.guardedOp(ctx, gw, guard, clientv3.OpDelete(n.callKey(gw, endpoint, callID)))
}

func (n *Node) guardedOp(ctx context.Context, gw string, guard []clientv3.Cmp, op clientv3.Op) error {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	resp, err := n.cli.Txn(ctx).If(guard...).Then(op).Commit()
	if err != nil {
		return fmt.Errorf("cluster: %s: %w", gw, err)
	}
	if !resp.Succeeded {
		n.poke() // our view is stale: reconcile
		return fmt.Errorf("%w: %s (ownership changed in etcd)", ErrNotOwner, gw)
	}
	return nil
}

// Call reads one stored call; ok is false when there is none. Any node may
// read.
func (n *Node) Call(ctx context.Context, gw, endpoint, callID string) (c CallState, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	key := n.callKey(gw, endpoint, callID)
	resp, err := n.cli.Get(ctx, key)
	if err != nil {
		return CallState{}, false, fmt.Errorf("cluster: %s: %w", gw, err)
	}
	if len(resp.Kvs) == 0 {
		return CallState{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
		return CallState{}, false, &DecodeError{Key: key, Err: err}
	}
	return c, true, nil
}

// Calls lists the stored calls of a gateway, sorted by key. A value that
// does not decode is left out and reported in the error (a *DecodeError),
// with the calls that did decode.
func (n *Node) Calls(ctx context.Context, gw string) ([]CallState, error) {
	calls, _, err := n.calls(ctx, gw)
	return calls, err
}

func (n *Node) calls(ctx context.Context, gw string) ([]CallState, []int64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	resp, err := n.cli.Get(ctx, n.callsPrefix(gw), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %s: %w", gw, err)
	}
	var calls []CallState
	var revs []int64
	var errs []error
	for _, kv := range resp.Kvs {
		var c CallState
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			errs = append(errs, &DecodeError{Key: string(kv.Key), Err: err})
			continue
		}
		calls = append(calls, c)
		revs = append(revs, kv.ModRevision)
	}
	return calls, revs, errors.Join(errs...)
}

// AdoptCalls is the first step of a takeover: it loads the stored calls of
// a gateway this node just acquired and attaches each to this node's store
// lease (so they outlive the previous owner's), in transactions guarded by
// the ownership revision and by each call's own revision (a call changed
// meanwhile is not overwritten with an old value). It returns the calls
// adopted.
func (n *Node) AdoptCalls(ctx context.Context, gw string) ([]CallState, error) {
	if _, _, err := n.ownerGuard(gw); err != nil {
		return nil, err
	}
	calls, revs, decodeErr := n.calls(ctx, gw)
	if calls == nil && decodeErr != nil && !isDecodeOnly(decodeErr) {
		return nil, decodeErr
	}
	var adopted []CallState
	var errs []error
	if decodeErr != nil {
		errs = append(errs, decodeErr)
	}
	for i, c := range calls {
		guard, store, err := n.ownerGuard(gw)
		if err != nil {
			return adopted, errors.Join(append(errs, err)...)
		}
		key := n.callKey(gw, c.Endpoint, c.MGCP.CallID)
		val, _ := json.Marshal(c)
		guard = append(guard, clientv3.Compare(clientv3.ModRevision(key), "=", revs[i]))
		rctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
		resp, err := n.cli.Txn(rctx).If(guard...).Then(clientv3.OpPut(key, string(val), clientv3.WithLease(store))).Commit()
		cancel()
		switch {
		case err != nil:
			err = fmt.Errorf("cluster: adopt %s: %w", key, err)
			errs = append(errs, err)
		case resp.Succeeded:
			adopted = append(adopted, c)
		default:
			err = fmt.Errorf("%w: %s: ownership or call changed while adopting %s", ErrNotOwner, gw, strings.TrimPrefix(key, n.callsPrefix(gw)))
			errs = append(errs, err)
		}
		n.stats.countWrite(err)
	}
	return adopted, errors.Join(errs...)
}

func isDecodeOnly(err error) bool {
	var d *DecodeError
	return errors.As(err, &d)
}
