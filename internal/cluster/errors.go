package cluster

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

var (
	// ErrNotOwner: the node does not own the gateway (never had it, lost
	// it, or is fenced), or etcd refused the write because the gateway's
	// ownership key is no longer the one this node created (revision
	// fencing).
	ErrNotOwner = errors.New("cluster: gateway not owned by this node")
	// ErrNoLease: the node has no lease at the moment (not started yet,
	// etcd unreachable since it lost the previous one, or left).
	ErrNoLease = errors.New("cluster: no lease")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("cluster: node closed")
	// ErrBusy: Drain ended (its context did) while gateways with calls
	// were still owned.
	ErrBusy = errors.New("cluster: gateways still busy")
)

// DecodeError is a value under the cluster's prefix that does not decode:
// written by something else, or by another version of mgsip.
type DecodeError struct {
	Key string
	Err error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("cluster: key %q: %v", e.Key, e.Err) }

func (e *DecodeError) Unwrap() error { return e.Err }

// isLeaseNotFound says whether etcd answered that a lease does not exist
// (it expired or was revoked).
func isLeaseNotFound(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound)
}

// InvalidCallError is a stored call no takeover can use: its value does
// not decode, lacks what CallState.Validate asks, or names another
// gateway, endpoint or call than the key it is stored under. AdoptCalls
// deletes it.
type InvalidCallError struct {
	Key string
	Err error
}

func (e *InvalidCallError) Error() string {
	return fmt.Sprintf("cluster: stored call %q deleted, no takeover can use it: %v", e.Key, e.Err)
}

func (e *InvalidCallError) Unwrap() error { return e.Err }

// NameTakenError: the node's key is held by another lease, so another
// process runs with the same node name (or this node's previous run was
// killed and its lease has not expired yet: Run waits up to TTL for it
// before it returns this error).
type NameTakenError struct {
	Key   string
	Lease int64         // the lease holding the key
	TTL   time.Duration // that lease's granted TTL
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("cluster: node key %s is held by lease %x of another process: is another mgsip running with the same cluster.node?", e.Key, e.Lease)
}
