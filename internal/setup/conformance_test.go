package setup

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestRoomConformanceBothEngines runs the room behaviours sytest checks (e2e.RoomConformance)
// against an in-process monolith on SQLite, then PostgreSQL.
func TestRoomConformanceBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "conformance.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			base := runMonolith(t, cfg)
			e2e.RoomConformance(t, base)
			t.Run("openid", func(t *testing.T) { e2e.OpenID(t, base, "conformance.test") })
			t.Run("ignore", func(t *testing.T) { e2e.Ignore(t, base) })
		})
	}
}
