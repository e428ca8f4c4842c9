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
	"golang.org/x/sync/errgroup"

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

// Waiter lets request handlers wait for the inputs a consumer commits, each named by a key
// (an input ID, a request's idempotency key). The consumer's handler, run through Prepare,
// notes each key it takes in its transaction (Took); once that transaction committed, the
// waiters of those keys, and only those, are woken: a woken waiter needs no look-up.
type Waiter struct {
	mu      sync.Mutex
	waiting map[string]*waiting
	open    map[*sql.Tx][]string // the keys taken so far in each running Prepare transaction
}

// waiting is the wait of every request for one key: done closes once the key is committed.
type waiting struct {
	done chan struct{}
	n    int
}

// NewWaiter is a Waiter nobody waits on yet.
func NewWaiter() *Waiter {
	return &Waiter{waiting: map[string]*waiting{}, open: map[*sql.Tx][]string{}}
}

// Prepare is the Consumer.Prepare of handle, which notes in its transaction the keys it
// takes (Took): once the batch committed, the waiters of those keys are woken. Keys taken
// in a transaction that rolled back wake nobody.
func (w *Waiter) Prepare(handle func(ctx context.Context, tx *sql.Tx, recs []Record) error) func(ctx context.Context, recs []Record) (Step, error) {
	return func(_ context.Context, recs []Record) (Step, error) {
		var keys []string
		return Step{
			Apply: func(ctx context.Context, tx *sql.Tx) error {
				w.mu.Lock()
				w.open[tx] = nil
				w.mu.Unlock()
				err := handle(ctx, tx, recs)
				w.mu.Lock()
				keys = w.open[tx]
				delete(w.open, tx)
				w.mu.Unlock()
				return err
			},
			After: func(context.Context) { w.applied(keys) },
		}, nil
	}
}

// Took notes that key was taken in tx, the transaction of a handler run through Prepare:
// its waiters are woken once tx committed. In any other transaction it notes nothing.
func (w *Waiter) Took(tx *sql.Tx, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if keys, ok := w.open[tx]; ok {
		w.open[tx] = append(keys, key)
	}
}

// applied wakes the waiters of keys: the consumer committed them.
func (w *Waiter) applied(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		if wt, ok := w.waiting[k]; ok {
			close(wt.done)
			delete(w.waiting, k)
		}
	}
}

// Wait returns once key is committed, or with holds' error, or ctx's error when ctx ends
// first. holds looks key up once, after the wait is registered: a key committed before
// is found there, and one committed from then on wakes the wait.
func (w *Waiter) Wait(ctx context.Context, key string, holds func(ctx context.Context) (bool, error)) error {
	done, stop := w.watch(key)
	defer stop()
	ok, err := holds(ctx)
	if err != nil || ok {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch registers a wait for key: done closes once key is committed; stop ends the wait.
func (w *Waiter) watch(key string) (done <-chan struct{}, stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.waiting[key]
	if wt == nil {
		wt = &waiting{done: make(chan struct{})}
		w.waiting[key] = wt
	}
	wt.n++
	return wt.done, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if wt.n--; wt.n == 0 && w.waiting[key] == wt {
			delete(w.waiting, key)
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
// (TakenAPI): the consumer's handler, run through Prepare (Intake), records an input's ID
// (Take) in the transaction that applies it, and once that committed the input's writers
// are woken. Inputs without an ID (from writers that do not wait) are not recorded.
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
// input twice (a redelivery) is harmless. When tx is the transaction of a handler run
// through Prepare, the input's writers are woken once it committed.
func (t *Taken) Take(ctx context.Context, tx *sql.Tx, inputID string) error {
	if inputID == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+t.table+` (input_id, taken_ms) VALUES ($1, $2)
		ON CONFLICT (input_id) DO NOTHING`, inputID, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record taken input: %w", err)
	}
	t.waiter.Took(tx, inputID)
	return nil
}

// Prepare is the Consumer.Prepare of handle, which records the inputs it takes (Take) in
// its transaction: once that committed, their writers are woken (Waiter.Prepare).
func (t *Taken) Prepare(handle func(ctx context.Context, tx *sql.Tx, recs []Record) error) func(ctx context.Context, recs []Record) (Step, error) {
	return t.waiter.Prepare(handle)
}

// QueryInputTaken implements TakenAPI. It looks the input up once; from then on the
// commit that takes it wakes it.
func (t *Taken) QueryInputTaken(ctx context.Context, req *QueryInputTakenRequest) (*QueryInputTakenResponse, error) {
	if req.InputID == "" {
		return nil, matrixerr.MissingParam("input_id is required")
	}
	err := t.waiter.Wait(ctx, req.InputID, func(ctx context.Context) (bool, error) {
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

// Intake is an owner's input side for writers that wait (TakenInput): the consumer of its
// input topic, the outbox its handler stores output in, and its record of taken inputs.
type Intake struct {
	consumer *Consumer
	outbox   *Outbox
	taken    *Taken
}

// Intake is the consumer of topic for the owner (TakenOptions.Component) whose handle
// records the inputs it takes (Take) and stores its output in outbox, in each batch's
// transaction: once a batch committed, the outbox is woken, and so are the writers of the
// inputs it took.
func (t *Taken) Intake(ctx context.Context, log Log, topic string, outbox *Outbox,
	handle func(ctx context.Context, tx *sql.Tx, recs []Record) error, metrics *Metrics) (*Intake, error) {
	c, err := NewComponentConsumer(ctx, log, t.db, t.opts.Component, topic, nil, t.opts.Logger, metrics)
	if err != nil {
		return nil, err
	}
	c.Prepare = t.Prepare(handle)
	c.Applied = func(int32, int64) { outbox.Wake() }
	return &Intake{consumer: c, outbox: outbox, taken: t}, nil
}

// Run consumes the input topic, produces the stored output and forgets expired taken
// inputs until ctx ends.
func (in *Intake) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return in.consumer.Run(ctx) })
	g.Go(func() error { return in.outbox.Run(ctx) })
	g.Go(func() error { return in.taken.Run(ctx) })
	return g.Wait()
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
