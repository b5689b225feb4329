// Package cluster lets several mgsip nodes share the gateways of one
// configuration through etcd: node membership with a lease, gateway
// ownership taken with a transaction, rendezvous hashing over the live
// nodes with the configuration's preference, fencing (a node that cannot
// renew its lease stops commanding its gateways before the lease can have
// expired), draining, and a store for the state of connected calls.
// docs/cluster.md is the design.
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults.
const (
	DefaultTTL      = 5 * time.Second
	DefaultStoreTTL = time.Hour
	DefaultPrefix   = "/mgsip/"
	minMargin       = 500 * time.Millisecond
)

// Config configures a Node. Every node of a cluster has the same Prefix,
// Gateways and Preference (they come from the shared configuration file)
// and its own Name and addresses.
type Config struct {
	// Name is this node's name, unique in the cluster.
	Name string
	// MGCPAddr is the address the node gives gateways in N: (the notified
	// entity, e.g. "mgsip@10.0.0.1:2727"); others name it in a 521.
	MGCPAddr string
	// SIPAddr is the node's SIP address (its Contact host:port).
	SIPAddr string

	// Endpoints are etcd's client URLs.
	Endpoints []string
	TLS       *tls.Config
	Username  string
	Password  string
	// DialTimeout bounds the first connection to etcd (default 5 s).
	DialTimeout time.Duration

	// Prefix of every key (default "/mgsip/").
	Prefix string
	// TTL of the node's lease (default 5 s; whole seconds, at least 1 s;
	// etcd may raise a very short TTL to its minimum, and the node then
	// works with what etcd granted).
	TTL time.Duration
	// Margin: the node stops commanding its gateways this long before its
	// lease could expire, counted from the start of its last successful
	// renewal (default TTL/5, at least 500 ms; less than TTL/2).
	Margin time.Duration
	// StoreTTL is the TTL of the lease the call state is attached to
	// (default 1 h): long enough for a takeover to load it after the owner
	// died, short enough to collect what nobody took over.
	StoreTTL time.Duration

	// Gateways are the names of all gateways of the configuration.
	Gateways []string
	// Preference lists, per gateway, the nodes that should own it, best
	// first; a gateway not listed is placed by rendezvous hashing.
	Preference map[string][]string
	// Idle says whether a gateway may be handed to another node now (no
	// call up or being set up). Nil: every gateway is idle.
	Idle func(gateway string) bool
	// OnChange is called for each gateway the node acquires or loses, in
	// order, on the node's goroutine (and on Leave's caller's): it must
	// not block for long. A loss
	// is reported before the node releases the key, so that the daemon
	// stops the gateway's lines before another node can start them. Owns
	// is authoritative in any case: it turns false at the fencing deadline
	// even if the callback comes later.
	OnChange func(Change)

	Log *logrus.Entry
}

// Change is one acquisition or loss of a gateway.
type Change struct {
	Gateway string
	Owned   bool
	// Reason: "acquired", "resumed" (the key was still under the node's
	// lease, e.g. after a fence), "released" (handed over: idle, drain,
	// leave, removed from the configuration), "lost" (the key went away or
	// belongs to someone else), "fenced" (renewal failed too long).
	Reason string
	// Revision is the ownership key's create revision: the fencing token.
	Revision int64
	At       time.Time
}

// NodeInfo is the value of a node's membership key.
type NodeInfo struct {
	Name     string    `json:"name"`
	MGCPAddr string    `json:"mgcp_addr,omitempty"`
	SIPAddr  string    `json:"sip_addr,omitempty"`
	Draining bool      `json:"draining,omitempty"`
	Started  time.Time `json:"started"`

	rev   int64            // create revision of the node key
	lease clientv3.LeaseID // the lease the node key is attached to
}

// ownerValue is the value of a gateway's ownership key.
type ownerValue struct {
	Node     string    `json:"node"`
	MGCPAddr string    `json:"mgcp_addr,omitempty"`
	SIPAddr  string    `json:"sip_addr,omitempty"`
	Since    time.Time `json:"since"`
}

type ownerRecord struct {
	ownerValue
	lease      clientv3.LeaseID
	createRev  int64
	modRev     int64
	unreadable bool // the value does not decode or names no node
}

