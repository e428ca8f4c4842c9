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
)`}})
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
	// Applied, if set, is called after each committed batch with the partition's next offset.
	Applied func(partition int32, next int64)
	Logger  *logrus.Entry
	Metrics *Metrics
}

// Run consumes every partition in parallel until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
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
		g.Go(func() error { return c.runPartition(ctx, p, next[i]) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

func (c *Consumer) runPartition(ctx context.Context, partition int32, next int64) error {
	if c.Applied != nil {
		c.Applied(partition, next)
	}
	attempts := map[int64]int{}
	return c.Log.Consume(ctx, c.Topic, partition, next, func(ctx context.Context, recs []Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			return nil
		}
		err := c.apply(ctx, partition, recs)
		if err != nil && len(recs) > 1 {
			// Find the poison record: apply one at a time.
			for _, r := range recs {
				if r.Offset < next {
					continue
				}
				if err = c.applyOne(ctx, partition, r, attempts); err != nil {
					break
				}
				next = r.Offset + 1
			}
			return err
		}
		if err != nil {
			return c.applyOne(ctx, partition, recs[0], attempts)
		}
		next = recs[len(recs)-1].Offset + 1
		return nil
	})
}

func (c *Consumer) apply(ctx context.Context, partition int32, recs []Record) error {
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
		return c.Offsets.Save(ctx, tx, c.Topic, partition, next)
	})
	if err != nil {
		return err
	}
	c.Metrics.consumed(c.Topic, len(recs))
	if c.Applied != nil {
		c.Applied(partition, next)
	}
	return nil
}

// applyOne applies one record, dead-lettering it after too many attempts.
func (c *Consumer) applyOne(ctx context.Context, partition int32, r Record, attempts map[int64]int) error {
	err := c.apply(ctx, partition, []Record{r})
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
		return c.Offsets.Save(ctx, tx, c.Topic, partition, r.Offset+1)
	})
	if derr != nil {
		return derr
	}
	c.Metrics.deadLettered(c.Topic)
	if c.Applied != nil {
		c.Applied(partition, r.Offset+1)
	}
	return nil
}

// NewComponentConsumer is a Consumer of every partition of topic whose offsets and dead
// letters live in the component's own database db (see NewOffsetStore).
func NewComponentConsumer(ctx context.Context, log Log, db *sqlutil.DB, component, topic string,
	handle func(ctx context.Context, tx *sql.Tx, recs []Record) error, logger *logrus.Entry, metrics *Metrics) (*Consumer, error) {
	offsets, err := NewOffsetStore(ctx, db, component)
	if err != nil {
		return nil, fmt.Errorf("open %s offsets: %w", component, err)
	}
	return &Consumer{Log: log, DB: db, Offsets: offsets, Topic: topic, Partitions: AllPartitions(log, topic), Name: component,
		Handle: handle, Logger: logger, Metrics: metrics}, nil
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
