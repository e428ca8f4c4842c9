package eventlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// outboxRetry bounds the wait between attempts to produce what a failed attempt left.
const outboxRetry = 5 * time.Second

// outboxPruneInterval is how often, at most, produced records past the replay window are
// deleted.
const outboxPruneInterval = 10 * time.Minute

// DefaultReplayWindow is an outbox's window when none is configured.
const DefaultReplayWindow = 7 * 24 * time.Hour

// MaxOutputRecords caps an Outbox.Records answer.
const MaxOutputRecords = 500

// OutboxOptions name an owner's outbox.
type OutboxOptions struct {
	// Component names the tables: "<component>_outbox" and "<component>_output_seqs".
	Component string
	// Topic is the output topic's full name (with the configured prefix).
	Topic string
	// Window is how long produced records are kept for replay (0: DefaultReplayWindow);
	// negative keeps them forever.
	Window time.Duration
	Logger *logrus.Entry
}

// Outbox is an owner's durable copy of one output topic, for owners whose records are not
// kept elsewhere (the receiptserver, the pushserver's counts, the presenceserver): each
// record is numbered in its partition (dense from 1) and stored in the transaction that
// stores what it reports (Insert), produced once committed, one sender at a time and in
// the order stored, and kept for the replay window, served by number (Records) to the
// readers that apply the topic with Sequenced. The eduserver and the userapi keep outboxes
// of the same shape in their own stores.
type Outbox struct {
	db    *sqlutil.DB
	log   Log
	opts  OutboxOptions
	table string
	seqs  string
	mu    sync.Mutex
	wake  chan struct{}
}

// NewOutbox creates the outbox's tables in db (the owner's database) if needed.
func NewOutbox(ctx context.Context, db *sqlutil.DB, log Log, opts OutboxOptions) (*Outbox, error) {
	if opts.Window == 0 {
		opts.Window = DefaultReplayWindow
	}
	o := &Outbox{db: db, log: log, opts: opts, table: opts.Component + "_outbox", seqs: opts.Component + "_output_seqs",
		wake: make(chan struct{}, 1)}
	err := sqlutil.Migrate(ctx, db, opts.Component+"_outbox", []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS ` + o.table + ` (
	id {serial},
	partition_id INTEGER NOT NULL,
	partition_seq {bigint} NOT NULL,
	msg_key TEXT NOT NULL,
	payload {bytes} NOT NULL,
	produced BOOLEAN NOT NULL DEFAULT FALSE,
	created_ms {bigint} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ` + o.table + `_partition ON ` + o.table + ` (partition_id, partition_seq);
CREATE INDEX IF NOT EXISTS ` + o.table + `_unproduced ON ` + o.table + ` (id) WHERE NOT produced;
CREATE TABLE IF NOT EXISTS ` + o.seqs + ` (
	partition_id INTEGER NOT NULL PRIMARY KEY,
	last_seq {bigint} NOT NULL
)`}})
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", o.table, err)
	}
	return o, nil
}

// Insert numbers a record for key's partition and stores it, in tx; payload makes the
// record from its number (which the record must carry as "seq", see SeqOf). The number's
// row stays locked until tx ends (PostgreSQL's row lock; SQLite serializes writes), so a
// record becomes visible only after every record numbered below it in its partition. Call
// Wake once tx committed.
func (o *Outbox) Insert(ctx context.Context, tx *sql.Tx, key string, payload func(seq int64) ([]byte, error)) error {
	return o.InsertBatch(ctx, tx, []OutboxRecord{{Key: key, Payload: payload}})
}

// OutboxRecord is a record for InsertBatch: its key, and what makes it from its number.
type OutboxRecord struct {
	Key     string
	Payload func(seq int64) ([]byte, error)
}

// outboxRows is how many records one INSERT of InsertBatch stores.
const outboxRows = 100

// InsertBatch stores recs in tx as Insert stores each, in their order within each
// partition, with one statement per partition to number them and one per outboxRows
// records to store them: the push server announces the counts of a thousand members
// after a message, which record by record took two thousand statements. Partitions are
// numbered in ascending order, so that transactions lock their rows in one order.
func (o *Outbox) InsertBatch(ctx context.Context, tx *sql.Tx, recs []OutboxRecord) error {
	parts := o.log.Partitions(o.opts.Topic)
	byPartition := map[int32][]OutboxRecord{}
	for _, r := range recs {
		p := PartitionFor([]byte(r.Key), parts)
		byPartition[p] = append(byPartition[p], r)
	}
	partitions := make([]int32, 0, len(byPartition))
	for p := range byPartition {
		partitions = append(partitions, p)
	}
	slices.Sort(partitions)
	now := time.Now().UnixMilli()
	args := make([]any, 0, 5*len(recs))
	for _, p := range partitions {
		precs := byPartition[p]
		var last int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO `+o.seqs+` (partition_id, last_seq) VALUES ($1, $2)
			ON CONFLICT (partition_id) DO UPDATE SET last_seq = `+o.seqs+`.last_seq + $2 RETURNING last_seq`,
			p, int64(len(precs))).Scan(&last); err != nil {
			return fmt.Errorf("number output: %w", err)
		}
		for i, r := range precs {
			seq := last - int64(len(precs)) + int64(i) + 1
			value, err := r.Payload(seq)
			if err != nil {
				return err
			}
			args = append(args, p, seq, r.Key, value, now)
		}
	}
	for len(args) > 0 {
		chunk := args[:min(len(args), 5*outboxRows)]
		args = args[len(chunk):]
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+o.table+` (partition_id, partition_seq, msg_key, payload, created_ms) VALUES `+
			o.db.Dialect.Rows(len(chunk)/5, 5), chunk...); err != nil {
			return fmt.Errorf("insert output: %w", err)
		}
	}
	return nil
}