// Node is one mgsip node's membership in the cluster.
type Node struct {
	cfg     Config
	log     *logrus.Entry
	cli     *clientv3.Client
	started time.Time

	trigger chan struct{}
	done    chan struct{} // closed by Close

	closeOnce sync.Once
	closeErr  error

	mu         sync.Mutex
	lease      clientv3.LeaseID
	storeLease clientv3.LeaseID
	validUntil time.Time        // fencing deadline (monotonic)
	owned      map[string]int64 // gateway -> create revision of its key
	// basis: gateway -> revision of the view the node took it on; a node
	// that joined later may be handed the gateway (see reconcile).
	basis     map[string]int64
	releasing map[string]int64 // released, key not deleted yet
	owners    map[string]ownerRecord
	nodes     map[string]NodeInfo
	gateways  []string
	draining  bool
	left      bool
	fenced    bool
	leaseGone bool // the lease was found expired: grant a new one

	freeSince map[string]time.Time // loop goroutine only: since when a gateway is seen free

	warnMu sync.Mutex
	warned map[string]time.Time // key -> when a warning about it was last logged

	stats counters
}

// New checks cfg and connects to etcd (without waiting for it to answer).
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		DialTimeout: cfg.DialTimeout,
		// A partition must show within the TTL, not after TCP's timeouts.
		DialKeepAliveTime:    cfg.TTL / 3,
		DialKeepAliveTimeout: cfg.TTL / 3,
		// The node logs what matters through logrus; etcd's client would
		// otherwise log every reconnection attempt on its own.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Log.WithField("node", cfg.Name),
		cli:       cli,
		started:   time.Now(),
		trigger:   make(chan struct{}, 1),
		done:      make(chan struct{}),
		owned:     map[string]int64{},
		basis:     map[string]int64{},
		releasing: map[string]int64{},
		owners:    map[string]ownerRecord{},
		nodes:     map[string]NodeInfo{},
		gateways:  slices.Clone(cfg.Gateways),
		freeSince: map[string]time.Time{},
		warned:    map[string]time.Time{},
	}
	return n, nil
}

func (c *Config) setDefaults() error {
	if c.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		c.Log = logrus.NewEntry(l)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Margin == 0 {
		c.Margin = max(c.TTL/5, minMargin)
	}
	if c.StoreTTL == 0 {
		c.StoreTTL = DefaultStoreTTL
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	return c.Validate()
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("cluster: node name is empty"))
	} else if strings.ContainsAny(c.Name, "/ \t\r\n") {
		errs = append(errs, fmt.Errorf("cluster: node name %q contains '/' or white space", c.Name))
	}
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("cluster: no etcd endpoint"))
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("cluster: lease TTL %v is not a whole number of seconds >= 1s", c.TTL))
	}
	if c.Margin <= 0 || c.Margin >= c.TTL/2 {
		errs = append(errs, fmt.Errorf("cluster: fencing margin %v must be above 0 and below TTL/2 (%v)", c.Margin, c.TTL/2))
	}
	if c.StoreTTL < c.TTL || c.StoreTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("cluster: store TTL %v must be whole seconds and at least the lease TTL", c.StoreTTL))
	}
	seen := map[string]bool{}
	for _, g := range c.Gateways {
		if g == "" {
			errs = append(errs, errors.New("cluster: empty gateway name"))
		} else if seen[g] {
			errs = append(errs, fmt.Errorf("cluster: gateway %q listed twice", g))
		}
		seen[g] = true
	}
	return errors.Join(errs...)
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

func (n *Node) nodeKey(name string) string { return n.cfg.Prefix + "nodes/" + name }
func (n *Node) gatewayKey(gw string) string {
	return n.cfg.Prefix + "gateways/" + url.PathEscape(gw)
}

// poke asks the loop to reconcile soon.
func (n *Node) poke() {
	select {
	case n.trigger <- struct{}{}:
	default:
	}
}

// entitledLocked says whether the fencing deadline has not passed.
func (n *Node) entitledLocked(now time.Time) bool {
	return n.lease != 0 && !n.left && now.Before(n.validUntil)
}

// Owns says whether this node may command gateway now: it holds the
// gateway's key and its last lease renewal is recent enough that the lease
// cannot have expired (see Config.Margin).
func (n *Node) Owns(gateway string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.owned[gateway]
	return ok && n.entitledLocked(time.Now())
}

