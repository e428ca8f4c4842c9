// Package sql implements the appservice component's storage.Database for SQLite and
// PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/appservice/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// Queue rows of one service are sent in queue_nid order; txn_id is 0 until the row is put
// in a transaction, then the first queue_nid of that transaction (unique forever: queue
// NIDs are never reused on either engine) until the service acknowledges it. queued_ms is
// when the item was queued (0 for items queued before version 2), for the lag metric.
var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS appservice_rooms (
	room_id TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS appservice_members (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS appservice_queued_events (
	service_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	queued_ms {bigint} NOT NULL,
	PRIMARY KEY (service_id, event_id)
);
CREATE INDEX IF NOT EXISTS appservice_queued_events_ms ON appservice_queued_events (queued_ms);
CREATE TABLE IF NOT EXISTS appservice_queue (
	queue_nid {serial},
	service_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	content {bytes} NOT NULL,
	txn_id {bigint} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS appservice_queue_service ON appservice_queue (service_id, txn_id, queue_nid);
`}, {Version: 2, SQL: `
ALTER TABLE appservice_queue ADD COLUMN queued_ms {bigint} NOT NULL DEFAULT 0;
`}}

// Database is the SQL appservice store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "appservice", migrations); err != nil {
		return nil, fmt.Errorf("migrate appservice schema: %w", err)
	}
	return &Database{db: db}, nil
}

// RoomKnown implements storage.Database.
func (d *Database) RoomKnown(ctx context.Context, tx *sql.Tx, roomID string) (bool, error) {
	var one int
	err := sqlutil.Conn(d.db, tx).QueryRowContext(ctx, "SELECT 1 FROM appservice_rooms WHERE room_id = $1", roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select room: %w", err)
	}
	return true, nil
}

// AddRoom implements storage.Database.
func (d *Database) AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []string) error {
	if _, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, "INSERT INTO appservice_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING", roomID); err != nil {
		return fmt.Errorf("insert room: %w", err)
	}
	for _, m := range members {
		if err := d.SetMember(ctx, tx, roomID, m, true); err != nil {
			return err
		}
	}
	return nil
}

// SetMember implements storage.Database.
func (d *Database) SetMember(ctx context.Context, tx *sql.Tx, roomID, userID string, joined bool) error {
	q := "DELETE FROM appservice_members WHERE room_id = $1 AND user_id = $2"
	if joined {
		q = "INSERT INTO appservice_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT (room_id, user_id) DO NOTHING"
	}
	if _, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, q, roomID, userID); err != nil {
		return fmt.Errorf("store membership: %w", err)
	}
	return nil
}

// Members implements storage.Database.
func (d *Database) Members(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, "SELECT user_id FROM appservice_members WHERE room_id = $1 ORDER BY user_id", roomID)
	if err != nil {
		return nil, fmt.Errorf("select members: %w", err)
	}
	return sqlutil.Column[string](rows)
}

// MarkQueued implements storage.Database.
func (d *Database) MarkQueued(ctx context.Context, tx *sql.Tx, serviceID, eventID string) (bool, error) {
	res, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, `INSERT INTO appservice_queued_events (service_id, event_id, queued_ms) VALUES ($1, $2, $3)
		ON CONFLICT (service_id, event_id) DO NOTHING`, serviceID, eventID, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("record queued event: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record queued event: %w", err)
	}
	return n == 1, nil
}

// Enqueue implements storage.Database.
func (d *Database) Enqueue(ctx context.Context, tx *sql.Tx, serviceID, kind string, content []byte) error {
	_, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, "INSERT INTO appservice_queue (service_id, kind, content, queued_ms) VALUES ($1, $2, $3, $4)",
		serviceID, kind, content, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("queue for %s: %w", serviceID, err)
	}
	return nil
}

// NextTransaction implements storage.Database.
func (d *Database) NextTransaction(ctx context.Context, serviceID string, max int) (*storage.Transaction, error) {
	var txnID int64
	err := d.db.QueryRowContext(ctx, "SELECT txn_id FROM appservice_queue WHERE service_id = $1 AND txn_id <> 0 ORDER BY queue_nid LIMIT 1",
		serviceID).Scan(&txnID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if txnID, err = d.assign(ctx, serviceID, max); err != nil || txnID == 0 {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("select transaction in flight: %w", err)
	}
	rows, err := d.db.QueryContext(ctx, "SELECT kind, content FROM appservice_queue WHERE service_id = $1 AND txn_id = $2 ORDER BY queue_nid", serviceID, txnID)
	if err != nil {
		return nil, fmt.Errorf("select transaction: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	t := &storage.Transaction{ServiceID: serviceID, TxnID: txnID}
	for rows.Next() {
		var kind string
		var content []byte
		if err := rows.Scan(&kind, &content); err != nil {
			return nil, err
		}
		switch kind {
		case storage.KindEphemeral:
			t.Ephemeral = append(t.Ephemeral, content)
		case storage.KindToDevice:
			t.ToDevice = append(t.ToDevice, content)
		default:
			t.Events = append(t.Events, content)
		}
	}
	return t, rows.Err()
}

// assign puts the service's oldest unassigned items into a new transaction, whose ID is
// the first item's queue NID; 0 when there are none.
func (d *Database) assign(ctx context.Context, serviceID string, max int) (int64, error) {
	var txnID int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT queue_nid FROM appservice_queue WHERE service_id = $1 AND txn_id = 0 ORDER BY queue_nid LIMIT $2", serviceID, max)
		if err != nil {
			return fmt.Errorf("select queued items: %w", err)
		}
		nids, err := sqlutil.Column[int64](rows)
		if err != nil || len(nids) == 0 {
			return err
		}
		txnID = nids[0]
		_, err = tx.ExecContext(ctx, "UPDATE appservice_queue SET txn_id = $1 WHERE service_id = $2 AND txn_id = 0 AND queue_nid >= $3 AND queue_nid <= $4",
			txnID, serviceID, nids[0], nids[len(nids)-1])
		if err != nil {
			return fmt.Errorf("assign transaction: %w", err)
		}
		return nil
	})
	return txnID, err
}

// DeleteTransaction implements storage.Database.
func (d *Database) DeleteTransaction(ctx context.Context, serviceID string, txnID int64) error {
	if _, err := d.db.ExecContext(ctx, "DELETE FROM appservice_queue WHERE service_id = $1 AND txn_id = $2", serviceID, txnID); err != nil {
		return fmt.Errorf("delete sent items: %w", err)
	}
	return nil
}

// QueueState implements storage.Database.
func (d *Database) QueueState(ctx context.Context, serviceID string) (int64, time.Time, error) {
	var n, oldest int64
	err := d.db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MIN(NULLIF(queued_ms, 0)), 0) FROM appservice_queue WHERE service_id = $1",
		serviceID).Scan(&n, &oldest)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count queue: %w", err)
	}
	if oldest == 0 {
		return n, time.Time{}, nil
	}
	return n, time.UnixMilli(oldest), nil
}

// ForgetQueuedBefore implements storage.Database.
func (d *Database) ForgetQueuedBefore(ctx context.Context, t time.Time) error {
	if _, err := d.db.ExecContext(ctx, "DELETE FROM appservice_queued_events WHERE queued_ms < $1", t.UnixMilli()); err != nil {
		return fmt.Errorf("forget queued events: %w", err)
	}
	return nil
}
