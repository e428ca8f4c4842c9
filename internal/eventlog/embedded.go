package eventlog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

var embeddedMigrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS eventlog_records (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	record_offset {bigint} NOT NULL,
	record_key {bytes},
	record_value {bytes},
	created_ms {bigint} NOT NULL,
	PRIMARY KEY (topic, partition_id, record_offset)
);
CREATE TABLE IF NOT EXISTS eventlog_ends (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	next_offset {bigint} NOT NULL,
	PRIMARY KEY (topic, partition_id)
)`}, {Version: 2, SQL: `
CREATE TABLE IF NOT EXISTS eventlog_readers (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	readers INTEGER NOT NULL,
	PRIMARY KEY (topic, partition_id)
)`}, {Version: 3, SQL: `
ALTER TABLE eventlog_ends ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''
`}}

// Embedded is the durable log in a SQL database. Concurrent Produce calls are
// group-committed by one writer goroutine: whatever is queued when a commit starts goes in
// that commit. Consumers are woken in memory on append.
//
// Retention never drops a record a reader still needs: a record is deleted once it is older
// than Config.Retention and every reader of its partition has passed it. The log knows its
// readers as the Consume calls running on it (the monolith runs every consumer in the process
// that owns the log) and remembers, per partition, the most that ever ran at once
// (eventlog_readers). A partition is trimmed only while that many readers consume it, below
// the lowest offset any of them has yet to process (a handle returned nil for every record
// before it). So after a restart nothing is trimmed until every reader is back; a partition no
// reader ever consumed is never trimmed.
type Embedded struct {
	db  *sqlutil.DB
	cfg Config

	queue  chan *produceReq
	closed chan struct{}
	done   chan struct{}
	once   sync.Once

	mu   sync.Mutex
	ends map[partKey]int64
	// incarnations are the partitions' random IDs, made when a partition's end is first
	// stored (see Incarnation).
	incarnations map[partKey]string
	wakes        map[partKey]chan struct{}
	// active are the running Consume calls per partition; known the most that ever ran at
	// once (stored in eventlog_readers).
	active map[partKey]map[*reader]struct{}
	known  map[partKey]int

	// stalls are the partitions stopped because a consumer's offset is past their end.
	stalls *stalls
}

// reader is one running Consume call: next is the first offset it has not processed.
type reader struct {
	next int64
}

type partKey struct {
	topic     string
	partition int32
}

type produceReq struct {
	topic string
	msgs  []Message
	pos   []Position
	err   chan error
	// open, for a request without msgs, is a partition to give its incarnation (and an
	// end row at its current end) if it has none yet.
	open *int32
}

// NewEmbedded opens the log in db.
func NewEmbedded(ctx context.Context, db *sqlutil.DB, cfg Config) (*Embedded, error) {
	if err := sqlutil.Migrate(ctx, db, "eventlog", embeddedMigrations); err != nil {
		return nil, err
	}
	if err := incrementalVacuum(ctx, db); err != nil {
		return nil, err
	}
	if cfg.Retention == 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.New())
	}
	e := &Embedded{
		db: db, cfg: cfg,
		queue:  make(chan *produceReq, 4096),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
		ends:   map[partKey]int64{},

		incarnations: map[partKey]string{},
		wakes:        map[partKey]chan struct{}{},
		active:       map[partKey]map[*reader]struct{}{},
		known:        map[partKey]int{},
		stalls:       newStalls(&cfg),
	}
	if err := e.loadPartitions(ctx, "SELECT topic, partition_id, next_offset FROM eventlog_ends", func(k partKey, n int64) { e.ends[k] = n }); err != nil {
		return nil, fmt.Errorf("load log ends: %w", err)
	}
	if err := e.loadIncarnations(ctx); err != nil {
		return nil, fmt.Errorf("load log incarnations: %w", err)
	}
	if err := e.loadPartitions(ctx, "SELECT topic, partition_id, readers FROM eventlog_readers", func(k partKey, n int64) { e.known[k] = int(n) }); err != nil {
		return nil, fmt.Errorf("load log readers: %w", err)
	}
	go e.write()
	return e, nil
}

// incrementalVacuum makes a SQLite log give the pages of trimmed records back to the file
// system (Trim runs PRAGMA incremental_vacuum): a database created before it is rewritten
// once (VACUUM) to switch it on. PostgreSQL's autovacuum needs nothing.
func incrementalVacuum(ctx context.Context, db *sqlutil.DB) error {
	if db.Engine() != sqlutil.SQLite {
		return nil
	}
	conn, err := db.Conn(ctx) // the pragma and VACUUM must share a connection
	if err != nil {
		return err
	}
	defer conn.Close() // nolint: errcheck // returned to the pool
	var mode int
	if err := conn.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return fmt.Errorf("read auto_vacuum: %w", err)
	}
	const incremental = 2
	if mode == incremental {
		return nil
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return fmt.Errorf("set auto_vacuum: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "VACUUM"); err != nil {
		return fmt.Errorf("vacuum the log to switch on incremental vacuum: %w", err)
	}
	return nil
}

// loadIncarnations loads the partitions' incarnations, giving those stored before
// incarnations existed one (the same for all of them: it only has to differ from the
// partitions' later incarnations).
func (e *Embedded) loadIncarnations(ctx context.Context) error {
	err := e.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE eventlog_ends SET incarnation = $1 WHERE incarnation = ''", newIncarnation())
		return err
	})
	if err != nil {
		return err
	}
	rows, err := e.db.QueryContext(ctx, "SELECT topic, partition_id, incarnation FROM eventlog_ends")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k partKey
		var inc string
		if err := rows.Scan(&k.topic, &k.partition, &inc); err != nil {
			return err
		}
		e.incarnations[k] = inc
	}
	return rows.Err()
}

// newIncarnation is a random partition incarnation.
func newIncarnation() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// Incarnation implements Log: a random ID stored with the partition's end when the
// partition is first written or first asked about, whichever comes first (both through
// the single writer). A new log database, or one whose eventlog_ends rows were deleted
// (the offsets start again at 0), gives the partition a new one. Made on first ask, it is
// known to a consumer before it reads anything: the Guard stores it with the consumer's
// offset, so a wipe right after the consumer's first records can never pass for the same
// log grown back past its offset.
func (e *Embedded) Incarnation(ctx context.Context, topic string, partition int32) (string, error) {
	k := partKey{topic, partition}
	e.mu.Lock()
	inc, ok := e.incarnations[k]
	e.mu.Unlock()
	if ok {
		return inc, nil
	}
	req := &produceReq{topic: topic, open: &partition, err: make(chan error, 1)}
	select {
	case e.queue <- req:
	case <-e.closed:
		return "", ErrClosed
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if err := <-req.err; err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.incarnations[k], nil
}

// loadPartitions calls set for each (topic, partition, number) row of query.
func (e *Embedded) loadPartitions(ctx context.Context, query string, set func(k partKey, n int64)) error {
	rows, err := e.db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k partKey
		var n int64
		if err := rows.Scan(&k.topic, &k.partition, &n); err != nil {
			return err
		}
		set(k, n)
	}
	return rows.Err()
}

// Partitions implements Log.
func (e *Embedded) Partitions(topic string) int32 {
	return e.cfg.partitions(topic)
}

// Produce implements Log.
func (e *Embedded) Produce(ctx context.Context, topic string, msgs ...Message) ([]Position, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	start := time.Now()
	req := &produceReq{topic: topic, msgs: msgs, err: make(chan error, 1)}
	select {
	case e.queue <- req:
	case <-e.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once queued the request is committed or failed by the writer; wait for the answer
	// even if ctx ends, so the caller never mistakes a stored record for a lost one.
	err := <-req.err
	e.cfg.Metrics.produced(topic, time.Since(start))
	return req.pos, err
}

// write is the single writer: it commits every queued request in one transaction, and
// trims the log every trimInterval, a chunk at a time between the produce batches (see
// trimStep), so that a trim never holds produces back for longer than one chunk.
func (e *Embedded) write() {
	defer close(e.done)
	retention := time.NewTicker(trimInterval(e.cfg.Retention))
	defer retention.Stop()
	var trim *trimRun
	for {
		var batch []*produceReq
		if trim != nil {
			if more, err := e.trimStep(context.Background(), trim); err != nil || !more {
				if err != nil {
					e.cfg.Metrics.trimFailed()
				}
				trim = nil
			}
			select {
			case req := <-e.queue:
				batch = append(batch, req)
			case <-e.closed:
				e.failQueued()
				return
			default:
				continue
			}
		} else {
			select {
			case req := <-e.queue:
				batch = append(batch, req)
			case <-retention.C:
				trim = e.planTrim()
				continue
			case <-e.closed:
				e.failQueued()
				return
			}
		}
	drain:
		for len(batch) < 1024 {
			select {
			case req := <-e.queue:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		e.commit(batch)
	}
}

func (e *Embedded) failQueued() {
	for {
		select {
		case req := <-e.queue:
			req.err <- ErrClosed
		default:
			return
		}
	}
}

// commit stores a batch of requests and wakes consumers of the partitions it touched.
func (e *Embedded) commit(batch []*produceReq) {
	e.mu.Lock()
	ends := make(map[partKey]int64)
	fresh := map[partKey]string{}
	for _, req := range batch {
		if req.open != nil {
			k := partKey{req.topic, *req.open}
			if _, ok := e.incarnations[k]; !ok {
				if _, ok := ends[k]; !ok {
					ends[k] = e.ends[k]
				}
				if _, ok := fresh[k]; !ok {
					fresh[k] = newIncarnation()
				}
			}
			continue
		}
		n := e.cfg.partitions(req.topic)
		req.pos = make([]Position, len(req.msgs))
		for i, m := range req.msgs {
			k := partKey{req.topic, PartitionFor(m.Key, n)}
			next, ok := ends[k]
			if !ok {
				next = e.ends[k]
			}
			req.pos[i] = Position{Partition: k.partition, Offset: next}
			ends[k] = next + 1
			if _, ok := e.incarnations[k]; !ok {
				if _, ok := fresh[k]; !ok {
					fresh[k] = newIncarnation()
				}
			}
		}
	}
	e.mu.Unlock()
	now := time.Now().UnixMilli()
	err := e.db.WithTx(context.Background(), func(tx *sql.Tx) error {
		stmt, err := tx.Prepare("INSERT INTO eventlog_records (topic, partition_id, record_offset, record_key, record_value, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
		if err != nil {
			return err
		}
		defer stmt.Close() // nolint: errcheck // closing a prepared statement in a finished tx cannot lose data
		for _, req := range batch {
			for i, m := range req.msgs {
				if _, err := stmt.Exec(req.topic, req.pos[i].Partition, req.pos[i].Offset, m.Key, m.Value, now); err != nil {
					return err
				}
			}
		}
		for k, next := range ends {
			inc, ok := fresh[k]
			if !ok {
				inc = e.incarnations[k]
			}
			if _, err := tx.Exec(`INSERT INTO eventlog_ends (topic, partition_id, next_offset, incarnation) VALUES ($1, $2, $3, $4)
				ON CONFLICT (topic, partition_id) DO UPDATE SET next_offset = $3`, k.topic, k.partition, next, inc); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		e.mu.Lock()
		for k, inc := range fresh {
			e.incarnations[k] = inc
		}
		for k, next := range ends {
			e.ends[k] = next
			if ch, ok := e.wakes[k]; ok {
				close(ch)
				delete(e.wakes, k)
			}
		}
		e.mu.Unlock()
	} else {
		err = fmt.Errorf("append to event log: %w", err)
	}
	for _, req := range batch {
		if err != nil {
			req.pos = nil
		}
		req.err <- err
	}
}

// trimInterval is how often the log trims: a quarter of the retention, from a second to a
// minute, so that a consumed record stays at most about 1.25 times the retention (at the
// monolith's 600 messages a second, a minute's records are some 50 MB).
func trimInterval(retention time.Duration) time.Duration {
	return min(time.Minute, max(time.Second, retention/4))
}

// Trim deletes the records older than the retention period that every reader of their
// partition has processed (see Embedded), and on SQLite gives their pages back to the file
// system. The log's writer runs it every trimInterval, a chunk at a time.
func (e *Embedded) Trim(ctx context.Context) error {
	run := e.planTrim()
	for run != nil {
		more, err := e.trimStep(ctx, run)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// trimChunk is the most offsets of a partition one trim transaction deletes, and
// trimPages the most pages one incremental vacuum gives back. At the monolith's 600
// messages a second a trim deletes some 40,000 records; in one transaction, a trim of
// 40,000 records of 1 KB held a produce back for 1.1 s, and in these chunks for 41-43 ms.
const (
	trimChunk = 256
	trimPages = 128
)

// trimRun is a trim under way: below each partition's offset every reader is done (the
// partitions left to trim), oldest is the oldest kept offset of a partition once a chunk of
// it was deleted (the offsets are dense), and cutoff is the retention's (created_ms).
type trimRun struct {
	below  map[partKey]int64
	oldest map[partKey]int64
	cutoff int64
	vacuum bool
}

// planTrim returns the trim of the partitions all of whose readers run, or nil when there
// is nothing to trim.
func (e *Embedded) planTrim() *trimRun {
	if e.cfg.Retention < 0 {
		return nil
	}
	run := &trimRun{below: map[partKey]int64{}, oldest: map[partKey]int64{}, cutoff: time.Now().Add(-e.cfg.Retention).UnixMilli()}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, readers := range e.active {
		if len(readers) == 0 || len(readers) < e.known[k] {
			continue
		}
		low := int64(-1)
		for r := range readers {
			if low < 0 || r.next < low {
				low = r.next
			}
		}
		run.below[k] = low
	}
	if len(run.below) == 0 {
		return nil
	}
	return run
}

// trimStep does one transaction of run: it deletes up to trimChunk offsets of a partition
// left to trim, or when none is left, on SQLite gives up to trimPages pages back. It
// reports whether run has more to do.
func (e *Embedded) trimStep(ctx context.Context, run *trimRun) (bool, error) {
	for k, low := range run.below {
		oldest, known := run.oldest[k]
		if !known {
			var first sql.NullInt64
			if err := e.db.QueryRowContext(ctx, "SELECT MIN(record_offset) FROM eventlog_records WHERE topic = $1 AND partition_id = $2",
				k.topic, k.partition).Scan(&first); err != nil {
				return false, fmt.Errorf("trim %s/%d: %w", k.topic, k.partition, err)
			}
			oldest = first.Int64
			if !first.Valid {
				oldest = low
			}
		}
		if oldest >= low {
			delete(run.below, k)
			continue
		}
		upto := min(low, oldest+trimChunk)
		res, err := e.db.ExecContext(ctx, "DELETE FROM eventlog_records WHERE topic = $1 AND partition_id = $2 AND record_offset < $3 AND created_ms < $4",
			k.topic, k.partition, upto, run.cutoff)
		if err != nil {
			return false, fmt.Errorf("trim %s/%d: %w", k.topic, k.partition, err)
		}
		n, _ := res.RowsAffected() // both drivers report it
		run.vacuum = run.vacuum || n > 0
		if upto == low || n < upto-oldest {
			// Done: past the readers, or at records younger than the retention (the
			// offsets are dense, so fewer rows than offsets means one was kept).
			delete(run.below, k)
		} else {
			run.oldest[k] = upto
		}
		return true, nil
	}
	if !run.vacuum || e.db.Engine() != sqlutil.SQLite {
		return false, nil
	}
	if _, err := e.db.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", trimPages)); err != nil {
		return false, fmt.Errorf("give trimmed pages back: %w", err)
	}
	var free int64
	if err := e.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
		return false, fmt.Errorf("count free pages: %w", err)
	}
	run.vacuum = free > 0
	return run.vacuum, nil
}

// register adds a reader of partition k starting at from, storing the partition's reader
// count when it is the highest yet; the returned func removes it.
func (e *Embedded) register(ctx context.Context, k partKey, from int64) (*reader, func(), error) {
	r := &reader{next: from}
	e.mu.Lock()
	if e.active[k] == nil {
		e.active[k] = map[*reader]struct{}{}
	}
	e.active[k][r] = struct{}{}
	n := len(e.active[k])
	grew := n > e.known[k]
	e.mu.Unlock()
	remove := func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.active[k], r)
	}
	if grew {
		err := e.db.WithTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO eventlog_readers (topic, partition_id, readers) VALUES ($1, $2, $3)
				ON CONFLICT (topic, partition_id) DO UPDATE SET readers = $3 WHERE eventlog_readers.readers < $3`, k.topic, k.partition, n)
			return err
		})
		if err != nil {
			remove()
			return nil, nil, fmt.Errorf("record reader of %s/%d: %w", k.topic, k.partition, err)
		}
		e.mu.Lock()
		e.known[k] = max(e.known[k], n)
		e.mu.Unlock()
	}
	return r, remove, nil
}

