package setup

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMediaEndToEnd runs a monolith on SQLite and then PostgreSQL: a user uploads a
// picture with mautrix and makes it their avatar; another user finds it in the profile,
// downloads it byte-identical through the authenticated endpoint and gets a thumbnail of
// every configured size; without a token the download is 401.
func TestMediaEndToEnd(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "media.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			base := runMonolith(t, cfg)
			e2e.Media(t, base, cfg.MediaAPI.ThumbnailSizes)
		})
	}
}
