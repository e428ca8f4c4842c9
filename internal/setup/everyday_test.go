package setup

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestEverydayFeaturesBothEngines runs the everyday client feature stories (issue 11)
// against an in-process monolith on SQLite, then PostgreSQL.
func TestEverydayFeaturesBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "everyday.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			url := runMonolith(t, cfg)
			t.Run("tags", func(t *testing.T) { e2e.Tags(t, url) })
			t.Run("user directory", func(t *testing.T) { e2e.UserDirectory(t, url) })
			t.Run("relations", func(t *testing.T) { e2e.Relations(t, url) })
			t.Run("spaces", func(t *testing.T) { e2e.Spaces(t, url) })
			t.Run("knocking", func(t *testing.T) { e2e.Knocking(t, url) })
			t.Run("upgrades", func(t *testing.T) { e2e.Upgrades(t, url) })
			t.Run("erasure", func(t *testing.T) { e2e.Erasure(t, url) })
			t.Run("peek ended by leave", func(t *testing.T) { e2e.PeekLeave(t, url) })
		})
	}
}

// TestSearchBothEngines runs the /search story against an in-process monolith on SQLite,
// then PostgreSQL.
func TestSearchBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "search.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			e2e.Search(t, runMonolith(t, cfg))
		})
	}
}