// advance records that r has processed every record before next.
func (e *Embedded) advance(r *reader, next int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r.next = next
}

// EndOffsets implements Log.
func (e *Embedded) EndOffsets(_ context.Context, topic string) ([]int64, error) {
	ends := make([]int64, e.Partitions(topic))
	e.mu.Lock()
	defer e.mu.Unlock()
	for p := range ends {
		ends[p] = e.ends[partKey{topic, int32(p)}]
	}
	return ends, nil
}

// EndOffsetsOf implements Log.
func (e *Embedded) EndOffsetsOf(ctx context.Context, topics []string) ([][]int64, error) {
	out := make([][]int64, len(topics))
	for i, t := range topics {
		ends, err := e.EndOffsets(ctx, t)
		if err != nil {
			return nil, err
		}
		out[i] = ends
	}
	return out, nil
}

// wait returns the partition's end when it is past from, or else a channel closed when it
// moves past from.
func (e *Embedded) wait(k partKey, from int64) (int64, chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if end := e.ends[k]; end > from {
		return end, nil
	}
	ch, ok := e.wakes[k]
	if !ok {
		ch = make(chan struct{})
		e.wakes[k] = ch
	}
	return 0, ch
}

// Consume implements Log. A from past the partition's end (the log's database was
// replaced or its records deleted) stops the partition: nothing is delivered, an error is
// logged, the stopped-consumers metric counts it and Ready reports ErrOffsetPastEnd until
// ctx ends.
func (e *Embedded) Consume(ctx context.Context, topic string, partition int32, from int64, handle func(ctx context.Context, recs []Record) error) error {
	k := partKey{topic, partition}
	e.mu.Lock()
	end := e.ends[k]
	e.mu.Unlock()
	if from > end {
		return e.stalls.hold(ctx, e.closed, topic, partition, from, end)
	}
	r, remove, err := e.register(ctx, k, from)
	if err != nil {
		return err
	}
	defer remove()
	backoff := 100 * time.Millisecond
	for {
		end, ch := e.wait(k, from)
		if ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			case <-e.closed:
				return ErrClosed
			}
			continue
		}
		recs, err := e.read(ctx, k, from, end)
		if err == nil && len(recs) == 0 {
			// Everything from here to the end was trimmed: only a reader new to the partition
			// starts before what retention kept. Start at the oldest kept.
			from, err = e.oldest(ctx, k, from, end)
			if err == nil {
				e.advance(r, from)
			}
			continue
		}
		if err == nil {
			err = handle(ctx, recs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		from = recs[len(recs)-1].Offset + 1
		e.advance(r, from)
	}
}