// Owned lists the gateways this node owns now, sorted.
func (n *Node) Owned() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.entitledLocked(time.Now()) {
		return nil
	}
	out := make([]string, 0, len(n.owned))
	for g := range n.owned {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Owner returns the node that owned gateway at the last reconciliation
// (the one to name in a 521's N:), if any.
func (n *Node) Owner(gateway string) (NodeInfo, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	o, ok := n.owners[gateway]
	if !ok {
		return NodeInfo{}, false
	}
	if info, ok := n.nodes[o.Node]; ok {
		return info, true
	}
	return NodeInfo{Name: o.Node, MGCPAddr: o.MGCPAddr, SIPAddr: o.SIPAddr}, true
}

// SetGateways replaces the list of gateways (after a configuration
// reload): gateways no longer listed are released.
func (n *Node) SetGateways(gateways []string, preference map[string][]string) {
	n.mu.Lock()
	n.gateways = slices.Clone(gateways)
	n.cfg.Preference = preference
	n.mu.Unlock()
	n.poke()
}

// Run keeps the node in the cluster until ctx ends: it grants the lease
// (again, when it expired), renews it, watches the prefix and reconciles
// ownership. It returns nil when ctx ends, or a *NameTakenError when
// another lease holds this node's key for longer than that lease's TTL
// (another live process with the same node name: a restart after a crash
// waits for the old key to expire and joins). Ending Run does not revoke the
// lease (the node then looks crashed to the others, who take its gateways
// when the lease expires); Leave does.
func (n *Node) Run(ctx context.Context) error {
	select {
	case <-n.done:
		return ErrClosed
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() { n.keepAlive(ctx) })
	wg.Go(func() { n.watch(ctx) })
	err := n.loop(ctx)
	cancel()
	wg.Wait()
	return err
}

func (n *Node) requestTimeout() time.Duration { return n.cfg.TTL / 3 }

// opContext bounds a request of the loop by the request timeout and by
// the fencing deadline, so that the loop is back in time to fence.
func (n *Node) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	n.mu.Lock()
	deadline := n.validUntil
	n.mu.Unlock()
	if d := time.Now().Add(n.requestTimeout()); d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(ctx, deadline)
}

// loop is the node's goroutine: it owns the lease's life cycle and the
// reconciliation; OnChange is called from here only.
func (n *Node) loop(ctx context.Context) error {
	tick := time.NewTicker(n.cfg.TTL / 2)
	defer tick.Stop()
	fence := time.NewTimer(time.Hour)
	defer fence.Stop()
	backoff := 100 * time.Millisecond
	var takenSince time.Time // when the node key was first found held by another lease
	for {
		n.mu.Lock()
		needLease := (n.lease == 0 || n.leaseGone) && !n.left
		n.mu.Unlock()
		if needLease {
			if err := n.grant(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				retry := backoff
				var taken *NameTakenError
				if errors.As(err, &taken) {
					// This node's previous run, killed, holds the key
					// until its lease expires (at most its TTL); another
					// live process with this name renews it forever.
					if takenSince.IsZero() {
						takenSince = time.Now()
						n.log.WithFields(logrus.Fields{"key": taken.Key, "lease": fmt.Sprintf("%x", taken.Lease), "wait": taken.TTL + time.Second}).
							Warn("cluster: the node key is held by another lease (this node's previous run, or another process with the same node name); waiting for it to expire")
					}
					if time.Since(takenSince) > taken.TTL+time.Second {
						n.log.WithError(err).Error("cluster: node name in use by another process; not joining")
						return err
					}
					retry = 200 * time.Millisecond
				} else {
					n.log.WithError(err).Warn("cluster: cannot join, retrying")
					backoff = min(backoff*2, n.cfg.TTL)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(retry):
				}
				continue
			}
			takenSince = time.Time{}
			backoff = 100 * time.Millisecond
			n.poke()
		}
		n.checkFence()
		n.mu.Lock()
		until := time.Until(n.validUntil)
		n.mu.Unlock()
		if until <= 0 {
			// Fenced or without a lease: a renewal or grant pokes the
			// loop; until then look again now and then.
			until = n.cfg.TTL / 3
		}
		fence.Reset(until)
		select {
		case <-ctx.Done():
			return nil
		case <-n.trigger:
			n.reconcile(ctx)
		case <-tick.C:
			n.reconcile(ctx)
		case <-fence.C:
			n.checkFence()
		}
	}
}

