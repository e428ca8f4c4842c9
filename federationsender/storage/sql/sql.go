// Package sql implements the federationsender's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"fmt"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// The queue stores each item's JSON once (federationsender_queue_json), however many
// destinations it goes to; a queue row per destination points at it. Rows of one
// destination are sent in queue_nid order; txn_id is "" until the row is put in a
// transaction, and then stays until the destination acknowledges it.
var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS federationsender_rooms (
	room_id TEXT NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS federationsender_joined_members (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	server_name TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS federationsender_joined_members_user ON federationsender_joined_members (user_id);
CREATE TABLE IF NOT EXISTS federationsender_queue_json (
	json_nid {serial},
	content {bytes} NOT NULL
);
CREATE TABLE IF NOT EXISTS federationsender_queue (
	queue_nid {serial},
	destination TEXT NOT NULL,
	kind TEXT NOT NULL,
	json_nid {bigint} NOT NULL,
	txn_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS federationsender_queue_destination ON federationsender_queue (destination, txn_id, queue_nid);
CREATE INDEX IF NOT EXISTS federationsender_queue_json_nid ON federationsender_queue (json_nid);
`}, {Version: 2, SQL: `
CREATE INDEX IF NOT EXISTS federationsender_joined_members_servers ON federationsender_joined_members (room_id, server_name);
`}}

// Database is the SQL federationsender store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "federationsender", migrations); err != nil {
		return nil, fmt.Errorf("migrate federationsender schema: %w", err)
	}
	return &Database{db: db}, nil
}
