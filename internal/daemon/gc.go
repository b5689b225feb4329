package daemon

import (
	"os"
	"runtime/debug"

	"github.com/sirupsen/logrus"

	"github.com/mgsip/mgsip/internal/config"
)

// applyGC sets the garbage collector's policy from daemon.gogc and
// daemon.memory_limit_mb, unless the GOGC or GOMEMLIMIT environment
// variable is set: an operator's environment wins over the file, as it
// does for any Go program. It returns a function restoring the previous
// settings (tests run several daemons in one process).
func applyGC(c config.Daemon, log *logrus.Logger) (restore func()) {
	gogc, fromEnvGC := os.LookupEnv("GOGC")
	limit, fromEnvLimit := os.LookupEnv("GOMEMLIMIT")
	prevGC, prevLimit := -2, int64(-1)
	f := logrus.Fields{"component": "daemon"}
	if fromEnvGC {
		f["gogc"] = gogc + " (GOGC)"
	} else if c.GOGC != 0 {
		prevGC = debug.SetGCPercent(c.GOGC)
		f["gogc"] = c.GOGC
	}
	if fromEnvLimit {
		f["memory_limit"] = limit + " (GOMEMLIMIT)"
	} else if c.MemoryLimitMB > 0 {
		prevLimit = debug.SetMemoryLimit(c.MemoryLimitMB << 20)
		f["memory_limit_mb"] = c.MemoryLimitMB
	}
	log.WithFields(f).Info("garbage collector policy")
	return func() {
		if prevGC != -2 {
			debug.SetGCPercent(prevGC)
		}
		if prevLimit >= 0 {
			debug.SetMemoryLimit(prevLimit)
		}
	}
}