// grant starts a new membership: the node lease, the store lease (kept
// when it still lives), the node key; any gateway held under the old
// lease is lost already (the lease expired).
func (n *Node) grant(ctx context.Context) error {
	n.mu.Lock()
	old := n.lease
	n.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, n.requestTimeout()+n.cfg.DialTimeout)
	defer cancel()
	if old != 0 {
		n.fence("lost", "lease expired")
		// When only the store lease expired the node lease may still
		// live: end it, so that its keys do not linger.
		if _, err := n.cli.Revoke(rctx, old); err != nil && !isLeaseNotFound(err) {
			return fmt.Errorf("revoke the old lease: %w", err)
		}
	}
	if err := n.nodeKeyFree(rctx); err != nil {
		return err
	}
	t0 := time.Now()
	resp, err := n.cli.Grant(rctx, int64(n.cfg.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	lease := resp.ID
	n.mu.Lock()
	store := n.storeLease
	n.mu.Unlock()
	if store != 0 {
		if _, err := n.cli.KeepAliveOnce(rctx, store); err != nil {
			store = 0
		}
	}
	newStore := store == 0
	if store == 0 {
		sresp, err := n.cli.Grant(rctx, int64(n.cfg.StoreTTL/time.Second))
		if err != nil {
			_, _ = n.cli.Revoke(rctx, lease)
			return fmt.Errorf("grant store lease: %w", err)
		}
		store = sresp.ID
	}
	n.mu.Lock()
	info := n.infoLocked()
	n.mu.Unlock()
	val, _ := json.Marshal(info)
	if err := n.putNodeKey(rctx, string(val), lease); err != nil {
		_, _ = n.cli.Revoke(rctx, lease)
		if newStore {
			_, _ = n.cli.Revoke(rctx, store)
		}
		return err
	}
	n.mu.Lock()
	n.lease, n.storeLease, n.leaseGone, n.fenced = lease, store, false, false
	n.validUntil = t0.Add(time.Duration(resp.TTL)*time.Second - n.cfg.Margin)
	n.mu.Unlock()
	n.log.WithFields(logrus.Fields{"lease": fmt.Sprintf("%x", int64(lease)), "ttl": resp.TTL}).Info("cluster: joined")
	return nil
}

// nodeKeyFree checks that no other lease holds this node's key: another
// process running with the same node name, or this node's previous run
// (killed, its lease alive until it expires). A key without a lease (not
// a member: written by hand or by a tool) does not count.
func (n *Node) nodeKeyFree(ctx context.Context) error {
	key := n.nodeKey(n.cfg.Name)
	resp, err := n.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read the node key: %w", err)
	}
	if len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
		return n.nameTaken(ctx, key, clientv3.LeaseID(resp.Kvs[0].Lease))
	}
	return nil
}

// putNodeKey writes the node key under lease, only when it is not there
// (a transaction that creates it), so that two processes with one node
// name cannot both be members: the second finds the first's key. A
// leftover without a lease is replaced, guarded by its mod revision.
func (n *Node) putNodeKey(ctx context.Context, val string, lease clientv3.LeaseID) error {
	key := n.nodeKey(n.cfg.Name)
	put := clientv3.OpPut(key, val, clientv3.WithLease(lease))
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	for range 3 {
		resp, err := n.cli.Txn(ctx).If(cmp).Then(put).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return fmt.Errorf("register node: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && kvs[0].Lease != 0 {
			return n.nameTaken(ctx, key, clientv3.LeaseID(kvs[0].Lease))
		}
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(kvs) == 1 {
			n.log.WithField("key", key).Warn("cluster: replacing a node key without a lease")
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)
		}
	}
	return fmt.Errorf("register node: key %s keeps changing", key)
}

// nameTaken is the NameTakenError for key held by lease, with the time
// that lease may still live.
func (n *Node) nameTaken(ctx context.Context, key string, lease clientv3.LeaseID) error {
	e := &NameTakenError{Key: key, Lease: int64(lease), TTL: n.cfg.TTL}
	if ttl, err := n.cli.TimeToLive(ctx, lease); err == nil && ttl.GrantedTTL > 0 {
		e.TTL = time.Duration(ttl.GrantedTTL) * time.Second
	}
	return e
}

func (n *Node) infoLocked() NodeInfo {
	return NodeInfo{Name: n.cfg.Name, MGCPAddr: n.cfg.MGCPAddr, SIPAddr: n.cfg.SIPAddr, Draining: n.draining, Started: n.started}
}

