package main

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithStopsOnPostgres stops a monolith on PostgreSQL with SIGTERM as soon as it
// answers, three times: its consumers are then still loading their positions, with a few
// hundred connection startups and statements in flight. It must exit cleanly within stop's
// bound (20 s). It did not when lib/pq's cancel requests for every statement and its
// connection startups, which ignored the context, kept the server busy past the bound, or
// when the roomserver, stopped while loading its outbox, made the process exit with 1.
func TestMonolithStopsOnPostgres(t *testing.T) {
	s := startServer(t, e2e.WriteConfig(t, t.TempDir()), "DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING="+test.PostgresDSN(t))
	for range 3 {
		s.stop()
		if t.Failed() {
			return
		}
		s.start(t)
	}
}
