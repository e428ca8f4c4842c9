package sql

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
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
		offsets, err := eventlog.NewOffsetStore(ctx, db, "syncapi")
		if err != nil {
			t.Fatal(err)
		}
		d, err := Open(ctx, db, offsets)
		if err != nil {
			t.Fatal(err)
		}
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