// keepAlive renews the leases: the node lease every TTL/3 (sooner after a
// failure), the store lease every StoreTTL/3. Each successful renewal of
// the node lease moves the fencing deadline to t0 + TTL - Margin, t0
// being the time just before the renewal was sent.
func (n *Node) keepAlive(ctx context.Context) {
	interval := n.cfg.TTL / 3
	wait := interval
	nextStore := time.Now().Add(n.cfg.StoreTTL / 3)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n.mu.Lock()
		lease, store, gone := n.lease, n.storeLease, n.leaseGone
		n.mu.Unlock()
		if lease == 0 || gone {
			wait = interval
			continue
		}
		t0 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := n.cli.KeepAliveOnce(rctx, lease)
		cancel()
		switch {
		case err == nil:
			n.mu.Lock()
			if n.lease == lease {
				deadline := t0.Add(time.Duration(resp.TTL)*time.Second - n.cfg.Margin)
				if deadline.After(n.validUntil) {
					n.validUntil = deadline
				}
				if n.fenced {
					n.fenced = false
					n.log.Info("cluster: lease renewed again")
				}
			}
			n.mu.Unlock()
			n.poke()
			wait = interval
		case isLeaseNotFound(err):
			n.log.Warn("cluster: lease expired")
			n.mu.Lock()
			if n.lease == lease {
				n.leaseGone = true
			}
			n.mu.Unlock()
			n.poke()
			wait = interval
		default:
			if ctx.Err() != nil {
				return
			}
			n.log.WithError(err).Debug("cluster: lease renewal failed")
			wait = interval / 4
		}
		if store != 0 && time.Now().After(nextStore) {
			rctx, cancel := context.WithTimeout(ctx, interval)
			_, err := n.cli.KeepAliveOnce(rctx, store)
			cancel()
			switch {
			case err == nil:
				nextStore = time.Now().Add(n.cfg.StoreTTL / 3)
			case isLeaseNotFound(err):
				n.log.Warn("cluster: store lease expired; stored calls of this node are gone")
				n.mu.Lock()
				if n.storeLease == store {
					n.storeLease = 0
					n.leaseGone = true // a new membership grants both
				}
				n.mu.Unlock()
				n.poke()
			}
		}
	}
}

// watch pokes the loop on every change under the prefix.
func (n *Node) watch(ctx context.Context) {
	for ctx.Err() == nil {
		wch := n.cli.Watch(clientv3.WithRequireLeader(ctx), n.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		for resp := range wch {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				if !strings.HasPrefix(string(ev.Kv.Key), n.cfg.Prefix+"calls/") {
					n.poke()
					break
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(n.requestTimeout()):
		}
	}
}

// checkFence fences the node when the deadline passed.
func (n *Node) checkFence() {
	n.mu.Lock()
	late := n.lease != 0 && !n.fenced && !time.Now().Before(n.validUntil)
	n.mu.Unlock()
	if late {
		n.fence("fenced", "lease not renewed in time")
	}
}

// fence drops every gateway (reason "fenced" or "lost").
func (n *Node) fence(reason, why string) {
	now := time.Now()
	n.mu.Lock()
	var changes []Change
	for g, rev := range n.owned {
		changes = append(changes, Change{Gateway: g, Owned: false, Reason: reason, Revision: rev, At: now})
	}
	clear(n.owned)
	clear(n.releasing)
	n.fenced = true
	n.mu.Unlock()
	if reason == "fenced" || reason == "lost" {
		n.stats.fences.Add(1)
	}
	if len(changes) > 0 {
		n.log.WithField("gateways", len(changes)).Warn("cluster: stopped commanding gateways: " + why)
	}
	n.emit(changes)
}

func (n *Node) emit(changes []Change) {
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Gateway, b.Gateway) })
	for _, c := range changes {
		n.stats.change(c.Reason)
		n.log.WithFields(logrus.Fields{"gateway": c.Gateway, "owned": c.Owned, "reason": c.Reason}).Debug("cluster: ownership changed")
		if n.cfg.OnChange != nil {
			n.cfg.OnChange(c)
		}
	}
}

// snapshot reads nodes and gateway owners in one consistent read.
func (n *Node) snapshot(ctx context.Context) (map[string]NodeInfo, map[string]ownerRecord, int64, error) {
	resp, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(n.cfg.Prefix+"nodes/", clientv3.WithPrefix()),
		clientv3.OpGet(n.cfg.Prefix+"gateways/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, nil, 0, err
	}
	nodes, owners, _ := n.parseSnapshot(resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs)
	return nodes, owners, resp.Header.Revision, nil
}

// IgnoredKey is a key under the cluster's prefix that the nodes do not
// act on as it stands, and why.
type IgnoredKey struct {
	Key string `json:"key"`
	Why string `json:"why"`
}

// warnInterval is how often one key's warning may be logged: reconcile
// runs twice a TTL on every node, and a foreign key would otherwise be
// logged as often.
const warnInterval = 5 * time.Minute

// warnKey logs a warning about key at most once per warnInterval.
func (n *Node) warnKey(key string, err error, msg string) {
	now := time.Now()
	n.warnMu.Lock()
	last, seen := n.warned[key]
	if seen && now.Sub(last) < warnInterval {
		n.warnMu.Unlock()
		return
	}
	if len(n.warned) > 1000 {
		for k, t := range n.warned {
			if now.Sub(t) >= warnInterval {
				delete(n.warned, k)
			}
		}
	}
	n.warned[key] = now
	n.warnMu.Unlock()
	n.log.WithError(err).WithField("key", key).Warn(msg)
}

