package sip

import (
	"context"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// slogToLogrus routes sipgo's slog output into a logrus entry, so the
// process has one logger (architecture: "sipgo's slog output is routed into
// logrus").
type slogToLogrus struct {
	log   *logrus.Entry
	attrs logrus.Fields
	group string
}

func newSlogLogger(l *logrus.Entry) *slog.Logger {
	return slog.New(&slogToLogrus{log: l, attrs: logrus.Fields{}})
}

func slogLevel(l logrus.Level) slog.Level {
	switch {
	case l >= logrus.DebugLevel:
		return slog.LevelDebug
	case l >= logrus.InfoLevel:
		return slog.LevelInfo
	case l >= logrus.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (h *slogToLogrus) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slogLevel(h.log.Logger.GetLevel())
}

func (h *slogToLogrus) Handle(_ context.Context, r slog.Record) error {
	fields := make(logrus.Fields, len(h.attrs)+r.NumAttrs())
	for k, v := range h.attrs {
		fields[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		fields[h.key(a.Key)] = a.Value.Any()
		return true
	})
	e := h.log.WithFields(fields)
	switch {
	case r.Level >= slog.LevelError:
		e.Error(r.Message)
	case r.Level >= slog.LevelWarn:
		e.Warn(r.Message)
	case r.Level >= slog.LevelInfo:
		e.Info(r.Message)
	default:
		e.Debug(r.Message)
	}
	return nil
}

func (h *slogToLogrus) key(k string) string {
	if h.group != "" {
		return h.group + "." + k
	}
	return k
}

func (h *slogToLogrus) WithAttrs(as []slog.Attr) slog.Handler {
	n := &slogToLogrus{log: h.log, group: h.group, attrs: logrus.Fields{}}
	for k, v := range h.attrs {
		n.attrs[k] = v
	}
	for _, a := range as {
		n.attrs[h.key(a.Key)] = a.Value.Any()
	}
	return n
}

func (h *slogToLogrus) WithGroup(name string) slog.Handler {
	n := &slogToLogrus{log: h.log, attrs: h.attrs, group: name}
	if h.group != "" {
		n.group = h.group + "." + name
	}
	return n
}
