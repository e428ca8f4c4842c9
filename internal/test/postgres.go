// Package test holds helpers for tests: a throwaway PostgreSQL cluster (internal/pgcluster)
// and a runner that executes a storage test once per database engine.
package test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/matrix-org/dendrite/internal/pgcluster"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// EnvPostgresDSN names a PostgreSQL server to use instead of starting one. Each test gets a
// new database on it.
const EnvPostgresDSN = "DENDRITE_TEST_POSTGRES_DSN"

var (
	clusterOnce sync.Once
	cluster     *pgcluster.Cluster
	clusterErr  error
)

// WithAllDatabases runs fn as the subtests "sqlite" and "postgres", each on a fresh, empty
// database.
func WithAllDatabases(t *testing.T, fn func(t *testing.T, db *sqlutil.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "test.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
		fn(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := sqlutil.Open(PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
		fn(t, db)
	})
}

// PostgresDSN creates a new empty database and returns its DSN.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgresDSN)
	if base == "" {
		clusterOnce.Do(func() {
			// The cluster lives as long as the test binary: its watchdog stops it and removes
			// its directory when the process exits.
			cluster, clusterErr = pgcluster.Start(context.Background())
		})
		if clusterErr != nil {
			t.Fatalf("start throwaway PostgreSQL (or set %s): %v", EnvPostgresDSN, clusterErr)
		}
		base = cluster.DSN
	}
	dsn, err := pgcluster.CreateDatabase(context.Background(), base)
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return dsn
}
