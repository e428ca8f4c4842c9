package eventlog_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// TestTakenWakesOnlyItsWriters: 20 writers wait for their inputs; each looks its input up
// once when it starts (20 look-ups), and the 30 commits that follow (each writer's input
// alone, between commits of inputs nobody waits for) wake only the writers of what they
// took, which answer without looking again: still 20 look-ups in all. A wait that woke
// every writer on every commit would look up each waiting input again on each commit (over
// 200 more). Both engines.
func TestTakenWakesOnlyItsWriters(t *testing.T) {
	withCountingDatabases(t, func(t *testing.T, db *countingDB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		taken, err := eventlog.NewTaken(ctx, db.DB, eventlog.TakenOptions{Component: "tw", Keep: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		const writers = 20
		before := db.Count("SELECT", "tw_taken_inputs") // NewTaken's migration
		lookups := func() int { return db.Count("SELECT", "tw_taken_inputs") - before }
		answered := make(chan string, writers)
		errs := make(chan error, writers)
		for i := range writers {
			go func() {
				id := fmt.Sprintf("w%d", i)
				if _, err := taken.QueryInputTaken(ctx, &eventlog.QueryInputTakenRequest{InputID: id}); err != nil {
					errs <- err
					return
				}
				answered <- id
			}()
		}
		for lookups() < writers {
			if ctx.Err() != nil {
				t.Fatalf("only %d of %d writers looked their input up", lookups(), writers)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for i := range writers {
			takeInputs(ctx, t, db.DB, taken, fmt.Sprintf("w%d", i))
			takeInputs(ctx, t, db.DB, taken, fmt.Sprintf("other%d", i))
			select {
			case id := <-answered:
				if id != fmt.Sprintf("w%d", i) {
					t.Fatalf("the writer of %s answered when w%d was taken", id, i)
				}
			case err := <-errs:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("the writer of w%d was not woken when its input was taken", i)
			}
		}
		if n := lookups(); n != writers {
			t.Fatalf("%d look-ups of the taken inputs for %d writers; want one each", n, writers)
		}
	})
}

// TestTakenWaitNoLostWakeUp: 200 writers at once each wait for an input one consumer takes
// in batches of whatever is pending; half start waiting before they hand the input over
// and half a random moment after, some after it was committed, and one in ten has a
// second wait on the same input (a retried internal HTTP call). Every wait answers: none is
// lost between its look-up and the commit. Run with -race. Both engines.
func TestTakenWaitNoLostWakeUp(t *testing.T) {
	withCountingDatabases(t, func(t *testing.T, db *countingDB) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		taken, err := eventlog.NewTaken(ctx, db.DB, eventlog.TakenOptions{Component: "tl", Keep: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		const writers = 200
		inputs := make(chan string, writers)
		consumed := make(chan error, 1)
		go func() { consumed <- consumeInputs(ctx, db.DB, taken, inputs, 100) }()
		wait := func(id string) error {
			_, err := taken.QueryInputTaken(ctx, &eventlog.QueryInputTakenRequest{InputID: id})
			return err
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := eventlog.NewInputID()
				if i%10 == 0 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
						errs <- wait(id)
					}()
				}
				if i%2 == 0 {
					go func() {
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
						inputs <- id
					}()
				} else {
					inputs <- id
					time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
				}
				errs <- wait(id)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("a writer's wait: %v", err)
			}
		}
		close(inputs)
		if err := <-consumed; err != nil {
			t.Fatal(err)
		}
	})
}

// consumeInputs takes the IDs from inputs, in one transaction per batch of whatever is
// pending (at most max), until inputs closes.
func consumeInputs(ctx context.Context, db *sqlutil.DB, taken *eventlog.Taken, inputs <-chan string, max int) error {
	for id := range inputs {
		batch := []string{id}
	more:
		for len(batch) < max {
			select {
			case id, ok := <-inputs:
				if !ok {
					break more
				}
				batch = append(batch, id)
			default:
				break more
			}
		}
		if err := takeBatch(ctx, db, taken, batch); err != nil {
			return err
		}
	}
	return nil
}

// takeBatch takes ids in one transaction as a consumer's handler run through Prepare does
// (Consumer.apply): the batch's Step applied in a transaction, then its After.
func takeBatch(ctx context.Context, db *sqlutil.DB, taken *eventlog.Taken, ids []string) error {
	step, err := taken.Prepare(func(ctx context.Context, tx *sql.Tx, _ []eventlog.Record) error {
		for _, id := range ids {
			if err := taken.Take(ctx, tx, id); err != nil {
				return err
			}
		}
		return nil
	})(ctx, nil)
	if err != nil {
		return err
	}
	if err = db.WithTx(ctx, func(tx *sql.Tx) error { return step.Apply(ctx, tx) }); err != nil {
		return err
	}
	step.After(ctx)
	return nil
}
