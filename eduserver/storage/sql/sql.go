// Package sql implements the eduserver's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"fmt"

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

// PruneTransactions implements storage.Database.
func (d *Database) PruneTransactions(ctx context.Context, before int64) (int64, error) {
	res, err := d.db.ExecContext(ctx, "DELETE FROM eduserver_send_to_device_txns WHERE ts < $1", before)
	if err != nil {
		return 0, fmt.Errorf("prune transactions: %w", err)
	}
	return res.RowsAffected()
}
