package sql

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/appservice/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestQueue: a service's items go out in queue order in transactions of at most max; a
// transaction not yet acknowledged comes back with the same ID and contents; IDs are never
// reused, also once the queue was empty; each service's queue is its own; an event is
// recorded as queued once per service.
func TestQueue(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d, err := Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		enqueue := func(service string, items ...string) {
			t.Helper()
			err := db.WithTx(ctx, func(tx *sql.Tx) error {
				for _, it := range items {
					if err := d.Enqueue(ctx, tx, service, storage.KindEvent, []byte(it)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		enqueue("a", "1", "2", "3")
		enqueue("b", "x")
		enqueue("a", "4")
		first, err := d.NextTransaction(ctx, "a", 3)
		if err != nil || first == nil || len(first.Events) != 3 || string(first.Events[0]) != "1" || string(first.Events[2]) != "3" {
			t.Fatalf("first transaction %+v %v", first, err)
		}
		again, err := d.NextTransaction(ctx, "a", 3)
		if err != nil || again.TxnID != first.TxnID || len(again.Events) != 3 {
			t.Fatalf("a retry is another transaction: %+v %v", again, err)
		}
		if n, oldest, err := d.QueueState(ctx, "a"); err != nil || n != 4 || time.Since(oldest) > time.Hour {
			t.Fatalf("depth %d %v", n, err)
		}
		if err = d.DeleteTransaction(ctx, "a", first.TxnID); err != nil {
			t.Fatal(err)
		}
		second, err := d.NextTransaction(ctx, "a", 3)
		if err != nil || second == nil || len(second.Events) != 1 || string(second.Events[0]) != "4" || second.TxnID == first.TxnID {
			t.Fatalf("second transaction %+v %v", second, err)
		}
		if err = d.DeleteTransaction(ctx, "a", second.TxnID); err != nil {
			t.Fatal(err)
		}
		if empty, err := d.NextTransaction(ctx, "a", 3); err != nil || empty != nil {
			t.Fatalf("empty queue gave %+v %v", empty, err)
		}
		enqueue("a", "5")
		third, err := d.NextTransaction(ctx, "a", 3)
		if err != nil || third == nil || third.TxnID <= second.TxnID {
			t.Fatalf("a transaction ID was reused after the queue emptied: %+v after %d, %v", third, second.TxnID, err)
		}
		other, err := d.NextTransaction(ctx, "b", 3)
		if err != nil || other == nil || len(other.Events) != 1 || string(other.Events[0]) != "x" {
			t.Fatalf("service b %+v %v", other, err)
		}

		var fresh []bool
		for _, svc := range []string{"a", "a", "b"} {
			err := db.WithTx(ctx, func(tx *sql.Tx) error {
				ok, err := d.MarkQueued(ctx, tx, svc, "$ev")
				fresh = append(fresh, ok)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if !fresh[0] || fresh[1] || !fresh[2] {
			t.Fatalf("queued once per service: %v", fresh)
		}
		if err = d.ForgetQueuedBefore(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		err = db.WithTx(ctx, func(tx *sql.Tx) error {
			ok, err := d.MarkQueued(ctx, tx, "a", "$ev")
			if err == nil && !ok {
				t.Error("a forgotten event is still recorded")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
