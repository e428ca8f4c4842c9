package eventlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// OffsetStore keeps a component's consumer offsets and dead letters in that component's
// own database, so offsets commit with the changes they account for.
type OffsetStore struct {
	db        *sqlutil.DB
	offsets   string
	deadLetrs string
}

// NewOffsetStore creates the tables "<component>_log_offsets" and "<component>_dead_letters".
func NewOffsetStore(ctx context.Context, db *sqlutil.DB, component string) (*OffsetStore, error) {
	s := &OffsetStore{db: db, offsets: component + "_log_offsets", deadLetrs: component + "_dead_letters"}
	err := sqlutil.Migrate(ctx, db, component+"_log", []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS ` + s.offsets + ` (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	next_offset {bigint} NOT NULL,
	PRIMARY KEY (topic, partition_id)
);
CREATE TABLE IF NOT EXISTS ` + s.deadLetrs + ` (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	record_offset {bigint} NOT NULL,
	error TEXT NOT NULL,
	failed_ms {bigint} NOT NULL
)`}, {Version: 2, SQL: `
ALTER TABLE ` + s.offsets + ` ADD COLUMN seq {bigint} NOT NULL DEFAULT 0;
ALTER TABLE ` + s.offsets + ` ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''
`}})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Next is the next offset to consume (0 when nothing was consumed yet).
func (s *OffsetStore) Next(ctx context.Context, topic string, partition int32) (int64, error) {
	var next int64
	err := s.db.QueryRowContext(ctx, "SELECT next_offset FROM "+s.offsets+" WHERE topic = $1 AND partition_id = $2", topic, partition).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return next, err
}

// Stored is a consumer's stored position in a partition: the next offset, the last owner
// sequence number applied (Sequenced; 0 for none) and the log incarnation the offset is a
// position in (Guard; "" when not known).
type Stored struct {
	Next        int64
	Seq         int64
	Incarnation string
}

// Position is the stored position (zero when nothing was consumed yet).
func (s *OffsetStore) Position(ctx context.Context, topic string, partition int32) (Stored, error) {
	var st Stored
	err := s.db.QueryRowContext(ctx, "SELECT next_offset, seq, incarnation FROM "+s.offsets+" WHERE topic = $1 AND partition_id = $2", topic, partition).
		Scan(&st.Next, &st.Seq, &st.Incarnation)
	if errors.Is(err, sql.ErrNoRows) {
		return Stored{}, nil
	}
	return st, err
}

// SaveSeq records, inside the caller's transaction, the last owner sequence number applied.
func (s *OffsetStore) SaveSeq(ctx context.Context, tx *sql.Tx, topic string, partition int32, seq int64) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO "+s.offsets+` (topic, partition_id, next_offset, seq) VALUES ($1, $2, 0, $3)
		ON CONFLICT (topic, partition_id) DO UPDATE SET seq = $3`, topic, partition, seq)
	return err
}

// Reset stores a new next offset and the incarnation it is a position in (Guard).
func (s *OffsetStore) Reset(ctx context.Context, topic string, partition int32, next int64, incarnation string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO "+s.offsets+` (topic, partition_id, next_offset, incarnation) VALUES ($1, $2, $3, $4)
			ON CONFLICT (topic, partition_id) DO UPDATE SET next_offset = $3, incarnation = $4`, topic, partition, next, incarnation)
		return err
	})
}

// SetIncarnation stores the incarnation of the log the stored offset is a position in,
// leaving the offset as it is.
func (s *OffsetStore) SetIncarnation(ctx context.Context, topic string, partition int32, incarnation string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO "+s.offsets+` (topic, partition_id, next_offset, incarnation) VALUES ($1, $2, 0, $3)
			ON CONFLICT (topic, partition_id) DO UPDATE SET incarnation = $3`, topic, partition, incarnation)
		return err
	})
}

// Save records the next offset inside the caller's transaction.
func (s *OffsetStore) Save(ctx context.Context, tx *sql.Tx, topic string, partition int32, next int64) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO "+s.offsets+` (topic, partition_id, next_offset) VALUES ($1, $2, $3)
		ON CONFLICT (topic, partition_id) DO UPDATE SET next_offset = $3`, topic, partition, next)
	return err
}

// DeadLetter records, inside the caller's transaction, that the record at offset can never
// be applied and why.
func (s *OffsetStore) DeadLetter(ctx context.Context, tx *sql.Tx, topic string, partition int32, offset int64, cause string) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO "+s.deadLetrs+" (topic, partition_id, record_offset, error, failed_ms) VALUES ($1, $2, $3, $4, $5)",
		topic, partition, offset, cause, time.Now().UnixMilli())
	return err
}

// Checkpoint is the position a batch leaves its consumer at, saved in the transaction
// that applies it: Next is the offset to read next (0 saves none: the records were fetched
// from their owner, or the consumer keeps no offsets), Seq the owner's number of the last
// record applied (Sequenced; 0 saves none).
type Checkpoint struct {
	Topic     string
	Partition int32
	Next      int64
	Seq       int64
}

// Step is a batch after the first phase of a Consumer (Prepare, outside any transaction):
// the second phase, inside the transaction that saves the consumer's checkpoint, and the
// third, once that transaction committed.
type Step struct {
	// Apply writes the batch inside the transaction in which the consumer saves its
	// checkpoint.
	Apply func(ctx context.Context, tx *sql.Tx) error
	// Commit replaces Apply for a component whose storage opens its own write transactions
	// (the sync API): it writes the batch and saves cp with it (OffsetStore.Save and
	// SaveSeq), in one transaction.
	Commit func(ctx context.Context, cp Checkpoint) error
	// After, if set, runs once the batch committed: waking waiters, streams and queues.
	// Waking them earlier could let them read before the batch is there. The batch is
	// applied whatever After does, so After retries what must happen until ctx ends.
	After func(ctx context.Context)
	// Take, if above 0 and below the batch's length, makes the step cover only the batch's
	// first Take records: they commit with the checkpoint after the last of them, and the
	// rest is prepared again as a batch of its own. A consumer whose batches can be large
	// to write (the push reader) keeps its transactions short with it.
	Take int
}

// Consumer is the one consumer runtime: it applies the records of a topic's partitions
// exactly once from the component's point of view, each batch in three phases. Prepare
// runs outside any transaction (decoding, queries to other components); the Step it returns
// is applied in one transaction that also saves the checkpoint; its After runs once that
// committed.
//
// The poison policy: a failing batch is applied again record by record. A record that
// fails is retried with backoff (Backoff, doubling up to 5s), and after MaxAttempts
// attempts, or at once when its error is marked Poison, written to the dead-letter table
// with its error, counted (dendrite_eventlog_dead_letters_total), logged and passed. Errors
// marked Retry (another component or the log is down), and those saying the database is
// unavailable (see transient), are retried with backoff without a bound. While a record is
// being retried, the log's Ready reports the partition (ErrStuck).
type Consumer struct {
	Log        Log
	DB         *sqlutil.DB
	Offsets    *OffsetStore
	Topic      string
	Partitions []int32
	// Name is the consuming component, the consumer label of the metrics.
	Name string
	// MaxAttempts bounds the attempts at a failing record (default 5).
	MaxAttempts int
	// Backoff is the first wait before a failed record is tried again (default 100ms).
	Backoff time.Duration
	// Handle is the second phase alone, for a consumer that needs no first or third phase.
	Handle func(ctx context.Context, tx *sql.Tx, recs []Record) error
	// Prepare, if set, replaces Handle: the first phase, called with each batch before the
	// transaction opens (for the queries to other components a handler must not make
	// while holding it); it returns the batch's other phases.
	Prepare func(ctx context.Context, recs []Record) (Step, error)
	// Applied, if set, is called when a partition starts (with the offset it resumes at)
	// and after each committed batch or dead letter, with the partition's next offset.
	Applied func(partition int32, next int64)
	// DeadLettered, if set, is called once a record's dead letter committed, with the error
	// it failed with, before Applied reports the partition past it: for a consumer whose
	// writers wait for their record's outcome, to tell them it failed.
	DeadLettered func(partition int32, r Record, cause error)
	// Progress, if set, follows how far the consumer has applied each partition, for
	// another consumer or a request handler to wait on (Progress.CatchUp): each partition
	// is Reset to the offset it resumes at when it starts, so a consumer that resumes at
	// the end of its partitions is caught up before its first batch, and Set after each
	// committed batch.
	Progress *Progress
	// Sequenced, if set, applies the records by their owner's numbers (see Sequenced) and
	// runs every partition under a Guard: after its log was wiped, the consumer catches up
	// from the owner and goes on at the new log's start.
	Sequenced *Sequenced
	// Guarded runs every partition under a Guard even without Sequenced: after its log was
	// wiped the consumer restarts at the new log's start, and what the wiped log held
	// beyond its offset is lost to it (logged as an error), since the topic's owner has no
	// replay. Without it (and without Sequenced) such a partition stops (ErrOffsetPastEnd).
	Guarded bool
	// FromEnd makes a consumer of state that lives in memory (typing): it keeps no
	// offsets, starts at the end of every partition each time it runs, and opens a
	// transaction only for a Step with Apply (and for dead letters).
	FromEnd bool
	Logger  *logrus.Entry
	Metrics *Metrics
}

// Run consumes every partition in parallel until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	if c.Sequenced != nil || c.Guarded {
		return c.runGuarded(ctx)
	}
	next, err := c.starts(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for i, p := range c.Partitions {
		g.Go(func() error { return c.consume(ctx, p, Stored{Next: next[i]}, func(int64) {}) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// starts are the offsets the partitions resume at: the stored ones, or the partitions'
// ends (FromEnd). The stored offsets are loaded one after the other: loading them in the
// partitions' goroutines opened a connection per partition at once (PostgreSQL: 150
// connections for an idle monolith, over the server's default max_connections of 100).
func (c *Consumer) starts(ctx context.Context) ([]int64, error) {
	next := make([]int64, len(c.Partitions))
	if c.FromEnd {
		ends, err := c.Log.EndOffsets(ctx, c.Topic)
		if err != nil {
			return nil, fmt.Errorf("load end offsets of %s: %w", c.Topic, err)
		}
		for i, p := range c.Partitions {
			if int(p) < len(ends) {
				next[i] = ends[p]
			}
		}
		return next, nil
	}
	for i, p := range c.Partitions {
		n, err := c.Offsets.Next(ctx, c.Topic, p)
		if err != nil {
			return nil, fmt.Errorf("load offset of %s/%d: %w", c.Topic, p, err)
		}
		next[i] = n
	}
	return next, nil
}

// started reports that the partition resumes at next.
func (c *Consumer) started(partition int32, next int64) {
	if c.Progress != nil {
		c.Progress.Reset(c.Topic, partition, next)
	}
	if c.Applied != nil {
		c.Applied(partition, next)
	}
}

// applied reports that the partition is applied up to next.
func (c *Consumer) applied(partition int32, next int64) {
	if c.Progress != nil {
		c.Progress.Set(c.Topic, partition, next)
	}
	if c.Applied != nil {
		c.Applied(partition, next)
	}
}

// consume consumes a partition from st, applying the records by their owner's numbers
// when the consumer is Sequenced.
func (c *Consumer) consume(ctx context.Context, partition int32, st Stored, advanced func(int64)) error {
	next, last := st.Next, st.Seq
	c.started(partition, next)
	return c.Log.Consume(ctx, c.Topic, partition, next, func(ctx context.Context, recs []Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			return nil
		}
		var err error
		if c.Sequenced == nil {
			err = c.applyBatch(ctx, partition, recs, 0)
		} else {
			last, err = c.Sequenced.Apply(ctx, c.Topic, partition, last, recs, func(ctx context.Context, run []Record, seq, next int64) error {
				return c.applyRun(ctx, partition, run, seq, next)
			})
		}
		if err != nil {
			return err
		}
		next = recs[len(recs)-1].Offset + 1
		advanced(next)
		return nil
	})
}

// prepare runs the first phase of recs.
func (c *Consumer) prepare(ctx context.Context, recs []Record) (Step, error) {
	if c.Prepare != nil {
		return c.Prepare(ctx, recs)
	}
	return Step{Apply: func(ctx context.Context, tx *sql.Tx) error { return c.Handle(ctx, tx, recs) }}, nil
}

// apply runs the three phases of recs (seq: the owner's number of the last, 0 for none)
// and returns how many of them it applied: all, or the first Step.Take. The transaction
// saves the offset after the last applied (unless they were fetched from the owner:
// Offset -1) and its seq when above 0.
func (c *Consumer) apply(ctx context.Context, partition int32, recs []Record, seq int64) (int, error) {
	step, err := c.prepare(ctx, recs)
	if err != nil {
		return 0, err
	}
	n := len(recs)
	if step.Take > 0 && step.Take < n {
		n = step.Take
		seq = c.seqOf(recs[n-1], seq, len(recs))
	}
	last := recs[n-1]
	cp := Checkpoint{Topic: c.Topic, Partition: partition, Next: last.Offset + 1, Seq: seq}
	if c.FromEnd {
		cp.Next, cp.Seq = 0, 0
	}
	if err := c.commit(ctx, step, cp); err != nil {
		return 0, err
	}
	c.Metrics.consumed(c.Topic, c.Name, n)
	if step.After != nil {
		step.After(ctx)
	}
	if next := last.Offset + 1; next > 0 {
		c.applied(partition, next)
	}
	return n, nil
}

// commit runs the second phase of step and saves cp in one transaction.
func (c *Consumer) commit(ctx context.Context, step Step, cp Checkpoint) error {
	if step.Commit != nil {
		return step.Commit(ctx, cp)
	}
	if step.Apply == nil && cp.Next <= 0 && cp.Seq <= 0 {
		return nil
	}
	return c.DB.WithTx(ctx, func(tx *sql.Tx) error {
		if step.Apply != nil {
			if err := step.Apply(ctx, tx); err != nil {
				return err
			}
		}
		return c.savePosition(ctx, tx, cp)
	})
}

// savePosition saves cp's next offset (when above 0: not for fetched records) and its
// seq (when above 0).
func (c *Consumer) savePosition(ctx context.Context, tx *sql.Tx, cp Checkpoint) error {
	if cp.Next > 0 {
		if err := c.Offsets.Save(ctx, tx, c.Topic, cp.Partition, cp.Next); err != nil {
			return err
		}
	}
	if cp.Seq > 0 {
		return c.Offsets.SaveSeq(ctx, tx, c.Topic, cp.Partition, cp.Seq)
	}
	return nil
}

// runGuarded runs every partition under a Guard whose recovery catches up from the owner
// (Sequenced) or does nothing.
func (c *Consumer) runGuarded(ctx context.Context) error {
	g := &Guard{Log: c.Log, Offsets: c.Offsets, Topic: c.Topic, Logger: c.Logger, Metrics: c.Metrics}
	if c.Sequenced != nil {
		c.Sequenced = c.Sequenced.Reporting(c.Logger, c.Metrics)
		g.Recover = func(ctx context.Context, partition int32) error {
			st, err := c.Offsets.Position(ctx, c.Topic, partition)
			if err != nil {
				return err
			}
			_, err = c.Sequenced.CatchUp(ctx, c.Topic, partition, st.Seq, 0, func(ctx context.Context, recs []Record, seq, next int64) error {
				return c.applyRun(ctx, partition, recs, seq, next)
			})
			return err
		}
	}
	eg, ctx := errgroup.WithContext(ctx)
	for _, p := range c.Partitions {
		eg.Go(func() error {
			return g.Run(ctx, p, func(ctx context.Context, st Stored, advanced func(int64)) error {
				return c.consume(ctx, p, st, advanced)
			})
		})
	}
	err := eg.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// applyRun applies a run of numbered records ending at seq (see SeqApply); an empty run
// only saves the checkpoint.
func (c *Consumer) applyRun(ctx context.Context, partition int32, run []Record, seq, next int64) error {
	if len(run) > 0 {
		return c.applyBatch(ctx, partition, run, seq)
	}
	err := c.DB.WithTx(ctx, func(tx *sql.Tx) error {
		return c.savePosition(ctx, tx, Checkpoint{Topic: c.Topic, Partition: partition, Next: next, Seq: seq})
	})
	if err == nil && next > 0 {
		c.applied(partition, next)
	}
	return err
}

// applyBatch applies recs (seq: the owner's number of the last, 0 for none) in one
// transaction, or in several when the steps take parts of it (Step.Take); when that fails
// it applies the records not applied yet one at a time under the poison policy. It fails
// only when ctx ends.
func (c *Consumer) applyBatch(ctx context.Context, partition int32, recs []Record, seq int64) error {
	for len(recs) > 1 {
		n, err := c.apply(ctx, partition, recs, seq)
		if err == nil {
			recs = recs[n:]
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		c.Metrics.failed(c.Topic, c.Name)
		c.Logger.WithError(err).WithFields(logrus.Fields{"topic": c.Topic, "partition": partition, "offset": recs[0].Offset, "records": len(recs)}).
			Warn("applying a batch failed; applying its records one at a time")
		break
	}
	for _, r := range recs {
		if err := c.applyOne(ctx, partition, r, c.seqOf(r, seq, len(recs))); err != nil {
			return err
		}
	}
	return nil
}

// seqOf is the owner's number of r, one of n records whose last is numbered seq (0: none).
func (c *Consumer) seqOf(r Record, seq int64, n int) int64 {
	if n == 1 || c.Sequenced == nil {
		return seq
	}
	s, err := c.Sequenced.Seq(r.Value)
	if err != nil {
		return 0
	}
	return s
}

// applyOne applies one record (numbered seq, or 0) under the poison policy (see Consumer).
// It fails only when ctx ends.
func (c *Consumer) applyOne(ctx context.Context, partition int32, r Record, seq int64) error {
	b := newBackoffFrom(c.Backoff)
	var unstuck func()
	defer func() {
		if unstuck != nil {
			unstuck()
		}
	}()
	limit := c.MaxAttempts
	if limit <= 0 {
		limit = 5
	}
	log := c.Logger.WithFields(logrus.Fields{"topic": c.Topic, "partition": partition, "offset": r.Offset})
	for attempt := 1; ; attempt++ {
		_, err := c.apply(ctx, partition, []Record{r}, seq)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.Metrics.failed(c.Topic, c.Name)
		if !transient(err) && (IsPoison(err) || attempt >= limit) {
			return c.deadLetter(ctx, log, partition, r, seq, err)
		}
		log.WithError(err).WithField("attempt", attempt).Warn("applying a record failed; retrying")
		if unstuck == nil {
			unstuck = c.stuck(partition)
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}

// transient reports whether a failure is retried without bound rather than dead-lettered
// after MaxAttempts: marked Retry by the handler, or, unless marked Poison, saying that the
// database could not serve the write at the time (sqlutil.IsUnavailable: unreachable,
// shutting down, out of connections, or the transaction aborted in a deadlock or a
// serialization conflict), so that an outage never dead-letters a record.
func transient(err error) bool {
	return IsRetry(err) || (!IsPoison(err) && sqlutil.IsUnavailable(err))
}

// stuck counts the partition in the log's Ready (ErrStuck) until the returned function is
// called.
func (c *Consumer) stuck(partition int32) func() {
	if m, ok := c.Log.(recoveryMarker); ok {
		return m.retrying(c.Topic, partition)
	}
	return func() {}
}

// deadLetter records that r can never be applied and why, with the checkpoint after it,
// retrying the write with backoff until it succeeds or ctx ends; it logs and counts it.
func (c *Consumer) deadLetter(ctx context.Context, log *logrus.Entry, partition int32, r Record, seq int64, cause error) error {
	cp := Checkpoint{Topic: c.Topic, Partition: partition, Next: r.Offset + 1, Seq: seq}
	if c.FromEnd {
		cp.Next, cp.Seq = 0, 0
	}
	b := newBackoffFrom(c.Backoff)
	for {
		err := c.DB.WithTx(ctx, func(tx *sql.Tx) error {
			if err := c.Offsets.DeadLetter(ctx, tx, r.Topic, r.Partition, r.Offset, cause.Error()); err != nil {
				return err
			}
			return c.savePosition(ctx, tx, cp)
		})
		if err == nil {
			break
		}
		log.WithError(err).Warn("recording a dead letter failed; retrying")
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
	log.WithError(cause).Error("record dead-lettered: it can never be applied")
	c.Metrics.deadLettered(c.Topic, c.Name)
	if c.DeadLettered != nil {
		c.DeadLettered(partition, r, cause)
	}
	if r.Offset >= 0 {
		c.applied(partition, r.Offset+1)
	}
	return nil
}

// NewComponentConsumer is a guarded Consumer of every partition of topic whose offsets and
// dead letters live in the component's own database db (see NewOffsetStore).
func NewComponentConsumer(ctx context.Context, log Log, db *sqlutil.DB, component, topic string,
	handle func(ctx context.Context, tx *sql.Tx, recs []Record) error, logger *logrus.Entry, metrics *Metrics) (*Consumer, error) {
	offsets, err := NewOffsetStore(ctx, db, component)
	if err != nil {
		return nil, fmt.Errorf("open %s offsets: %w", component, err)
	}
	return &Consumer{Log: log, DB: db, Offsets: offsets, Topic: topic, Partitions: AllPartitions(log, topic), Name: component,
		Handle: handle, Guarded: true, Logger: logger, Metrics: metrics}, nil
}

// ProduceFromHandler appends msgs, if any, from inside a Consumer's Handle: a failure is
// marked transient (Retry), so the batch is retried rather than dead-lettered.
func ProduceFromHandler(ctx context.Context, log Log, topic string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if _, err := log.Produce(ctx, topic, msgs...); err != nil {
		return Retry(err)
	}
	return nil
}
