package cluster

import (
	"errors"
	"sync/atomic"
	"time"
)

// Stats are the node's counters since it was created and its lease state
// now, for metrics.
type Stats struct {
	// Changes counts ownership changes by Change.Reason (acquired,
	// resumed, released, lost, fenced), one per gateway.
	Changes map[string]uint64
	// Owned is the number of gateways the node commands now.
	Owned int
	// LeaseValid: the node holds a lease and its fencing deadline is
	// ahead; ValidFor is how long it is still entitled without renewal.
	LeaseValid bool
	ValidFor   time.Duration
	// Fences counts the times the node stopped commanding its gateways
	// because its lease could not be renewed in time (fenced) or was
	// found expired (lost).
	Fences uint64
	// CallWrites counts call-state writes (put, delete, adopt) etcd
	// accepted; CallWritesRefused those refused because the node does not
	// own the gateway (locally, or by etcd's revision guard);
	// CallWriteErrors those that failed otherwise (etcd unreachable, a bad
	// call).
	CallWrites, CallWritesRefused, CallWriteErrors uint64
	// InvalidCalls counts the stored calls AdoptCalls deleted because no
	// takeover could use them (InvalidCallError).
	InvalidCalls uint64
}

// counters are updated without the node's mutex.
type counters struct {
	fences                           atomic.Uint64
	callWrites, callRefused, callErr atomic.Uint64
	invalidCalls                     atomic.Uint64
	changes                          [5]atomic.Uint64
}

var changeReasons = [5]string{"acquired", "resumed", "released", "lost", "fenced"}

func (c *counters) change(reason string) {
	for i, r := range changeReasons {
		if r == reason {
			c.changes[i].Add(1)
		}
	}
}

// countWrite counts the outcome of one call-state write.
func (c *counters) countWrite(err error) {
	switch {
	case err == nil:
		c.callWrites.Add(1)
	case errors.Is(err, ErrNotOwner):
		c.callRefused.Add(1)
	default:
		c.callErr.Add(1)
	}
}

// Stats returns the node's counters and lease state.
func (n *Node) Stats() Stats {
	st := Stats{Changes: map[string]uint64{}, Fences: n.stats.fences.Load(),
		CallWrites: n.stats.callWrites.Load(), CallWritesRefused: n.stats.callRefused.Load(), CallWriteErrors: n.stats.callErr.Load(),
		InvalidCalls: n.stats.invalidCalls.Load()}
	for i, r := range changeReasons {
		st.Changes[r] = n.stats.changes[i].Load()
	}
	now := time.Now()
	n.mu.Lock()
	if n.entitledLocked(now) {
		st.LeaseValid, st.ValidFor = true, n.validUntil.Sub(now)
		st.Owned = len(n.owned)
	}
	n.mu.Unlock()
	return st
}