// Wake asks Run to produce what was stored; it never blocks.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// outboxRow is a stored record.
type outboxRow struct {
	id      int64
	seq     int64
	key     string
	payload []byte
}

// send produces every stored record not yet produced and marks them produced. A record
// produced but not marked (the process died in between) is produced again, which readers
// skip by its number.
func (o *Outbox) send(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	rows, err := o.rows(ctx, "SELECT id, partition_seq, msg_key, payload FROM "+o.table+" WHERE NOT produced ORDER BY id")
	if err != nil || len(rows) == 0 {
		return err
	}
	msgs := make([]Message, 0, len(rows))
	ids := make([]int64, 0, len(rows))
	for _, r := range rows {
		ids = append(ids, r.id)
		msgs = append(msgs, Message{Key: []byte(r.key), Value: r.payload})
	}
	if _, err = o.log.Produce(ctx, o.opts.Topic, msgs...); err != nil {
		return fmt.Errorf("produce to %s: %w", o.opts.Topic, err)
	}
	query, args := o.db.Dialect.InList("UPDATE "+o.table+" SET produced = TRUE WHERE id IN ({list})", "{list}", nil, ids)
	if _, err = o.db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("mark outputs produced: %w", err)
	}
	return nil
}

// Run produces what was stored whenever woken (and at start: what a crash left), retrying
// a failed produce, and deletes produced records older than the window (never with a
// negative window), until ctx ends.
func (o *Outbox) Run(ctx context.Context) error {
	prune := time.NewTicker(min(max(o.opts.Window/2, time.Second), outboxPruneInterval))
	defer prune.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			if o.opts.Window < 0 {
				continue
			}
			if _, err := o.db.ExecContext(ctx, "DELETE FROM "+o.table+" WHERE produced AND created_ms < $1",
				time.Now().Add(-o.opts.Window).UnixMilli()); err != nil && ctx.Err() == nil {
				o.opts.Logger.WithError(err).WithField("topic", o.opts.Topic).Warn("pruning the outbox failed")
			}
			continue
		case <-o.wake:
		case <-retry.C:
		}
		if err := o.send(ctx); err != nil && ctx.Err() == nil {
			o.opts.Logger.WithError(err).WithField("topic", o.opts.Topic).Warn("producing stored records failed; retrying")
			retry.Reset(outboxRetry)
		}
	}
}

// Records returns at most limit (default and cap MaxOutputRecords) records of partition
// numbered above after, in order, exactly as produced, and the partition's last number (0:
// none yet). A gap between after and the first record kept means the records were pruned
// (older than the replay window): 404 M_NOT_FOUND, which OwnerSequenced's pastWindow
// recognises by its status (HTTPNotFound). after 0 asks for the oldest records kept, and is
// never past the window.
func (o *Outbox) Records(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
	if limit <= 0 || limit > MaxOutputRecords {
		limit = MaxOutputRecords
	}
	var last int64
	err := o.db.QueryRowContext(ctx, "SELECT last_seq FROM "+o.seqs+" WHERE partition_id = $1", partition).Scan(&last)
	if err != nil && err != sql.ErrNoRows {
		return nil, 0, fmt.Errorf("select last output number: %w", err)
	}
	rows, err := o.rows(ctx, "SELECT id, partition_seq, msg_key, payload FROM "+o.table+
		" WHERE partition_id = $1 AND partition_seq > $2 ORDER BY partition_seq LIMIT $3", partition, after, limit)
	if err != nil {
		return nil, 0, err
	}
	next := after + 1
	if after > 0 && ((len(rows) > 0 && rows[0].seq != next) || (len(rows) == 0 && last >= next)) {
		return nil, 0, matrixerr.NotFound(fmt.Sprintf("output records after %d are past the replay window", after))
	}
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		out[i] = r.payload
	}
	return out, last, nil
}

func (o *Outbox) rows(ctx context.Context, query string, args ...any) ([]outboxRow, error) {
	rows, err := o.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select outbox: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.seq, &r.key, &r.payload); err != nil {
			return nil, fmt.Errorf("scan outbox: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// HTTPNotFound reports whether err is a 404 (in-process or over internal HTTP): an owner's
// answer that the records asked for are past its replay window. It is the pastWindow of
// OwnerSequenced for the owners that serve Outbox.Records.
func HTTPNotFound(err error) bool {
	var merr *matrixerr.Error
	return errors.As(err, &merr) && merr.Status == http.StatusNotFound
}
