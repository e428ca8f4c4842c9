//go:build goolm

package setup

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestEncryptedMessages runs e2e.EncryptedMessages (two mautrix OlmMachine clients, goolm,
// exchange Megolm-encrypted messages) against a monolith on SQLite. Build tag goolm:
// go test -tags goolm ./internal/setup/ -run TestEncryptedMessages
func TestEncryptedMessages(t *testing.T) {
	cfg := config.Defaults()
	cfg.Global.ServerName = "olm.test"
	cfg.Global.DataDir = t.TempDir()
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	e2e.EncryptedMessages(t, runMonolith(t, cfg))
}
