package setup

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestDirectoryBothEngines runs the directory story against an in-process monolith whose
// components all use SQLite, then PostgreSQL.
func TestDirectoryBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "dir.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			e2e.Directory(t, runMonolith(t, cfg))
		})
	}
}

// runMonolith serves a monolith on loopback until the test ends and returns its URL.
func runMonolith(t *testing.T, cfg *config.Dendrite) string {
	t.Helper()
	_, url := startMonolith(t, cfg)
	return url
}

// startMonolith serves a monolith on loopback until the test ends and returns it and its URL.
func startMonolith(t *testing.T, cfg *config.Dendrite) (*Monolith, string) {
	t.Helper()
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMonolith(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("monolith: %v", err)
		}
	})
	return m, "http://" + l.Addr().String()
}

// TestGuestsBothEngines runs the guest access story against an in-process monolith with
// guests enabled, on SQLite, then PostgreSQL.
func TestGuestsBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "guest.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.GuestsDisabled = false, false
			cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, 4
			e2e.Guests(t, runMonolith(t, cfg))
		})
	}
}

// TestMemberStateBothEngines runs the member state story (per-room display names through
// PUT /state/m.room.member) against an in-process monolith on SQLite, then PostgreSQL.
func TestMemberStateBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "member.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			e2e.MemberState(t, runMonolith(t, cfg))
		})
	}
}