const batchSize = 256

// read returns the records of partition k from from, up to end (the end the log has
// published: the writer commits a batch before it publishes the batch's end, and a reader
// that went past the published end would look to EndOffsets' callers, the Guard, like a
// reader of a truncated log), at most batchSize of them.
func (e *Embedded) read(ctx context.Context, k partKey, from, end int64) ([]Record, error) {
	rows, err := e.db.QueryContext(ctx, `SELECT record_offset, record_key, record_value, created_ms FROM eventlog_records
		WHERE topic = $1 AND partition_id = $2 AND record_offset >= $3 AND record_offset < $4 ORDER BY record_offset LIMIT $5`,
		k.topic, k.partition, from, end, batchSize)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		r := Record{Topic: k.topic, Partition: k.partition}
		var ms int64
		if err := rows.Scan(&r.Offset, &r.Key, &r.Value, &ms); err != nil {
			return nil, err
		}
		r.Timestamp = time.UnixMilli(ms)
		recs = append(recs, r)
	}
	return recs, rows.Err()
}

// oldest is the first kept offset at or after from and below end (the published end; see
// read), or end if none is kept.
func (e *Embedded) oldest(ctx context.Context, k partKey, from, end int64) (int64, error) {
	var next sql.NullInt64
	err := e.db.QueryRowContext(ctx, "SELECT MIN(record_offset) FROM eventlog_records WHERE topic = $1 AND partition_id = $2 AND record_offset >= $3 AND record_offset < $4",
		k.topic, k.partition, from, end).Scan(&next)
	if err != nil {
		return from, err
	}
	if next.Valid {
		return next.Int64, nil
	}
	return end, nil
}

// Ready reports ErrOffsetPastEnd while a consumer is stopped past the end of its
// partition, ErrRecovering while a Guard recovers one, and ErrStuck while a Consumer
// retries a record it failed to apply.
func (e *Embedded) Ready(context.Context) error {
	return e.stalls.err()
}

func (e *Embedded) recovering(topic string, partition int32) func() {
	return e.stalls.recovering(topic, partition)
}

func (e *Embedded) retrying(topic string, partition int32) func() {
	return e.stalls.retrying(topic, partition)
}

// Close stops the writer; queued produces fail with ErrClosed.
func (e *Embedded) Close() error {
	e.once.Do(func() { close(e.closed) })
	<-e.done
	return nil
}
