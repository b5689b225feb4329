package bridge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/mgsip/mgsip/mgcp/mgcptest"
)

// lineHook keeps the messages of warnings and errors.
type lineHook struct{ c chan string }

func (h *lineHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}
func (h *lineHook) Fire(e *logrus.Entry) error {
	select {
	case h.c <- e.Message:
	default:
	}
	return nil
}

// TestDeadGatewayLogsOnce: a 24-port gateway that dies while its lines
// are idle is one warning (and one when it is back), not one per line.
func TestDeadGatewayLogsOnce(t *testing.T) {
	hook := &lineHook{c: make(chan string, 1000)}
	logger := logrus.New()
	logger.SetOutput(discard{})
	logger.AddHook(hook)
	log := logrus.NewEntry(logger)
	e := newEnv(t, envOptions{lines: 24, log: log, keepalive: time.Second, caOpts: []mgcp.Option{mgcp.WithLogger(log)},
		mgcp: mgcp.Config{TMax: 1500 * time.Millisecond, MaxRTO: 500 * time.Millisecond}})
	for len(hook.c) > 0 {
		<-hook.c
	}
	_ = e.gw.Close()
	e.waitFor("gateway marked down", func() bool {
		for _, g := range e.b.Gateways() {
			if g.Down {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second) // more keepalives go unanswered
	var msgs []string
	for len(hook.c) > 0 {
		msgs = append(msgs, <-hook.c)
	}
	if len(msgs) > 2 {
		t.Errorf("%d warnings for one dead gateway:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	t.Logf("warnings: %q", msgs)
}

// TestDeadGatewayAtStartLogsOnce: mgsip starting with a 24-port gateway
// that does not answer logs it once, not once per line.
func TestDeadGatewayAtStartLogsOnce(t *testing.T) {
	hook := &lineHook{c: make(chan string, 1000)}
	logger := logrus.New()
	logger.SetOutput(discard{})
	logger.AddHook(hook)
	log := logrus.NewEntry(logger)
	e := newEnv(t, envOptions{lines: 24, log: log, noWait: true, caOpts: []mgcp.Option{mgcp.WithLogger(log)},
		mgcp:   mgcp.Config{TMax: 1500 * time.Millisecond, MaxRTO: 500 * time.Millisecond},
		before: func(gw *mgcptest.Gateway) { _ = gw.Close() }})
	e.waitFor("gateway marked down", func() bool {
		for _, g := range e.b.Gateways() {
			if g.Down {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second)
	var msgs []string
	for len(hook.c) > 0 {
		msgs = append(msgs, <-hook.c)
	}
	if len(msgs) > 2 {
		t.Errorf("%d warnings for one dead gateway:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	t.Logf("warnings: %q", msgs)
}
