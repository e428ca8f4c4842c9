package eventlog_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestConsumerStepTake: a Prepare that takes two records of each batch commits a batch of
// five in three transactions, each saving the offset after its records (Applied reports
// 2, 4 and 5), and prepares what is left as a new batch. When a part fails (record 3),
// only the records not committed yet are applied one at a time: those committed before
// are not applied twice, the failing one is dead-lettered and the one after it applied.
func TestConsumerStepTake(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err = db.ExecContext(ctx, "CREATE TABLE taken (v TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		offsets, err := eventlog.NewOffsetStore(ctx, db, "take")
		if err != nil {
			t.Fatal(err)
		}
		run := func(topic string, poison string, until int64) (batches []int, applied []int64) {
			t.Helper()
			for i := range until {
				if _, err := l.Produce(ctx, topic, eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: topic, Partitions: []int32{0}, MaxAttempts: 1,
				Backoff: time.Millisecond, Logger: logrus.NewEntry(logrus.New()),
				Prepare: func(_ context.Context, recs []eventlog.Record) (eventlog.Step, error) {
					mu.Lock()
					batches = append(batches, len(recs))
					mu.Unlock()
					take := min(2, len(recs))
					return eventlog.Step{Take: 2, Apply: func(ctx context.Context, tx *sql.Tx) error {
						for _, r := range recs[:take] {
							if string(r.Value) == poison {
								return errors.New("poison")
							}
							if _, err := tx.ExecContext(ctx, "INSERT INTO taken (v) VALUES ($1)", topic+string(r.Value)); err != nil {
								return err
							}
						}
						return nil
					}}, nil
				},
				Applied: func(_ int32, next int64) {
					mu.Lock()
					applied = append(applied, next)
					mu.Unlock()
					if next >= until {
						cancel()
					}
				}}
			if err := c.Run(cctx); err != nil {
				t.Fatal(err)
			}
			if cctx.Err() != context.Canceled {
				t.Fatalf("%s: the consumer did not reach offset %d", topic, until)
			}
			return batches, applied
		}
		batches, applied := run("a", "", 5)
		if !slices.Equal(batches, []int{5, 3, 1}) || !slices.Equal(applied, []int64{0, 2, 4, 5}) {
			t.Fatalf("batches prepared %v (want [5 3 1]), offsets applied %v (want [0 2 4 5])", batches, applied)
		}
		if next, err := offsets.Next(ctx, "a", 0); err != nil || next != 5 {
			t.Fatalf("saved offset %d (%v), want 5", next, err)
		}
		_, applied = run("b", "3", 5)
		if !slices.Equal(applied, []int64{0, 2, 3, 4, 5}) {
			t.Fatalf("offsets applied %v, want [0 2 3 4 5]", applied)
		}
		rows, err := db.QueryContext(ctx, "SELECT v FROM taken ORDER BY v")
		if err != nil {
			t.Fatal(err)
		}
		got, err := sqlutil.Column[string](rows)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b4"}; !slices.Equal(got, want) {
			t.Fatalf("applied %v, want %v", got, want)
		}
		var dead int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM take_dead_letters WHERE topic = 'b' AND record_offset = 3").Scan(&dead); err != nil || dead != 1 {
			t.Fatalf("dead letters for b/3: %d (%v)", dead, err)
		}
	})
}
