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

// Consumer applies the records of a topic's partitions exactly once from the component's
// point of view: each batch is applied by Handle inside one transaction that also saves the
// next offset. A failing batch is retried record by record; a record that fails MaxAttempts
// times is written to the dead-letter table, counted and skipped. Errors marked with Retry
// are retried forever.
type Consumer struct {
	Log         Log
	DB          *sqlutil.DB
	Offsets     *OffsetStore
	Topic       string
	Partitions  []int32
	Name        string
	MaxAttempts int
	Handle      func(ctx context.Context, tx *sql.Tx, recs []Record) error
	// Prepare, if set, replaces Handle: it is called with each batch before the
	// transaction opens (for the queries to other components a handler must not make
	// while holding it) and returns what to apply inside the transaction.
	Prepare func(ctx context.Context, recs []Record) (func(ctx context.Context, tx *sql.Tx) error, error)
	// Applied, if set, is called when a partition starts (with the offset it resumes at)
	// and after each committed batch, with the partition's next offset.
	Applied func(partition int32, next int64)
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
	Logger  *logrus.Entry
	Metrics *Metrics
}

// Run consumes every partition in parallel until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	if c.Sequenced != nil || c.Guarded {
		return c.runGuarded(ctx)
	}
	// The offsets are loaded one after the other: loading them in the partitions'
	// goroutines opened a connection per partition at once (PostgreSQL: 150 connections
	// for an idle monolith, over the server's default max_connections of 100).
	next := make([]int64, len(c.Partitions))
	for i, p := range c.Partitions {
		n, err := c.Offsets.Next(ctx, c.Topic, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("load offset of %s/%d: %w", c.Topic, p, err)
		}
		next[i] = n
	}
	g, ctx := errgroup.WithContext(ctx)
	for i, p := range c.Partitions {
		g.Go(func() error { return c.runPartition(ctx, p, next[i], func(int64) {}) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
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

func (c *Consumer) runPartition(ctx context.Context, partition int32, next int64, advanced func(int64)) error {
	c.started(partition, next)
	attempts := map[int64]int{}
	return c.Log.Consume(ctx, c.Topic, partition, next, func(ctx context.Context, recs []Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			return nil
		}
		err := c.apply(ctx, partition, recs, 0)
		if err != nil && len(recs) > 1 {
			// Find the poison record: apply one at a time.
			for _, r := range recs {
				if r.Offset < next {
					continue
				}
				if err = c.applyOne(ctx, partition, r, 0, attempts); err != nil {
					break
				}
				next = r.Offset + 1
			}
			return err
		}
		if err != nil {
			return c.applyOne(ctx, partition, recs[0], 0, attempts)
		}
		next = recs[len(recs)-1].Offset + 1
		advanced(next)
		return nil
	})
}

// apply applies recs in one transaction that saves the offset after them (unless they
// were fetched from the owner: Offset -1) and seq when above 0.
func (c *Consumer) apply(ctx context.Context, partition int32, recs []Record, seq int64) error {
	next := recs[len(recs)-1].Offset + 1
	handle := func(ctx context.Context, tx *sql.Tx) error { return c.Handle(ctx, tx, recs) }
	if c.Prepare != nil {
		var err error
		if handle, err = c.Prepare(ctx, recs); err != nil {
			return err
		}
	}
	err := c.DB.WithTx(ctx, func(tx *sql.Tx) error {
		if err := handle(ctx, tx); err != nil {
			return err
		}
		return c.savePosition(ctx, tx, partition, next, seq)
	})
	if err != nil {
		return err
	}
	c.Metrics.consumed(c.Topic, len(recs))
	if next > 0 {
		c.applied(partition, next)
	}
	return nil
}

// savePosition saves next (when above 0: not for fetched records) and seq (when above 0).
func (c *Consumer) savePosition(ctx context.Context, tx *sql.Tx, partition int32, next, seq int64) error {
	if next > 0 {
		if err := c.Offsets.Save(ctx, tx, c.Topic, partition, next); err != nil {
			return err
		}
	}
	if seq > 0 {
		return c.Offsets.SaveSeq(ctx, tx, c.Topic, partition, seq)
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
			attempts := map[int64]int{}
			_, err = c.Sequenced.CatchUp(ctx, c.Topic, partition, st.Seq, 0, func(ctx context.Context, recs []Record, seq, next int64) error {
				return c.applyRun(ctx, partition, recs, seq, next, attempts)
			})
			return err
		}
	}
	eg, ctx := errgroup.WithContext(ctx)
	for _, p := range c.Partitions {
		eg.Go(func() error {
			return g.Run(ctx, p, func(ctx context.Context, st Stored, advanced func(int64)) error {
				if c.Sequenced == nil {
					return c.runPartition(ctx, p, st.Next, advanced)
				}
				return c.runSequenced(ctx, p, st, advanced)
			})
		})
	}
	err := eg.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// runSequenced consumes a partition from st, applying records by their numbers.
func (c *Consumer) runSequenced(ctx context.Context, partition int32, st Stored, advanced func(int64)) error {
	next, last := st.Next, st.Seq
	c.started(partition, next)
	attempts := map[int64]int{}
	return c.Log.Consume(ctx, c.Topic, partition, next, func(ctx context.Context, recs []Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			return nil
		}
		var err error
		last, err = c.Sequenced.Apply(ctx, c.Topic, partition, last, recs, func(ctx context.Context, run []Record, seq, next int64) error {
			return c.applyRun(ctx, partition, run, seq, next, attempts)
		})
		if err != nil {
			return err
		}
		next = recs[len(recs)-1].Offset + 1
		advanced(next)
		return nil
	})
}

// applyRun applies a run of numbered records ending at seq (see SeqApply); when the run
// fails it applies them one at a time, dead-lettering a record that keeps failing.
func (c *Consumer) applyRun(ctx context.Context, partition int32, run []Record, seq, next int64, attempts map[int64]int) error {
	if len(run) == 0 {
		err := c.DB.WithTx(ctx, func(tx *sql.Tx) error { return c.savePosition(ctx, tx, partition, next, seq) })
		if err == nil && next > 0 {
			c.applied(partition, next)
		}
		return err
	}
	err := c.apply(ctx, partition, run, seq)
	if err == nil {
		return nil
	}
	for _, r := range run {
		n, serr := c.Sequenced.Seq(r.Value)
		if serr != nil {
			n = 0
		}
		if err := c.applyOne(ctx, partition, r, n, attempts); err != nil {
			return err
		}
	}
	return nil
}

// applyOne applies one record (numbered seq, or 0), dead-lettering it after too many
// attempts.
func (c *Consumer) applyOne(ctx context.Context, partition int32, r Record, seq int64, attempts map[int64]int) error {
	err := c.apply(ctx, partition, []Record{r}, seq)
	if err == nil {
		delete(attempts, r.Offset)
		return nil
	}
	c.Metrics.failed(c.Topic)
	limit := c.MaxAttempts
	if limit <= 0 {
		limit = 5
	}
	attempts[r.Offset]++
	if IsRetry(err) || attempts[r.Offset] < limit || ctx.Err() != nil {
		c.Logger.WithError(err).WithFields(logrus.Fields{"topic": c.Topic, "partition": partition, "offset": r.Offset}).Warn("consumer failed; retrying")
		return err
	}
	c.Logger.WithError(err).WithFields(logrus.Fields{"topic": c.Topic, "partition": partition, "offset": r.Offset}).Error("record dead-lettered")
	delete(attempts, r.Offset)
	derr := c.DB.WithTx(ctx, func(tx *sql.Tx) error {
		if err := c.Offsets.DeadLetter(ctx, tx, r.Topic, r.Partition, r.Offset, err.Error()); err != nil {
			return err
		}
		return c.savePosition(ctx, tx, partition, r.Offset+1, seq)
	})
	if derr != nil {
		return derr
	}
	c.Metrics.deadLettered(c.Topic)
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
