package setup

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestEndToEndKeys runs the key, device-list, cross-signing and key backup stories
// (e2e.Keys, e2e.DeviceLists, e2e.CrossSigning, e2e.KeyBackup, e2e.KeyBackupAuthData: auth_data and session_data of an
// algorithm the spec does not define) against a monolith on SQLite and then
// PostgreSQL.
func TestEndToEndKeys(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "keys.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			base := runMonolith(t, cfg)
			t.Run("keys", func(t *testing.T) { e2e.Keys(t, base) })
			t.Run("device lists", func(t *testing.T) { e2e.DeviceLists(t, base) })
			t.Run("cross-signing", func(t *testing.T) { e2e.CrossSigning(t, base) })
			t.Run("key backup", func(t *testing.T) { e2e.KeyBackup(t, base) })
			t.Run("key backup auth_data", func(t *testing.T) { e2e.KeyBackupAuthData(t, base) })
		})
	}
}
