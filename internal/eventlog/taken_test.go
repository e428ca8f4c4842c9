package eventlog_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestTakenInputs: QueryInputTaken answers once the input's ID is committed (Take in the
// transaction of a handler run through Prepare), wakes a writer that waited before the commit,
// answers at once for an input taken before, and never for an input not taken; AwaitTaken
// turns its bound into 504 M_UNKNOWN (ErrInputTimeout) but not the caller's own
// cancellation; Run forgets IDs older than Keep and keeps the others. Both engines.
func TestTakenInputs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		taken, err := eventlog.NewTaken(ctx, db, eventlog.TakenOptions{Component: "tk", Keep: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		take := func(ids ...string) {
			t.Helper()
			takeInputs(ctx, t, db, taken, ids...)
		}
		query := func(ctx context.Context, id string) error {
			_, err := taken.QueryInputTaken(ctx, &eventlog.QueryInputTakenRequest{InputID: id})
			return err
		}
		waited := make(chan error, 1)
		go func() { waited <- query(ctx, "a") }()
		// A marker: another input taken and answered; "a" is not taken yet.
		take("b")
		if err = query(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		select {
		case err = <-waited:
			t.Fatalf("answered before the input was taken: %v", err)
		default:
		}
		take("a")
		if err = <-waited; err != nil {
			t.Fatalf("the writer that waited: %v", err)
		}
		take("a") // a redelivery
		if err = query(ctx, "a"); err != nil {
			t.Fatalf("an input taken before: %v", err)
		}
		take("") // input of a writer that does not wait: nothing recorded
		var merr *matrixerr.Error
		if err = query(ctx, ""); !errors.As(err, &merr) || merr.Code != "M_MISSING_PARAM" {
			t.Fatalf("no input ID: %v", err)
		}

		wait := func(ctx context.Context) error { return query(ctx, "never") }
		if err = eventlog.AwaitTaken(ctx, 50*time.Millisecond, wait); !errors.Is(err, eventlog.ErrInputTimeout) ||
			!errors.As(err, &merr) || merr.Status != http.StatusGatewayTimeout || merr.Code != "M_UNKNOWN" {
			t.Fatalf("an input never taken: %v", err)
		}
		gone, stop := context.WithCancel(ctx)
		stop()
		if err = eventlog.AwaitTaken(gone, time.Hour, wait); !errors.Is(err, context.Canceled) {
			t.Fatalf("a caller that went away: %v", err)
		}

		if _, err = db.ExecContext(ctx, "INSERT INTO tk_taken_inputs (input_id, taken_ms) VALUES ('old', 0)"); err != nil {
			t.Fatal(err)
		}
		run, stopRun := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- taken.Run(run) }()
		count := func(id string) int {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM tk_taken_inputs WHERE input_id = $1", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		for count("old") > 0 {
			if ctx.Err() != nil {
				t.Fatal("an input ID older than Keep was never forgotten")
			}
			time.Sleep(20 * time.Millisecond)
		}
		stopRun()
		if err = <-done; err != nil {
			t.Fatal(err)
		}
		if count("a") != 1 || count("b") != 1 {
			t.Fatal("input IDs younger than Keep were forgotten")
		}
	})
}

// takeInputs takes ids in one batch (takeBatch).
func takeInputs(ctx context.Context, t testing.TB, db *sqlutil.DB, taken *eventlog.Taken, ids ...string) {
	t.Helper()
	if err := takeBatch(ctx, db, taken, ids); err != nil {
		t.Fatal(err)
	}
}