// parseSnapshot decodes the node keys and the gateway keys. A node key
// counts only when it decodes, names itself and is attached to a lease (a
// lease-less key is nobody's membership: it never expires). A gateway key
// that does not decode is still an owner for the transactions (the key
// exists), marked unreadable. ignored lists what is not taken as it
// stands.
func (n *Node) parseSnapshot(nodeKvs, gatewayKvs []*mvccpb.KeyValue) (map[string]NodeInfo, map[string]ownerRecord, []IgnoredKey) {
	var ignored []IgnoredKey
	nodes := map[string]NodeInfo{}
	for _, kv := range nodeKvs {
		var info NodeInfo
		err := json.Unmarshal(kv.Value, &info)
		switch {
		case err == nil && (info.Name == "" || string(kv.Key) != n.nodeKey(info.Name)):
			err = fmt.Errorf("names node %q", info.Name)
		case err == nil && kv.Lease == 0:
			err = errors.New("not attached to a lease")
		}
		if err != nil {
			ignored = append(ignored, IgnoredKey{Key: string(kv.Key), Why: "node key " + err.Error()})
			n.warnKey(string(kv.Key), &DecodeError{Key: string(kv.Key), Err: err}, "cluster: ignoring a node key")
			continue
		}
		info.rev, info.lease = kv.CreateRevision, clientv3.LeaseID(kv.Lease)
		nodes[info.Name] = info
	}
	owners := map[string]ownerRecord{}
	gwPrefix := n.cfg.Prefix + "gateways/"
	for _, kv := range gatewayKvs {
		gw, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), gwPrefix))
		var v ownerValue
		if err == nil {
			err = json.Unmarshal(kv.Value, &v)
		}
		if err == nil && v.Node == "" {
			err = errors.New("names no node")
		}
		if err != nil {
			// Still an owner for the transactions (the key exists), but
			// nobody we could name.
			ignored = append(ignored, IgnoredKey{Key: string(kv.Key), Why: "unreadable gateway key: " + err.Error()})
			n.warnKey(string(kv.Key), &DecodeError{Key: string(kv.Key), Err: err}, "cluster: unreadable gateway key")
		} else if kv.Lease == 0 {
			ignored = append(ignored, IgnoredKey{Key: string(kv.Key), Why: "gateway key not attached to a lease"})
		}
		owners[gw] = ownerRecord{ownerValue: v, lease: clientv3.LeaseID(kv.Lease), createRev: kv.CreateRevision,
			modRev: kv.ModRevision, unreadable: err != nil}
	}
	return nodes, owners, ignored
}

// staleOwner says whether a gateway key holds the gateway for nobody: it
// has no lease (every node attaches its ownership keys to its lease, so
// the key would never expire), or it is unreadable and its lease is not a
// live node's. lease is this node's (0: none, for a reader).
func staleOwner(o ownerRecord, nodes map[string]NodeInfo, lease clientv3.LeaseID) bool {
	if lease != 0 && o.lease == lease {
		return false
	}
	if o.lease == 0 {
		return true
	}
	if !o.unreadable {
		return false
	}
	for _, info := range nodes {
		if info.lease == o.lease {
			return false
		}
	}
	return true
}

// freeStale deletes the configured gateways' keys that hold them for
// nobody (staleOwner), each in a transaction guarded by the key's mod
// revision (a key rewritten meanwhile stays), and drops those deleted
// from owners: the gateway is free for this reconciliation.
func (n *Node) freeStale(ctx context.Context, gateways []string, nodes map[string]NodeInfo, owners map[string]ownerRecord, lease clientv3.LeaseID) {
	for _, g := range gateways {
		o, ok := owners[g]
		if !ok || !staleOwner(o, nodes, lease) {
			continue
		}
		key := n.gatewayKey(g)
		resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", o.modRev)).
			Then(clientv3.OpDelete(key)).Commit()
		if err != nil || !resp.Succeeded {
			continue // changed meanwhile, or etcd busy: the next round sees
		}
		n.log.WithFields(logrus.Fields{"gateway": g, "key": key, "lease": fmt.Sprintf("%x", int64(o.lease))}).
			Warn("cluster: deleted an ownership key that held the gateway for no live node; the gateway is free")
		delete(owners, g)
	}
}

