package daemon

import (
	"context"
	"strconv"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// systemd integration (Type=notify): sd_notify states and the watchdog.
// Outside systemd (no NOTIFY_SOCKET) these do nothing.

func sdNotify(log *logrus.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.WithError(err).Debug("sd_notify failed")
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which RELOADING=1
// must carry (systemd.service Type=notify-reload).
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "0"
	}
	return strconv.FormatInt(ts.Sec*1_000_000+ts.Nsec/1000, 10)
}

// watchdog pings systemd's watchdog at half its interval until ctx ends.
func watchdog(ctx context.Context, log *logrus.Logger) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sdNotify(log, "WATCHDOG=1")
		}
	}
}
