// Package sql implements the eduserver's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/eduserver/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS eduserver_send_to_device_txns (
	sender TEXT NOT NULL,
	sender_device TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	ts {bigint} NOT NULL,
	PRIMARY KEY (sender, sender_device, txn_id)
);
CREATE INDEX IF NOT EXISTS eduserver_send_to_device_txns_ts ON eduserver_send_to_device_txns (ts);
`}, {Version: 2, SQL: `
CREATE TABLE IF NOT EXISTS eduserver_outbox (
	id {serial},
	partition_id INTEGER NOT NULL,
	partition_seq {bigint} NOT NULL,
	msg_key TEXT NOT NULL,
	payload {bytes} NOT NULL,
	produced BOOLEAN NOT NULL DEFAULT FALSE,
	created_ms {bigint} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS eduserver_outbox_partition ON eduserver_outbox (partition_id, partition_seq);
CREATE INDEX IF NOT EXISTS eduserver_outbox_unproduced ON eduserver_outbox (id) WHERE NOT produced;
CREATE TABLE IF NOT EXISTS eduserver_output_seqs (
	partition_id INTEGER NOT NULL PRIMARY KEY,
	last_seq {bigint} NOT NULL
);
`}}

// Database is the SQL eduserver store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "eduserver", migrations); err != nil {
		return nil, fmt.Errorf("migrate eduserver schema: %w", err)
	}
	return &Database{db: db}, nil
}

// RecordTransaction implements storage.Database.
func (d *Database) RecordTransaction(ctx context.Context, tx *sql.Tx, sender, device, txnID string, ts int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO eduserver_send_to_device_txns (sender, sender_device, txn_id, ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (sender, sender_device, txn_id) DO NOTHING`, sender, device, txnID, ts)
	if err != nil {
		return false, fmt.Errorf("record transaction: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// HasTransaction implements storage.Database.
func (d *Database) HasTransaction(ctx context.Context, sender, device, txnID string) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM eduserver_send_to_device_txns
		WHERE sender = $1 AND sender_device = $2 AND txn_id = $3`, sender, device, txnID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("select transaction: %w", err)
	}
	return n > 0, nil
}

// PruneTransactions implements storage.Database.
func (d *Database) PruneTransactions(ctx context.Context, before int64) (int64, error) {
	res, err := d.db.ExecContext(ctx, "DELETE FROM eduserver_send_to_device_txns WHERE ts < $1", before)
	if err != nil {
		return 0, fmt.Errorf("prune transactions: %w", err)
	}
	return res.RowsAffected()
}

// InsertOutput implements storage.Database. The number's row is locked until tx ends
// (PostgreSQL's row lock; SQLite serializes writes), so a record becomes visible only after
// every record numbered below it in its partition.
func (d *Database) InsertOutput(ctx context.Context, tx *sql.Tx, partition int32, key string, payload func(seq int64) ([]byte, error)) error {
	var seq int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO eduserver_output_seqs (partition_id, last_seq) VALUES ($1, 1)
		ON CONFLICT (partition_id) DO UPDATE SET last_seq = eduserver_output_seqs.last_seq + 1 RETURNING last_seq`, partition).Scan(&seq); err != nil {
		return fmt.Errorf("number output: %w", err)
	}
	value, err := payload(seq)
	if err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, `INSERT INTO eduserver_outbox (partition_id, partition_seq, msg_key, payload, created_ms)
		VALUES ($1, $2, $3, $4, $5)`, partition, seq, key, value, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("insert output: %w", err)
	}
	return nil
}

// Outbox implements storage.Database.
func (d *Database) Outbox(ctx context.Context) ([]storage.Outbound, error) {
	return d.outbound(ctx, "SELECT id, partition_id, partition_seq, msg_key, payload FROM eduserver_outbox WHERE NOT produced ORDER BY id")
}

// MarkProduced implements storage.Database.
func (d *Database) MarkProduced(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	query, args := d.db.Dialect.InList("UPDATE eduserver_outbox SET produced = TRUE WHERE id IN ({list})", "{list}", nil, ids)
	if _, err := d.db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("mark outputs produced: %w", err)
	}
	return nil
}

// PruneOutbox implements storage.Database.
func (d *Database) PruneOutbox(ctx context.Context, before time.Time) error {
	if _, err := d.db.ExecContext(ctx, "DELETE FROM eduserver_outbox WHERE produced AND created_ms < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("prune outbox: %w", err)
	}
	return nil
}

// OutputsAfter implements storage.Database.
func (d *Database) OutputsAfter(ctx context.Context, partition int32, after int64, limit int) ([]storage.Outbound, int64, error) {
	var last int64
	err := d.db.QueryRowContext(ctx, "SELECT last_seq FROM eduserver_output_seqs WHERE partition_id = $1", partition).Scan(&last)
	if err != nil && err != sql.ErrNoRows {
		return nil, 0, fmt.Errorf("select last output number: %w", err)
	}
	out, err := d.outbound(ctx, `SELECT id, partition_id, partition_seq, msg_key, payload FROM eduserver_outbox
		WHERE partition_id = $1 AND partition_seq > $2 ORDER BY partition_seq LIMIT $3`, partition, after, limit)
	return out, last, err
}

func (d *Database) outbound(ctx context.Context, query string, args ...any) ([]storage.Outbound, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select outbox: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.Outbound
	for rows.Next() {
		var o storage.Outbound
		if err := rows.Scan(&o.ID, &o.Partition, &o.Seq, &o.Key, &o.Payload); err != nil {
			return nil, fmt.Errorf("scan outbox: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}