// reconcile reads the cluster's state and acts on it: adopts keys under
// its lease, notices losses, takes free gateways it should own (or that
// stayed free too long), hands over idle gateways another node should
// own, and releases every idle gateway while draining.
func (n *Node) reconcile(ctx context.Context) {
	n.mu.Lock()
	if !n.entitledLocked(time.Now()) || n.leaseGone {
		n.mu.Unlock()
		return
	}
	lease := n.lease
	n.mu.Unlock()

	rctx, cancel := n.opContext(ctx)
	defer cancel()
	nodes, owners, snapRev, err := n.snapshot(rctx)
	if err != nil {
		n.log.WithError(err).Debug("cluster: reading the cluster's state failed")
		return
	}
	n.mu.Lock()
	gateways := slices.Clone(n.gateways)
	n.mu.Unlock()
	n.freeStale(rctx, gateways, nodes, owners, lease)
	now := time.Now()

	n.mu.Lock()
	n.nodes, n.owners = nodes, owners
	preference := n.cfg.Preference
	draining := n.draining
	_, listed := nodes[n.cfg.Name]
	rewrite := !listed && !n.left
	info := n.infoLocked()
	var candidates []string
	for name, info := range nodes {
		if !info.Draining && name != n.cfg.Name {
			candidates = append(candidates, name)
		}
	}
	if !draining {
		// This node is alive whatever its key says (the key may have been
		// deleted by hand and not written again yet).
		candidates = append(candidates, n.cfg.Name)
	}
	slices.Sort(candidates)
	var changes []Change
	var release, acquire []string
	configured := map[string]bool{}
	for _, g := range gateways {
		configured[g] = true
		o, has := owners[g]
		mine := has && o.lease == lease
		if _, ok := n.releasing[g]; ok {
			if mine {
				release = append(release, g)
				continue
			}
			delete(n.releasing, g)
		}
		_, held := n.owned[g]
		switch {
		case mine && !held:
			n.owned[g] = o.createRev
			n.basis[g] = o.createRev
			changes = append(changes, Change{Gateway: g, Owned: true, Reason: "resumed", Revision: o.createRev, At: now})
			held = true
		case !mine && held:
			delete(n.owned, g)
			changes = append(changes, Change{Gateway: g, Owned: false, Reason: "lost", Revision: o.createRev, At: now})
			held = false
		}
		switch {
		case held:
			// Hand an idle gateway over to a better node only when this
			// node did not know the better one when it took the gateway
			// (it joined later): one that was known already had its
			// chance (it may not have the gateway in its configuration),
			// and so gateways do not bounce.
			want := pick(g, candidates, preference[g])
			better := want != "" && want != n.cfg.Name && nodes[want].rev > n.basis[g]
			if (draining || better) && n.idle(g) {
				release = append(release, g)
			}
		case !has && !draining:
			acquire = append(acquire, g)
		}
	}
	for g := range n.owned {
		if !configured[g] {
			release = append(release, g)
		}
	}
	for g := range n.releasing {
		if !configured[g] && owners[g].lease == lease {
			release = append(release, g) // a failed release, tried again
		}
	}
	// Mark what is released as not owned before the callback and before
	// the key goes: the lines stop first.
	for _, g := range release {
		if rev, ok := n.owned[g]; ok {
			delete(n.owned, g)
			n.releasing[g] = rev
			changes = append(changes, Change{Gateway: g, Owned: false, Reason: "released", Revision: rev, At: now})
		} else if owners[g].lease == lease {
			n.releasing[g] = owners[g].createRev
		}
	}
	n.mu.Unlock()
	n.emit(changes)

	if rewrite {
		// Our node key is gone although the lease lives (deleted by
		// hand): write it again.
		val, _ := json.Marshal(info)
		if _, err := n.cli.Put(rctx, n.nodeKey(n.cfg.Name), string(val), clientv3.WithLease(lease)); err != nil {
			n.log.WithError(err).Debug("cluster: rewriting the node key failed")
		}
	}
	for _, g := range release {
		n.release(ctx, g, lease)
	}
	slices.Sort(acquire)
	for _, g := range acquire {
		want := pick(g, candidates, preference[g])
		if want != n.cfg.Name && !n.freeTooLong(g, now) {
			continue
		}
		n.acquire(ctx, g, lease, snapRev)
	}
	n.forgetFree(owners)
}

func (n *Node) idle(g string) bool { return n.cfg.Idle == nil || n.cfg.Idle(g) }

func (n *Node) freeTooLong(g string, now time.Time) bool {
	since, ok := n.freeSince[g]
	if !ok {
		n.freeSince[g] = now
		return false
	}
	return now.Sub(since) > n.cfg.TTL
}

func (n *Node) forgetFree(owners map[string]ownerRecord) {
	for g := range n.freeSince {
		if _, ok := owners[g]; ok {
			delete(n.freeSince, g)
		}
	}
}

