package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/sip"
	"github.com/sirupsen/logrus"
)

// callStore is the bridge's CallStore over the cluster's etcd store
// (docs/cluster.md, "What each call stores"): writes are fenced by the
// gateway's ownership revision, and one refused because this node no
// longer owns the gateway is dropped (the new owner has the call) and
// counted.
type callStore struct {
	node   *cluster.Node
	fenced *atomic.Uint64
}

func (s callStore) PutCall(ctx context.Context, c bridge.StoredCall) error {
	return s.fence(s.node.PutCall(ctx, toClusterCall(c)))
}

func (s callStore) DeleteCall(ctx context.Context, gateway, endpoint, callID string) error {
	return s.fence(s.node.DeleteCall(ctx, gateway, endpoint, callID))
}

func (s callStore) fence(err error) error {
	if errors.Is(err, cluster.ErrNotOwner) {
		s.fenced.Add(1)
		return nil
	}
	return err
}

// toClusterCall is a bridge call as the cluster stores it. The session
// timer's refresher is stored as the dialog role that refreshes.
func toClusterCall(c bridge.StoredCall) cluster.CallState {
	d := c.Dialog
	cs := cluster.CallState{Gateway: c.Gateway, Endpoint: c.Endpoint, Line: c.Line, Direction: c.Direction, Number: c.Number,
		MGCP: cluster.MGCPState{CallID: c.CallID, Mode: c.Mode, GatewaySDP: string(c.GatewaySDP), Codecs: c.Codecs},
		SIP: cluster.DialogState{CallID: d.CallID, LocalTag: d.LocalTag, RemoteTag: d.RemoteTag, LocalCSeq: d.LocalCSeq,
			RemoteCSeq: d.RemoteCSeq, RouteSet: d.RouteSet, RemoteTarget: d.RemoteTarget, LocalURI: d.LocalURI,
			RemoteURI: d.RemoteURI, LocalContact: d.LocalContact, UAC: d.UAC, Transport: d.Transport, PeerAllow: d.PeerAllow},
		LocalSDP: string(d.LocalSDP), RemoteSDP: string(d.RemoteSDP), Started: c.Start, Answered: c.Answered}
	if c.ConnectionID != "" {
		cs.MGCP.ConnectionIDs = []string{c.ConnectionID}
	}
	if secs := int(d.SessionInterval / time.Second); secs > 0 {
		role := "uas"
		if d.Refresher == d.UAC {
			role = "uac"
		}
		cs.SessionTimer = &cluster.SessionTimer{IntervalSeconds: secs, Refresher: role}
	}
	return cs
}

// fromClusterCall is the reverse of toClusterCall.
func fromClusterCall(cs cluster.CallState) bridge.StoredCall {
	s := cs.SIP
	c := bridge.StoredCall{Gateway: cs.Gateway, Endpoint: cs.Endpoint, Line: cs.Line, Direction: cs.Direction, Number: cs.Number,
		CallID: cs.MGCP.CallID, Mode: cs.MGCP.Mode, GatewaySDP: []byte(cs.MGCP.GatewaySDP), Codecs: cs.MGCP.Codecs,
		Start: cs.Started, Answered: cs.Answered,
		Dialog: sip.DialogState{CallID: s.CallID, LocalTag: s.LocalTag, RemoteTag: s.RemoteTag, LocalCSeq: s.LocalCSeq,
			RemoteCSeq: s.RemoteCSeq, RouteSet: s.RouteSet, RemoteTarget: s.RemoteTarget, LocalURI: s.LocalURI,
			RemoteURI: s.RemoteURI, LocalContact: s.LocalContact, UAC: s.UAC, Transport: s.Transport, PeerAllow: s.PeerAllow,
			LocalSDP: []byte(cs.LocalSDP), RemoteSDP: []byte(cs.RemoteSDP)}}
	if len(cs.MGCP.ConnectionIDs) > 0 {
		c.ConnectionID = cs.MGCP.ConnectionIDs[0]
	}
	if t := cs.SessionTimer; t != nil && t.IntervalSeconds > 0 {
		c.Dialog.SessionInterval = time.Duration(t.IntervalSeconds) * time.Second
		c.Dialog.Refresher = (t.Refresher == "uac") == s.UAC
	}
	return c
}

// ownership applies the node's ownership changes to the bridge in the
// order they came, off the node's goroutine: an acquired gateway first
// has its stored calls adopted (re-attached to this node's store lease,
// guarded by the ownership revision), then the bridge keeps them.
type ownership struct {
	mu    sync.Mutex
	queue []cluster.Change
	busy  bool
	wg    sync.WaitGroup
}

func (d *daemon) ownershipChanged(c cluster.Change) {
	o := &d.own
	o.mu.Lock()
	o.queue = append(o.queue, c)
	start := !o.busy
	o.busy = true
	if start {
		o.wg.Add(1)
	}
	o.mu.Unlock()
	if start {
		go d.applyOwnership()
	}
}

func (d *daemon) applyOwnership() {
	o := &d.own
	defer o.wg.Done()
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			o.busy = false
			o.mu.Unlock()
			return
		}
		c := o.queue[0]
		o.queue = o.queue[1:]
		o.mu.Unlock()
		b := d.bridge
		if b == nil {
			continue
		}
		if !c.Owned {
			b.GatewayOwned(c.Gateway, false)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		adopted, err := d.node.AdoptCalls(ctx, c.Gateway)
		cancel()
		if errors.Is(err, cluster.ErrNotOwner) && !d.node.Owns(c.Gateway) {
			// Lost again meanwhile: that change follows. Only then: an
			// acquired gateway is always started, whatever its stored
			// calls (a bad record must not leave its lines unarmed).
			continue
		}
		if err != nil {
			// The calls adopted are kept; the others were changed, could
			// not be read, or were records no takeover can use (deleted);
			// each is named in the error. One line per acquisition.
			d.log.WithError(err).WithFields(logrus.Fields{"gateway": c.Gateway, "adopted": len(adopted), "invalid": countInvalid(err)}).
				Warn("cluster: not every stored call of the gateway could be adopted")
		}
		calls := make([]bridge.StoredCall, 0, len(adopted))
		for _, cs := range adopted {
			calls = append(calls, fromClusterCall(cs))
		}
		if len(calls) > 0 {
			d.log.WithFields(logrus.Fields{"gateway": c.Gateway, "calls": len(calls), "reason": c.Reason}).Info("cluster: keeping the gateway's stored calls")
		}
		b.GatewayAcquired(c.Gateway, calls)
	}
}

// countInvalid counts the InvalidCallErrors joined in err.
func countInvalid(err error) int {
	if err == nil {
		return 0
	}
	var ie *cluster.InvalidCallError
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		n := 0
		for _, e := range u.Unwrap() {
			n += countInvalid(e)
		}
		return n
	}
	if errors.As(err, &ie) {
		return 1
	}
	return 0
}
