// Package sql implements the receiptserver's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/receiptserver/storage"
)

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS receiptserver_receipts (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	depth {bigint} NOT NULL,
	ts {bigint} NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
`}}

// Database is the SQL receiptserver store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "receiptserver", migrations); err != nil {
		return nil, fmt.Errorf("migrate receiptserver schema: %w", err)
	}
	return &Database{db: db}, nil
}

// MoveReceipt implements storage.Database.
func (d *Database) MoveReceipt(ctx context.Context, tx *sql.Tx, r *storage.Receipt) (bool, error) {
	var eventID string
	var depth int64
	err := tx.QueryRowContext(ctx, `SELECT event_id, depth FROM receiptserver_receipts
		WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4`, r.RoomID, r.UserID, r.Type, r.ThreadID).Scan(&eventID, &depth)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("select receipt: %w", err)
	case eventID == r.EventID || r.Depth < depth:
		return false, nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO receiptserver_receipts (room_id, user_id, receipt_type, thread_id, event_id, depth, ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = $5, depth = $6, ts = $7`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.Depth, r.TS)
	if err != nil {
		return false, fmt.Errorf("store receipt: %w", err)
	}
	return true, nil
}
