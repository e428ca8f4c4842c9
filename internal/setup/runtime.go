package setup

import (
	"fmt"
	"runtime/debug"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// applyMemoryLimits sets SQLite's soft memory limit from global.cache.sqlite_max_bytes, and
// the Go runtime's from global.memory_limit when the operator set one; otherwise the
// runtime keeps its own (GOMEMLIMIT from the environment, or none).
func applyMemoryLimits(cfg *config.Dendrite, log *logrus.Entry) error {
	if _, err := sqlutil.SetSQLiteMemoryLimit(cfg.Global.Cache.SQLiteMaxBytes); err != nil {
		return fmt.Errorf("global.cache.sqlite_max_bytes: %w", err)
	}
	if cfg.Global.MemoryLimit <= 0 {
		return nil
	}
	debug.SetMemoryLimit(cfg.Global.MemoryLimit)
	log.WithField("bytes", cfg.Global.MemoryLimit).Info("Go soft memory limit set from global.memory_limit")
	return nil
}
