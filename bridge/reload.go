package bridge

import (
	"sort"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/sip"
)

// ApplyReport says what a reload did to the lines (by line id).
type ApplyReport struct {
	// Added lines start: audited, armed, registered.
	Added []string `json:"added"`
	// Removed lines are retired once idle (unregistered; a call in
	// progress ends first).
	Removed []string `json:"removed"`
	// Changed lines were idle and took their new rule at once; Deferred
	// lines have a call and take it when the call ends. Each maps the
	// line to what changed (mapping.LineRule.Changes).
	Changed  map[string][]string `json:"changed"`
	Deferred map[string][]string `json:"deferred"`
}

// Update brings the lines in line with new rules after a reload (the
// Holder already serves them to routing) and reports what it did. A line
// whose rule changed is replaced by a line with the new rule when it is
// idle: at once, or when its call ends; the new line is audited and
// armed (its digit map and features apply from then on), and when its
// SIP account changed the old one is unregistered before the new one
// registers. Trunk channels are not replaced (see the daemon's report).
func (b *Bridge) Update(rules *mapping.Rules) ApplyReport {
	rep := ApplyReport{Changed: map[string][]string{}, Deferred: map[string][]string{}}
	b.mu.Lock()
	ctx := b.ctx
	if ctx == nil {
		b.mu.Unlock()
		return rep
	}
	want := map[string]*mapping.LineRule{}
	for _, lr := range rules.Lines {
		want[strings.ToLower(lr.EndpointName())] = lr
	}
	type change struct {
		old, next *line
		what      []string
	}
	var starts, retires []*line
	var changes []change
	for key, lr := range want {
		l, ok := b.lines[key]
		if !ok {
			l := newLine(b, lr)
			b.lines[key] = l
			b.byUser[lr.User] = l
			b.byID[lr.ID] = l
			starts = append(starts, l)
			rep.Added = append(rep.Added, lr.ID)
			continue
		}
		if l.trunk != nil {
			continue
		}
		// Compared with the rule the line will have: a successor given
		// by an earlier reload may still wait for the line to be idle.
		now := l.rule
		if next, ok := b.replacing[key]; ok {
			now = next.rule
		}
		if what := now.Changes(lr); len(what) > 0 {
			next := newLine(b, lr)
			b.replacing[key] = next
			changes = append(changes, change{old: l, next: next, what: l.rule.Changes(lr)})
		}
	}
	for key, l := range b.lines {
		if _, ok := want[key]; !ok && l.trunk == nil {
			delete(b.lines, key)
			delete(b.replacing, key)
			if b.byUser[l.rule.User] == l {
				delete(b.byUser, l.rule.User)
			}
			delete(b.byID, l.rule.ID)
			retires = append(retires, l)
			rep.Removed = append(rep.Removed, l.rule.ID)
		}
	}
	b.mu.Unlock()
	for _, l := range starts {
		b.start(l)
	}
	for _, l := range retires {
		l.postWait(l.retire)
		if b.regs != nil {
			b.regs.Remove(l.rule.ID)
		}
	}
	for _, c := range changes {
		// What the line published last tells whether it waits for a call
		// to end; the line itself decides, on its goroutine.
		if st := c.old.status.Load(); st != nil && (st.Call != nil || st.State != stIdle.String()) {
			rep.Deferred[c.old.rule.ID] = c.what
		} else {
			rep.Changed[c.old.rule.ID] = c.what
		}
		old, next := c.old, c.next
		old.postWait(func() {
			old.successor = next
			old.retire()
		})
	}
	sort.Strings(rep.Added)
	sort.Strings(rep.Removed)
	return rep
}

// install puts a line's successor in its place once the old line has
// quit (on the old line's goroutine, after its last input): the new line
// takes the maps, its account replaces the old one, and it is audited
// and armed.
func (b *Bridge) install(old, next *line) {
	b.mu.Lock()
	key := strings.ToLower(next.rule.EndpointName())
	// The newest successor wins: a later reload may have given the line
	// another one before this one got its turn.
	if newest, ok := b.replacing[key]; ok {
		next = newest
		delete(b.replacing, key)
	}
	if b.lines[key] != old || b.stopping {
		// Removed or replaced again by a later reload meanwhile.
		b.mu.Unlock()
		return
	}
	next.issued.carry(&old.issued)
	b.lines[key] = next
	if b.byUser[old.rule.User] == old {
		delete(b.byUser, old.rule.User)
	}
	b.byUser[next.rule.User] = next
	b.byID[next.rule.ID] = next
	b.mu.Unlock()
	next.log.WithField("changed", strings.Join(old.rule.Changes(next.rule), ",")).Info("line takes its new configuration")
	b.reregister(old, next)
	next.postWait(next.begin)
}

// reregisterWait bounds how long a changed account waits for the old
// one's unregistration before it registers anyway.
const reregisterWait = 40 * time.Second

// reregister moves a line's registration from its old account to its
// new one. Registrations keep one entry per line id, so a new identity
// (user, auth user, registrar) registers only once the old binding is
// gone (Expires: 0 answered, or given up), and the PBX never holds both.
func (b *Bridge) reregister(old, next *line) {
	if b.regs == nil || !b.cfg.Register {
		return
	}
	was := old.rule.Peer != nil && old.rule.Peer.Register
	is := next.rule.Peer != nil && next.rule.Peer.Register
	oa, na := old.account(), next.account()
	if is && b.gatewayDown(next.rule.Gateway) {
		// The lines of a gateway marked down stay unregistered (the PBX
		// would send calls to a phone nobody can reach); the new account
		// registers when the gateway answers again (onGatewayBack).
		if was {
			b.regs.Remove(oa.ID)
		}
		return
	}
	switch {
	case !was && !is:
	case !was:
		b.regs.Add(na)
	case !is:
		b.regs.Remove(oa.ID)
	case sameBinding(oa, na):
		if oa != na {
			b.regs.Add(na) // new password or display name: the same binding, refreshed
		}
	default:
		b.regs.Remove(oa.ID)
		if !b.track() {
			return
		}
		go func() {
			defer b.wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			deadline := time.Now().Add(reregisterWait)
			for time.Now().Before(deadline) {
				if _, still := b.regs.Status(oa.ID); !still {
					break
				}
				select {
				case <-b.ctx.Done():
					return
				case <-tick.C:
				}
			}
			b.regs.Add(na)
		}()
	}
}

func sameBinding(a, b sip.Account) bool {
	return a.User == b.User && a.AuthUser == b.AuthUser && a.Registrar == b.Registrar && a.Transport == b.Transport &&
		a.Domain == b.Domain
}
