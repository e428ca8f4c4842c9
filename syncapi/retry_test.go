package syncapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestWriteRetriedWhileUnavailable: a consumer's write that the database cannot serve is
// retried until it succeeds, however often it fails, and is never dead-lettered. Here the
// write's connection is terminated while it waits for a row lock, six times, one more than
// the runtime's MaxAttempts; a deadlock PostgreSQL breaks by aborting the write fails the
// same way (sqlutil.IsUnavailable). Without the Retry marking the record is dead-lettered
// after the fifth failure and the change never reaches /sync. On SQLite no test can end
// another connection's statement, so the test runs on PostgreSQL.
func TestWriteRetriedWhileUnavailable(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		if db.Engine() != sqlutil.Postgres {
			t.Skip("SQLite: no connection can be terminated from outside")
		}
		ctx := context.Background()
		h := start(t, db)
		alice := h.user("alice")
		h.accountData(alice, "", "m.x", map[string]int{"n": 1})
		h.waitConsumed()

		hold, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Rollback() // nolint: errcheck // rolled back below when the test gets there
		if _, err = hold.ExecContext(ctx, "SELECT 1 FROM syncapi_account_data WHERE user_id = $1 FOR UPDATE", alice); err != nil {
			t.Fatal(err)
		}
		h.accountData(alice, "", "m.x", map[string]int{"n": 2})
		// A terminated backend can still be listed as waiting for a moment: each attempt is
		// a backend not terminated before.
		terminated := map[int]bool{}
		for i := range 6 {
			pid := 0
			for deadline := time.Now().Add(15 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
				rows, err := db.QueryContext(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
					AND wait_event_type = 'Lock' AND query LIKE '%syncapi_account_data%'`)
				if err != nil {
					t.Fatal(err)
				}
				waiting, err := sqlutil.Column[int](rows)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range waiting {
					if !terminated[p] {
						pid = p
					}
				}
				if pid == 0 && time.Now().After(deadline) {
					t.Fatalf("attempt %d of the write did not come: was the record dead-lettered?", i+1)
				}
			}
			terminated[pid] = true
			if _, err = db.ExecContext(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
		}
		if err = hold.Rollback(); err != nil {
			t.Fatal(err)
		}
		h.waitConsumed()
		var content string
		if err = db.QueryRowContext(ctx, "SELECT content FROM syncapi_account_data WHERE user_id = $1 AND type = 'm.x'", alice).Scan(&content); err != nil {
			t.Fatal(err)
		}
		var got struct{ N int }
		if err = json.Unmarshal([]byte(content), &got); err != nil || got.N != 2 {
			t.Fatalf("account data %s (%v), want n 2", content, err)
		}
		var dead int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM syncapi_dead_letters").Scan(&dead); err != nil || dead != 0 {
			t.Fatalf("%d dead letters (%v), want none", dead, err)
		}
	})
}
