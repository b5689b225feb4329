package bridge

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mapping"
	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/sip"
)

// What the admin API reads and the actions it takes. Line state belongs to
// the line's goroutine, which publishes a copy after every input; readers
// take the copy and never touch the line.

// LineStatus is a line's published state.
type LineStatus struct {
	ID       string      `json:"id"`
	Endpoint string      `json:"endpoint"`
	Gateway  string      `json:"gateway"`
	User     string      `json:"user,omitempty"`
	Trunk    string      `json:"trunk,omitempty"`
	State    string      `json:"state"`
	OffHook  bool        `json:"off_hook"`
	Call     *CallStatus `json:"call,omitempty"`
	// Registration is filled by Lines from the registrations.
	Registration *RegistrationStatus `json:"registration,omitempty"`
}

// RegistrationStatus is a line's SIP registration as the API shows it.
type RegistrationStatus struct {
	State       string    `json:"state"` // pending, registering, registered, retrying, failed, unregistered
	Reason      string    `json:"reason,omitempty"`
	Code        int       `json:"code,omitempty"` // last SIP status, absent when there was no answer
	Expires     time.Time `json:"expires,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Failures    int       `json:"failures"`
	Algorithm   string    `json:"algorithm,omitempty"`
}

func registrationStatus(rs sip.RegStatus) *RegistrationStatus {
	return &RegistrationStatus{State: rs.State.String(), Reason: rs.Reason, Code: rs.Code, Expires: rs.Expires,
		NextAttempt: rs.NextAttempt, Failures: rs.Failures, Algorithm: rs.Algorithm}
}

// CallStatus describes a call in progress on one line.
type CallStatus struct {
	ID           string    `json:"id"` // MGCP call id
	Line         string    `json:"line"`
	Direction    string    `json:"direction"`
	Number       string    `json:"number"`
	SIPCallID    string    `json:"sip_call_id,omitempty"`
	ConnectionID string    `json:"connection_id,omitempty"`
	Codecs       []string  `json:"codecs,omitempty"`
	Started      time.Time `json:"started"`
	Answered     time.Time `json:"answered,omitzero"`
	Peer         string    `json:"peer_line,omitempty"` // locally switched: the other line
	// Held: the call is on hold although it is the line's current call,
	// because the gateway refused to take its connection off hold (the
	// next flash tries again).
	Held bool `json:"held,omitempty"`
}

// publish stores a copy of the line's state for readers.
func (l *line) publish() {
	l.publishConns()
	l.publishReferPolicy()
	st := &LineStatus{ID: l.rule.ID, Endpoint: l.ep.String(), Gateway: l.rule.Gateway.Name, User: l.rule.User,
		State: l.state.String()}
	if l.trunk != nil {
		st.Trunk = l.trunk.Name
	}
	st.OffHook = l.offHook && l.trunk == nil
	if c := l.call; c != nil {
		cs := &CallStatus{ID: c.id, Line: l.rule.ID, Direction: c.direction, Number: c.number, ConnectionID: c.connID, Held: c.resumeRefused,
			Codecs: c.codecs, Started: c.start.Truncate(time.Millisecond), Answered: c.answered.Truncate(time.Millisecond)}
		if c.dialog != nil {
			cs.SIPCallID = c.dialog.CallID
		}
		if c.peer != nil {
			cs.Peer = c.peer.rule.ID
		}
		st.Call = cs
	}
	l.status.Store(st)
}

// Lines returns every line's state, sorted by id.
func (b *Bridge) Lines() []LineStatus {
	b.mu.Lock()
	lines := make([]*line, 0, len(b.byID))
	for _, l := range b.byID {
		lines = append(lines, l)
	}
	b.mu.Unlock()
	out := make([]LineStatus, 0, len(lines))
	for _, l := range lines {
		st := l.status.Load()
		if st == nil {
			st = &LineStatus{ID: l.rule.ID, Endpoint: l.ep.String(), Gateway: l.rule.Gateway.Name, User: l.rule.User, State: "starting"}
		}
		cp := *st
		if b.regs != nil && l.trunk == nil {
			if rs, ok := b.regs.Status(l.rule.ID); ok {
				cp.Registration = registrationStatus(rs)
			}
		}
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool { return NaturalLess(out[i].ID, out[j].ID) })
	return out
}

// NaturalLess orders names with numbers the way people read them:
// aaln/2 before aaln/10, ds/ds1-1/9 before ds/ds1-1/10.
func NaturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digitsPrefix(a), digitsPrefix(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitsPrefix(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// SIPCallIDOf returns the SIP Call-ID of the call in progress on an
// endpoint (its name, local@domain), or "": what the HEP tap puts in the
// correlation chunk of the endpoint's MGCP messages.
func (b *Bridge) SIPCallIDOf(endpoint string) string {
	l := b.lineByEndpoint(endpoint)
	if l == nil {
		return ""
	}
	if st := l.status.Load(); st != nil && st.Call != nil {
		return st.Call.SIPCallID
	}
	return ""
}

// Calls returns the calls in progress, one entry per line involved.
func (b *Bridge) Calls() []CallStatus {
	var out []CallStatus
	for _, l := range b.Lines() {
		if l.Call != nil {
			out = append(out, *l.Call)
		}
	}
	return out
}

// Errors of the admin actions.
var (
	ErrNoSuchLine    = errors.New("bridge: no such line")
	ErrNoSuchCall    = errors.New("bridge: no such call")
	ErrNoSuchGateway = errors.New("bridge: no such gateway")
)

func (b *Bridge) line(id string) (*line, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.byID[id]; l != nil {
		return l, nil
	}
	return nil, fmt.Errorf("%w %q", ErrNoSuchLine, id)
}

// Audit sends AUEP to an endpoint (a line id or an endpoint name) asking
// for its requested events, signals, connections and hook state, and
// returns the gateway's answer.
func (b *Bridge) Audit(ctx context.Context, endpoint string) (*mgcp.Response, error) {
	var l *line
	if found, err := b.line(endpoint); err == nil {
		l = found
	} else {
		l = b.lineByEndpoint(endpoint)
	}
	if l == nil {
		return nil, fmt.Errorf("%w %q", ErrNoSuchLine, endpoint)
	}
	return b.cfg.CallAgent.AuditEndpoint(ctx, b.gatewayAddr(l.rule.Gateway), l.ep, "R", "S", "I", "ES")
}

// Reregister restarts a line's registration.
func (b *Bridge) Reregister(id string) error {
	l, err := b.line(id)
	if err != nil {
		return err
	}
	if b.regs == nil || l.trunk != nil || l.rule.Peer == nil || !l.rule.Peer.Register {
		return errors.New("bridge: the line does not register")
	}
	b.regs.Remove(id)
	b.regs.Add(l.account())
	return nil
}

// Rearm audits and re-arms a line without a call; a line in a call
// answers ErrLineBusy (a *BusyError naming its state).
func (b *Bridge) Rearm(ctx context.Context, id string) error {
	l, err := b.line(id)
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	l.postWait(func() {
		if l.call != nil || l.other != nil {
			res <- &BusyError{Line: l.rule.ID, State: l.state.String()}
			return
		}
		l.resynchronise(false)
		if l.state == stRestarting {
			res <- errors.New("bridge: the gateway did not answer the audit")
			return
		}
		res <- nil
	})
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrLineBusy is wrapped by BusyError: the line has a call.
var ErrLineBusy = errors.New("bridge: the line is in a call")

// BusyError says why an action cannot touch a line now.
type BusyError struct {
	Line, State string
}

func (e *BusyError) Error() string {
	return "bridge: line " + e.Line + " is in a call (" + e.State + ")"
}

// Unwrap returns ErrLineBusy.
func (e *BusyError) Unwrap() error { return ErrLineBusy }

// HangUp ends a call (by MGCP call id or SIP Call-ID) on every line it
// involves; the phones hear reorder until they hang up.
func (b *Bridge) HangUp(id string) error {
	found := false
	for _, st := range b.Lines() {
		c := st.Call
		if c == nil || (c.ID != id && c.SIPCallID != id) {
			continue
		}
		l, err := b.line(st.ID)
		if err != nil {
			continue
		}
		found = true
		callID := c.ID
		l.postWait(func() {
			if l.call != nil && l.call.id == callID {
				l.call.result = "hung up by the operator"
				l.endCall(l.call.result, false)
				if l.other != nil {
					l.afterActiveEnded(!l.offHook)
					return
				}
				l.settle("L/ro")
			}
		})
	}
	if !found {
		return fmt.Errorf("%w %q", ErrNoSuchCall, id)
	}
	return nil
}

// SetGatewayDrain stops (on) or resumes (off) new calls on a gateway;
// calls in progress go on. With hangUp its calls are ended too (disable).
func (b *Bridge) SetGatewayDrain(name string, on, hangUp bool) error {
	rules := b.cfg.Rules.Load()
	gw := rules.Gateway(name)
	if gw == nil {
		return fmt.Errorf("%w %q", ErrNoSuchGateway, name)
	}
	b.mu.Lock()
	b.healthOf(gw).drained = on
	b.mu.Unlock()
	b.touch(gw)
	if on && hangUp {
		for _, st := range b.Lines() {
			if st.Gateway == name && st.Call != nil {
				_ = b.HangUp(st.Call.ID)
			}
		}
	}
	return nil
}

// Drain stops new calls on every gateway (shutdown): incoming calls get
// 480, a phone going off hook hears reorder. Calls in progress go on.
func (b *Bridge) Drain() {
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
	for _, gw := range b.cfg.Rules.Load().Gateways {
		b.touch(gw)
	}
}

// touch has every line of the gateway bring its request up to date (an
// idle line's request depends on whether the gateway takes new calls).
func (b *Bridge) touch(gw *mapping.GatewayRule) {
	for _, l := range b.linesOf(gw) {
		if l.trunk == nil {
			l.post(func() {})
		}
	}
}

// Draining reports whether Drain was called.
func (b *Bridge) Draining() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.draining
}

// accepting reports whether the gateway takes new calls.
func (b *Bridge) accepting(gw *mapping.GatewayRule) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.draining {
		return false
	}
	h := b.health[gw.Name]
	return h == nil || (!h.down && !h.drained)
}
