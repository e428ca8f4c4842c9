package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// TestPositionsVisibleInOrder: a write that took a position and has not ended hides every
// later position, and a later write returns only once it has ended, committed or rolled
// back. On PostgreSQL the later write commits meanwhile: it no longer waits for the earlier
// one's transaction (on SQLite writes are serialized whole, so it cannot).
func TestPositionsVisibleInOrder(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d := OpenForTest(t, db)
		for _, outcome := range []error{nil, errors.New("the held write fails")} {
			before, err := d.MaxPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			took, release := make(chan int64), make(chan struct{})
			held := make(chan error, 1)
			go func() {
				_, err := d.write(ctx, storage.StreamAccountData, storage.Offset{}, func(tx *sql.Tx, applied *storage.Applied) error {
					err := d.storeAtNextPosition(ctx, tx, applied, "account data", `INSERT INTO syncapi_account_data (user_id, room_id, type, content, position)
						VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = $4, position = $5`,
						"@held:x", "", "m.t", `{}`)
					if err != nil {
						return err
					}
					took <- applied.Position
					<-release
					return outcome
				})
				held <- err
			}()
			first := <-took
			later := make(chan *storage.Applied, 1)
			go func() {
				applied, err := d.WriteAccountData(ctx, []storage.AccountDataChange{{UserID: "@later:x", Type: "m.t", Content: []byte(`{"at":` + time.Now().Format("150405.000") + `}`)}}, storage.Offset{})
				if err != nil {
					t.Error(err)
				}
				later <- applied
			}()
			if db.Engine() == sqlutil.Postgres {
				// The later write's row commits while the held one is in flight.
				deadline := time.Now().Add(10 * time.Second)
				for {
					var n int
					if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM syncapi_account_data WHERE user_id = '@later:x' AND position > $1", first).Scan(&n); err != nil {
						t.Fatal(err)
					}
					if n == 1 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the later write did not commit while an earlier one was in flight")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			select {
			case a := <-later:
				t.Fatalf("the later write returned at %d while position %d was in flight", a.Position, first)
			case <-time.After(200 * time.Millisecond):
			}
			if max, err := d.MaxPosition(ctx); err != nil || max != before {
				t.Fatalf("visible position %d (%v) while %d is in flight, want %d", max, err, first, before)
			}
			close(release)
			if err = <-held; !errors.Is(err, outcome) {
				t.Fatalf("held write: %v, want %v", err, outcome)
			}
			a := <-later
			// After a rollback SQLite hands the held position out again; it was never visible.
			if a == nil || a.Position < first || (outcome == nil && a.Position == first) {
				t.Fatalf("later write applied %+v, want a position after %d", a, first)
			}
			if max, err := d.MaxPosition(ctx); err != nil || max != a.Position {
				t.Fatalf("visible position %d (%v), want %d", max, err, a.Position)
			}
		}
	})
}

// TestPositionsAfterDeadlock: a write that PostgreSQL aborts to break a deadlock fails with
// an error the consumers retry (sqlutil.IsUnavailable) and leaves no position in flight: a
// later write returns and is visible. The deadlock is with an outside transaction: the
// write holds one row and waits for a second that the outside transaction holds, which
// then waits for the first. SQLite serializes whole writes, so it has no such deadlock.
func TestPositionsAfterDeadlock(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		if db.Engine() != sqlutil.Postgres {
			t.Skip("SQLite serializes whole writes: they cannot deadlock")
		}
		ctx := context.Background()
		d := OpenForTest(t, db)
		change := func(user string, n int) storage.AccountDataChange {
			return storage.AccountDataChange{UserID: user, Type: "m.t", Content: []byte(fmt.Sprintf(`{"n":%d}`, n))}
		}
		if _, err := d.WriteAccountData(ctx, []storage.AccountDataChange{change("@a:x", 0), change("@b:x", 0)}, storage.Offset{}); err != nil {
			t.Fatal(err)
		}
		outside, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer outside.Rollback() // nolint: errcheck // committed below when the test gets there
		// The write, whose own deadlock_timeout runs out first, is the one aborted.
		if _, err = outside.ExecContext(ctx, "SET LOCAL deadlock_timeout = '60s'"); err != nil {
			t.Fatal(err)
		}
		const update = `UPDATE syncapi_account_data SET content = '{"n":2}' WHERE user_id = $1`
		if _, err = outside.ExecContext(ctx, update, "@b:x"); err != nil {
			t.Fatal(err)
		}
		failed := make(chan error, 1)
		go func() {
			_, err := d.WriteAccountData(ctx, []storage.AccountDataChange{change("@a:x", 1), change("@b:x", 1)}, storage.Offset{})
			failed <- err
		}()
		// The write holds @a's row and waits for @b's.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var waiting int
			err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&waiting)
			if err != nil {
				t.Fatal(err)
			}
			if waiting == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the write did not wait for the row the outside transaction holds")
			}
		}
		if _, err = outside.ExecContext(ctx, update, "@a:x"); err != nil {
			t.Fatalf("the outside transaction was aborted instead of the write: %v", err)
		}
		err = <-failed
		var pqErr *pq.Error
		if !errors.As(err, &pqErr) || pqErr.Code != "40P01" || !sqlutil.IsUnavailable(err) {
			t.Fatalf("the write failed with %v, want a deadlock that counts as unavailable", err)
		}
		if err = outside.Commit(); err != nil {
			t.Fatal(err)
		}
		later := make(chan *storage.Applied, 1)
		go func() {
			applied, err := d.WriteAccountData(ctx, []storage.AccountDataChange{change("@c:x", 1)}, storage.Offset{})
			if err != nil {
				t.Error(err)
			}
			later <- applied
		}()
		select {
		case a := <-later:
			if max, err := d.MaxPosition(ctx); err != nil || a == nil || max != a.Position {
				t.Fatalf("visible position %d (%v) after a write applied %+v", max, err, a)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write after the deadlock did not return: the aborted write's positions stay in flight")
		}
		var content string
		if err = db.QueryRowContext(ctx, "SELECT content FROM syncapi_account_data WHERE user_id = '@a:x'").Scan(&content); err != nil || content != `{"n":2}` {
			t.Fatalf("@a's account data %q (%v): the aborted write left a change", content, err)
		}
	})
}
