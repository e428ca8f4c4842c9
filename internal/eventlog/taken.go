package eventlog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// ErrInputTimeout is what a writer answers when the owner of an input topic did not take
// what it produced within the input wait timeout (AwaitTaken): 504 M_UNKNOWN. The spec
// names no error for this; a 5xx tells the client the outcome is unknown and that it may
// retry, and the inputs that wait are idempotent, so the retry changes nothing twice.
var ErrInputTimeout = matrixerr.GatewayTimeout("the server did not finish processing the request in time; retry the request")

// AwaitTaken is the writer's side of read-your-writes for input an owner takes from the
// log (DESIGN.md 5): it runs wait, which returns once the owner has stored what the writer
// produced, bounded by timeout (the owner's input_wait_timeout; 0 waits as long as ctx
// allows). When the bound passes, here or at the owner over internal HTTP, while the
// caller still waits, it returns ErrInputTimeout: the input stays in the log and will be
// taken. A writer acknowledges only after AwaitTaken returned nil, so no loss of the log
// takes back what a client was told is done.
func AwaitTaken(ctx context.Context, timeout time.Duration, wait func(ctx context.Context) error) error {
	waitCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err := wait(waitCtx)
	// waitCtx.Err() is not checked: the answer may come before the context's own timer has
	// marked it done.
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return ErrInputTimeout
	}
	return err
}

// Waiter lets request handlers wait for what a consumer commits: the consumer calls
// Applied after each commit (Consumer.Applied), and Wait looks again then.
type Waiter struct {
	mu      sync.Mutex
	changed chan struct{}
}

// NewWaiter is a Waiter nobody waits on yet.
func NewWaiter() *Waiter {
	return &Waiter{changed: make(chan struct{})}
}

// Applied wakes the waiters: the consumer committed input.
func (w *Waiter) Applied() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
}

