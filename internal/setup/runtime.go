package setup

import (
	"runtime/debug"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
)

// applyMemoryLimit sets the Go runtime's soft memory limit from global.memory_limit, when
// the operator set one; otherwise the runtime keeps its own (GOMEMLIMIT from the
// environment, or none).
func applyMemoryLimit(cfg *config.Dendrite, log *logrus.Entry) {
	if cfg.Global.MemoryLimit <= 0 {
		return
	}
	debug.SetMemoryLimit(cfg.Global.MemoryLimit)
	log.WithField("bytes", cfg.Global.MemoryLimit).Info("Go soft memory limit set from global.memory_limit")
}
