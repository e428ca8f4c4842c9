package sql

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// positions hands out stream positions on PostgreSQL and says up to where they are
// visible. A position comes from a sequence, which takes no lock that lasts until the
// transaction commits, so the sync API's writers (one per partition of every topic it
// reads) commit in parallel; the price is that a later position can commit before an
// earlier one. Readers therefore read only up to visible: the highest position such that
// every position up to it has been committed or abandoned, and a write returns (and wakes
// anyone) only once its own positions are visible. This holds while one process writes
// the database, as one sync API does. On SQLite the writes are serialized whole, so the
// one-row syncapi_stream_position table serves both purposes and positions is not used.
//
// The writers running in parallel cannot deadlock one another. Each topic's consumer
// writes tables of its own, keyed by what its topic is partitioned by (room ID for room
// events, typing and receipts, user ID for the others), and one partition's batches are
// written one after the other, so two writers meet on a row in two places only, neither
// of which closes a cycle: syncapi_stream_position's backfill counter, the one row room
// events of different rooms share; and a peek, which a room's membership change deletes
// and a peek request (WritePeek) writes as the only row of its transaction. A write that
// PostgreSQL aborts in a deadlock with some other transaction ends like any failed write:
// its positions are abandoned, and the consumer retries it.
type positions struct {
	take sync.Mutex // held from asking the sequence until the answer is recorded

	mu sync.Mutex
	// last is the highest position handed out, visible the highest one below which
	// nothing is in flight.
	last, visible int64
	// inflight is each writing transaction's first position.
	inflight map[*sql.Tx]int64
	// advanced is closed, and replaced, whenever visible grows.
	advanced chan struct{}
}

// positionSequenceSQL creates the sequence on PostgreSQL, starting after every position
// the one-row table handed out before it (and never going back, should it run again).
const positionSequenceSQL = `CREATE SEQUENCE IF NOT EXISTS syncapi_position_seq MINVALUE 0;
SELECT setval('syncapi_position_seq', GREATEST((SELECT position FROM syncapi_stream_position WHERE id = 1),
	(SELECT last_value FROM syncapi_position_seq)), true);`

// loadPositions starts from the sequence's last value: whatever a previous process
// handed out has been committed or will never be.
func loadPositions(ctx context.Context, db *sql.DB) (*positions, error) {
	var last int64
	if err := db.QueryRowContext(ctx, "SELECT last_value FROM syncapi_position_seq").Scan(&last); err != nil {
		return nil, fmt.Errorf("read the stream position sequence: %w", err)
	}
	return &positions{last: last, visible: last, inflight: map[*sql.Tx]int64{}, advanced: make(chan struct{})}, nil
}

// next takes a position for tx.
func (p *positions) next(ctx context.Context, tx *sql.Tx) (int64, error) {
	p.take.Lock()
	defer p.take.Unlock()
	var pos int64
	if err := tx.QueryRowContext(ctx, "SELECT nextval('syncapi_position_seq')").Scan(&pos); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inflight[tx]; !ok {
		p.inflight[tx] = pos
	}
	p.last = pos
	return pos, nil
}

// done records that tx has committed or rolled back.
func (p *positions) done(tx *sql.Tx) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inflight[tx]; !ok {
		return
	}
	delete(p.inflight, tx)
	visible := p.last
	for _, first := range p.inflight {
		visible = min(visible, first-1)
	}
	if visible > p.visible {
		p.visible = visible
		close(p.advanced)
		p.advanced = make(chan struct{})
	}
}

// current returns the visible position.
func (p *positions) current() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.visible
}

// wait returns once pos is visible. Every position in flight belongs to a write that
// ends (its transaction commits or rolls back) without waiting for a later one.
func (p *positions) wait(pos int64) {
	for {
		p.mu.Lock()
		visible, advanced := p.visible, p.advanced
		p.mu.Unlock()
		if visible >= pos {
			return
		}
		<-advanced
	}
}