// Wait returns once holds reports true, or with holds' error, or ctx's error when ctx ends
// first. It takes the channel before it looks, so a commit between the look and the wait
// still wakes it.
func (w *Waiter) Wait(ctx context.Context, holds func(ctx context.Context) (bool, error)) error {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		ok, err := holds(ctx)
		if err != nil || ok {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TakenInput is a writer's wait for inputs an owner with a Taken record takes: Wait is the
// owner's TakenAPI (nil: the writer does not wait) and Timeout its input_wait_timeout.
type TakenInput struct {
	Wait    TakenAPI
	Timeout time.Duration
}

// Produce appends value to topic under key and, with Wait, returns only once the owner has
// taken it (AwaitTaken): setID is first given the input's fresh ID to put in value. The
// input is then stored with its output in the owner's outbox, which no loss of the log
// can take back, so a 200 to the client is durable. Without Wait it is only in the log.
func (w TakenInput) Produce(ctx context.Context, log Log, topic, key string, value any, setID func(inputID string)) error {
	var id string
	if w.Wait != nil {
		id = NewInputID()
		setID(id)
	}
	if err := ProduceJSON(ctx, log, topic, key, value); err != nil {
		return err
	}
	if w.Wait == nil {
		return nil
	}
	return AwaitTaken(ctx, w.Timeout, func(ctx context.Context) error {
		_, err := w.Wait.QueryInputTaken(ctx, &QueryInputTakenRequest{InputID: id})
		return err
	})
}

// NewInputID is a fresh ID for an input a writer will wait for (QueryInputTakenRequest).
func NewInputID() string {
	id := make([]byte, 16)
	_, _ = rand.Read(id) // crypto/rand never fails on Linux
	return hex.EncodeToString(id)
}

// QueryInputTakenRequest names one input by the ID its writer gave it (NewInputID).
type QueryInputTakenRequest struct {
	InputID string `json:"input_id"`
}

// QueryInputTakenResponse says that the input was taken.
type QueryInputTakenResponse struct{}

// TakenAPI is how writers learn that an owner took an input they produced: what it
// changed is committed in the owner's database, with its output in the owner's outbox.
type TakenAPI interface {
	// QueryInputTaken returns once the input is taken, or ctx's error when ctx ends first.
	// An input is taken whether or not it changed anything (a receipt for an older event
	// is taken and ignored).
	QueryInputTaken(ctx context.Context, req *QueryInputTakenRequest) (*QueryInputTakenResponse, error)
}

// takenPruneInterval is how often, at most, expired input IDs are deleted.
const takenPruneInterval = 10 * time.Minute

// minTakenKeep bounds TakenOptions.Keep from below.
const minTakenKeep = time.Minute

// TakenOptions name an owner's record of taken inputs.
type TakenOptions struct {
	// Component names the table: "<component>_taken_inputs".
	Component string
	// Keep is how long an input ID is kept once taken: longer than any writer waits for
	// it (twice the input wait timeout; at least a minute). A writer waits only while its
	// input wait timeout runs, which started before the input was taken.
	Keep   time.Duration
	Logger *logrus.Entry
}

// Taken is an owner's record of the inputs it took, for the writers that wait for them
// (TakenAPI): the consumer's handler records an input's ID (Take) in the transaction that
// applies it, and the consumer's Applied wakes the waiters. Inputs without an ID (from
// writers that do not wait) are not recorded.
type Taken struct {
	db     *sqlutil.DB
	table  string
	opts   TakenOptions
	waiter *Waiter
}

// NewTaken creates the table in db (the owner's database) if needed.
func NewTaken(ctx context.Context, db *sqlutil.DB, opts TakenOptions) (*Taken, error) {
	opts.Keep = max(opts.Keep, minTakenKeep)
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.New())
	}
	t := &Taken{db: db, table: opts.Component + "_taken_inputs", opts: opts, waiter: NewWaiter()}
	err := sqlutil.Migrate(ctx, db, t.table, []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS ` + t.table + ` (
	input_id TEXT NOT NULL PRIMARY KEY,
	taken_ms {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS ` + t.table + `_taken_ms ON ` + t.table + ` (taken_ms)`}})
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", t.table, err)
	}
	return t, nil
}

// Take records, in tx, that the input inputID was taken; "" records nothing. Taking an
// input twice (a redelivery) is harmless.
func (t *Taken) Take(ctx context.Context, tx *sql.Tx, inputID string) error {
	if inputID == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.table+` (input_id, taken_ms) VALUES ($1, $2)
		ON CONFLICT (input_id) DO NOTHING`, inputID, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record taken input: %w", err)
	}
	return nil
}

// Applied wakes the writers waiting in QueryInputTaken: the consumer committed input.
func (t *Taken) Applied() {
	t.waiter.Applied()
}

// QueryInputTaken implements TakenAPI.
func (t *Taken) QueryInputTaken(ctx context.Context, req *QueryInputTakenRequest) (*QueryInputTakenResponse, error) {
	if req.InputID == "" {
		return nil, matrixerr.MissingParam("input_id is required")
	}
	err := t.waiter.Wait(ctx, func(ctx context.Context) (bool, error) {
		var n int
		if err := t.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.table+` WHERE input_id = $1`, req.InputID).Scan(&n); err != nil {
			return false, fmt.Errorf("look up taken input: %w", err)
		}
		return n > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return &QueryInputTakenResponse{}, nil
}

// Run deletes the IDs older than Keep, at once and then every takenPruneInterval (or Keep,
// when shorter), until ctx ends.
func (t *Taken) Run(ctx context.Context) error {
	tick := time.NewTicker(min(takenPruneInterval, t.opts.Keep))
	defer tick.Stop()
	for {
		if _, err := t.db.ExecContext(ctx, `DELETE FROM `+t.table+` WHERE taken_ms < $1`,
			time.Now().Add(-t.opts.Keep).UnixMilli()); err != nil && ctx.Err() == nil {
			t.opts.Logger.WithError(err).Warn("deleting expired taken inputs failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
