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
	return n.calls(ctx, gw)
}

func (n *Node) calls(ctx context.Context, gw string) ([]CallState, error) {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	resp, err := n.cli.Get(ctx, n.callsPrefix(gw), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", gw, err)
	}
	var calls []CallState
	var errs []error
	for _, kv := range resp.Kvs {
		var c CallState
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			errs = append(errs, &DecodeError{Key: string(kv.Key), Err: err})
			continue
		}
		calls = append(calls, c)
	}
	return calls, errors.Join(errs...)
}

// AdoptCalls is the first step of a takeover: it loads the stored calls of
// a gateway this node just acquired and attaches each to this node's store
// lease (so they outlive the previous owner's), in transactions guarded by
// the ownership revision and by each call's own revision (a call changed
// meanwhile is not overwritten with an old value). It returns the calls
// adopted.
//
// A record no takeover can use (a value that does not decode, a call that
// lacks what Validate asks, or one whose gateway, endpoint or call id is
// not the key it is stored under) is deleted, guarded like the adoption,
// and reported as an *InvalidCallError in the error: it must not keep the
// gateway's good calls, or the gateway itself, from being taken over. The
// error wraps ErrNotOwner only when the node does not own the gateway (any
// more): a call that changed while it was adopted is reported without it.
func (n *Node) AdoptCalls(ctx context.Context, gw string) ([]CallState, error) {
	if _, _, err := n.ownerGuard(gw); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	resp, err := n.cli.Get(rctx, n.callsPrefix(gw), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", gw, err)
	}
	var adopted []CallState
	var errs []error
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		c, bad := n.checkStored(gw, key, kv.Value)
		guard, store, err := n.ownerGuard(gw)
		if err != nil {
			return adopted, errors.Join(append(errs, err)...)
		}
		guard = append(guard, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
		op := clientv3.OpDelete(key)
		if bad == nil {
			val, _ := json.Marshal(c)
			op = clientv3.OpPut(key, string(val), clientv3.WithLease(store))
		}
		rctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
		resp, err := n.cli.Txn(rctx).If(guard...).Then(op).Else(clientv3.OpGet(n.gatewayKey(gw))).Commit()
		cancel()
		switch {
		case err != nil:
			err = fmt.Errorf("cluster: adopt %s: %w", key, err)
		case !resp.Succeeded && !n.stillOwner(gw, resp):
			err = fmt.Errorf("%w: %s: ownership changed while adopting %s", ErrNotOwner, gw, strings.TrimPrefix(key, n.callsPrefix(gw)))
		case !resp.Succeeded:
			// Changed meanwhile by someone else: neither kept nor
			// overwritten (the next takeover sees the new value).
			err = fmt.Errorf("cluster: %s: stored call %s changed while adopting it", gw, strings.TrimPrefix(key, n.callsPrefix(gw)))
		case bad != nil:
			n.stats.invalidCalls.Add(1)
			err = bad
		default:
			adopted = append(adopted, c)
		}
		if err != nil {
			errs = append(errs, err)
		}
		if bad != nil && err == error(bad) {
			n.stats.countWrite(nil) // the delete went through
		} else {
			n.stats.countWrite(err)
		}
	}
	return adopted, errors.Join(errs...)
}

// checkStored decodes a stored call of gw and checks that a takeover can
// use it: it validates, and its gateway, endpoint and call id are those of
// the key it is stored under (a record copied under another key would
// otherwise be adopted, and deleted, under a key that is not its own).
func (n *Node) checkStored(gw, key string, val []byte) (CallState, *InvalidCallError) {
	var c CallState
	if err := json.Unmarshal(val, &c); err != nil {
		return c, &InvalidCallError{Key: key, Err: err}
	}
	if err := c.Validate(); err != nil {
		return c, &InvalidCallError{Key: key, Err: err}
	}
	if c.Gateway != gw {
		return c, &InvalidCallError{Key: key, Err: fmt.Errorf("call state of gateway %q under gateway %q", c.Gateway, gw)}
	}
	if want := n.callKey(gw, c.Endpoint, c.MGCP.CallID); want != key {
		return c, &InvalidCallError{Key: key, Err: fmt.Errorf("call state of endpoint %q, call %q belongs under %q", c.Endpoint, c.MGCP.CallID, want)}
	}
	return c, nil
}

// stillOwner reads the ownership key returned by a failed guarded
// transaction's Else branch: true when it is still the one this node
// created (the call's own revision is what failed).
func (n *Node) stillOwner(gw string, resp *clientv3.TxnResponse) bool {
	n.mu.Lock()
	rev, ok := n.owned[gw]
	lease := n.lease
	n.mu.Unlock()
	if !ok || len(resp.Responses) == 0 {
		return false
	}
	r := resp.Responses[0].GetResponseRange()
	if r == nil || len(r.Kvs) != 1 {
		return false
	}
	return r.Kvs[0].CreateRevision == rev && clientv3.LeaseID(r.Kvs[0].Lease) == lease
}