// acquire takes a free gateway with the create-if-absent transaction.
func (n *Node) acquire(ctx context.Context, g string, lease clientv3.LeaseID, basis int64) {
	n.mu.Lock()
	ok := n.entitledLocked(time.Now()) && n.lease == lease && !n.draining
	val, _ := json.Marshal(ownerValue{Node: n.cfg.Name, MGCPAddr: n.cfg.MGCPAddr, SIPAddr: n.cfg.SIPAddr, Since: time.Now().UTC()})
	n.mu.Unlock()
	if !ok {
		return
	}
	key := n.gatewayKey(g)
	ctx, cancel := n.opContext(ctx)
	defer cancel()
	resp, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		if isLeaseNotFound(err) {
			n.mu.Lock()
			if n.lease == lease {
				n.leaseGone = true
			}
			n.mu.Unlock()
			n.poke()
		}
		n.log.WithError(err).WithField("gateway", g).Debug("cluster: taking the gateway failed")
		return
	}
	if !resp.Succeeded {
		return // someone else was faster
	}
	rev := resp.Header.Revision // the put created the key at this revision
	now := time.Now()
	n.mu.Lock()
	if n.lease != lease {
		n.mu.Unlock()
		return
	}
	n.owned[g] = rev
	n.basis[g] = basis
	n.owners[g] = ownerRecord{ownerValue: ownerValue{Node: n.cfg.Name, MGCPAddr: n.cfg.MGCPAddr, SIPAddr: n.cfg.SIPAddr}, lease: lease, createRev: rev}
	delete(n.freeSince, g)
	n.mu.Unlock()
	n.log.WithFields(logrus.Fields{"gateway": g, "revision": rev}).Info("cluster: gateway acquired")
	n.emit([]Change{{Gateway: g, Owned: true, Reason: "acquired", Revision: rev, At: now}})
}

// release deletes a gateway key this node created (guarded by its
// revision); a failure is retried by the next reconciliation.
func (n *Node) release(ctx context.Context, g string, lease clientv3.LeaseID) {
	n.mu.Lock()
	rev, ok := n.releasing[g]
	n.mu.Unlock()
	if !ok {
		return
	}
	key := n.gatewayKey(g)
	ctx, cancel := n.opContext(ctx)
	defer cancel()
	resp, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev), clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		n.log.WithError(err).WithField("gateway", g).Debug("cluster: releasing the gateway failed")
		return
	}
	n.mu.Lock()
	delete(n.releasing, g)
	delete(n.owners, g)
	n.mu.Unlock()
	if resp.Succeeded {
		n.log.WithField("gateway", g).Info("cluster: gateway released")
	}
}

// Drain marks the node draining (others stop placing gateways on it, it
// takes none) and releases each gateway once Config.Idle says it is idle.
// It returns nil when the node owns nothing, or ErrBusy (with ctx's error)
// when ctx ends first; the node stays draining either way.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	n.draining = true
	lease := n.lease
	info := n.infoLocked()
	n.mu.Unlock()
	if lease != 0 {
		val, _ := json.Marshal(info)
		rctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
		_, err := n.cli.Put(rctx, n.nodeKey(n.cfg.Name), string(val), clientv3.WithLease(lease))
		cancel()
		if err != nil {
			n.log.WithError(err).Warn("cluster: could not mark the node draining")
		}
	}
	n.poke()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n.mu.Lock()
		left := len(n.owned) + len(n.releasing)
		n.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d gateways: %w", ErrBusy, left, ctx.Err())
		case <-n.done:
			return ErrClosed
		case <-tick.C:
			n.poke()
		}
	}
}

// Leave ends the membership gracefully: every gateway is reported lost,
// then the lease is revoked, which deletes the node key and its gateway
// keys at once, so the other nodes take them without waiting for the TTL.
// Stored calls stay (they are under the store lease) for the next owners.
func (n *Node) Leave(ctx context.Context) error {
	n.mu.Lock()
	n.left = true
	lease := n.lease
	n.mu.Unlock()
	n.fence("released", "leaving the cluster")
	if lease == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, n.requestTimeout()+n.cfg.DialTimeout)
	defer cancel()
	if _, err := n.cli.Revoke(rctx, lease); err != nil && !isLeaseNotFound(err) {
		return fmt.Errorf("cluster: revoke lease: %w", err)
	}
	n.mu.Lock()
	if n.lease == lease {
		n.lease = 0
	}
	n.mu.Unlock()
	n.log.Info("cluster: left")
	return nil
}

// Close stops Run and closes the connection to etcd; it does not revoke
// the lease (call Leave first for that). Idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.done)
		n.closeErr = n.cli.Close()
	})
	return n.closeErr
}
