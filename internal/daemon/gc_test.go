package daemon

import (
	"io"
	"os"
	"runtime/debug"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/mgsip/mgsip/internal/config"
)

// gcPercent reads the current GOGC (SetGCPercent returns the old value).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestApplyGC(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	unset := func(k string) {
		if v, ok := os.LookupEnv(k); ok {
			t.Cleanup(func() { os.Setenv(k, v) })
			os.Unsetenv(k)
		}
	}
	t.Run("from the file", func(t *testing.T) {
		unset("GOGC")
		unset("GOMEMLIMIT")
		before, beforeLimit := gcPercent(), debug.SetMemoryLimit(-1)
		restore := applyGC(config.Daemon{GOGC: 321, MemoryLimitMB: 512}, log)
		if got := gcPercent(); got != 321 {
			t.Errorf("GOGC %d, want 321 from daemon.gogc", got)
		}
		if got := debug.SetMemoryLimit(-1); got != 512<<20 {
			t.Errorf("memory limit %d, want 512 MiB", got)
		}
		restore()
		if gcPercent() != before || debug.SetMemoryLimit(-1) != beforeLimit {
			t.Errorf("not restored: GOGC %d (was %d), limit %d (was %d)", gcPercent(), before, debug.SetMemoryLimit(-1), beforeLimit)
		}
	})
	t.Run("environment wins", func(t *testing.T) {
		t.Setenv("GOGC", "150")
		t.Setenv("GOMEMLIMIT", "1GiB")
		before, beforeLimit := gcPercent(), debug.SetMemoryLimit(-1)
		restore := applyGC(config.Daemon{GOGC: 321, MemoryLimitMB: 512}, log)
		defer restore()
		if got := gcPercent(); got != before {
			t.Errorf("GOGC changed to %d with GOGC set in the environment", got)
		}
		if got := debug.SetMemoryLimit(-1); got != beforeLimit {
			t.Errorf("memory limit changed to %d with GOMEMLIMIT set in the environment", got)
		}
	})
}
