// Package sql implements the sync API's storage.Database with one SQL text for SQLite and
// PostgreSQL.
package sql

import (
	"context"
	"database/sql"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// On SQLite the one-row syncapi_stream_position table is the sequence every stream position
// comes from. Taking a position locks the row until the writing transaction commits (SQLite
// serializes whole writes anyway), so positions become visible in order: a reader that sees
// position N sees everything below N. On PostgreSQL, where that lock made every writer wait
// for the one before it to commit, positions come from a sequence (migration 15, positions).
// Backfilled events (history older than everything stored) take negative positions from
// the row's backfill_position, counting down: each is placed before every event stored so
// far, so a room's events sort by position in timeline order, and no /sync token (always
// positive) ever covers them.
var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS syncapi_stream_position (
	id INTEGER PRIMARY KEY,
	position {bigint} NOT NULL
);
INSERT INTO syncapi_stream_position (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS syncapi_events (
	position {bigint} PRIMARY KEY,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	type TEXT NOT NULL,
	sender TEXT NOT NULL,
	state_key TEXT,
	event_json TEXT NOT NULL,
	room_version TEXT NOT NULL,
	history_visibility TEXT NOT NULL,
	replaces_event_id TEXT NOT NULL DEFAULT '',
	txn_user_id TEXT NOT NULL DEFAULT '',
	txn_device_id TEXT NOT NULL DEFAULT '',
	txn_id TEXT NOT NULL DEFAULT '',
	redacted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS syncapi_events_room_position ON syncapi_events (room_id, position);
CREATE TABLE IF NOT EXISTS syncapi_current_state (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	position {bigint} NOT NULL,
	membership TEXT NOT NULL DEFAULT '',
	event_json TEXT NOT NULL,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX IF NOT EXISTS syncapi_current_state_user ON syncapi_current_state (state_key, type);
CREATE INDEX IF NOT EXISTS syncapi_current_state_event ON syncapi_current_state (event_id);
CREATE TABLE IF NOT EXISTS syncapi_memberships (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_id TEXT NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (room_id, user_id, event_id)
);
CREATE INDEX IF NOT EXISTS syncapi_memberships_user ON syncapi_memberships (user_id, position);
CREATE TABLE IF NOT EXISTS syncapi_account_data (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX IF NOT EXISTS syncapi_account_data_user ON syncapi_account_data (user_id, position);
`}, {Version: 2, SQL: `
ALTER TABLE syncapi_events ADD COLUMN notify BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE syncapi_events ADD COLUMN mentions TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS syncapi_typing (
	room_id TEXT PRIMARY KEY,
	users TEXT NOT NULL,
	position {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS syncapi_typing_position ON syncapi_typing (position);
CREATE TABLE IF NOT EXISTS syncapi_receipts (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	event_position {bigint} NOT NULL,
	ts {bigint} NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX IF NOT EXISTS syncapi_receipts_room_position ON syncapi_receipts (room_id, position);
CREATE INDEX IF NOT EXISTS syncapi_receipts_user ON syncapi_receipts (user_id, room_id);
CREATE TABLE IF NOT EXISTS syncapi_send_to_device (
	position {bigint} PRIMARY KEY,
	message_id TEXT NOT NULL UNIQUE,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	delivered_ms {bigint} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS syncapi_send_to_device_device ON syncapi_send_to_device (user_id, device_id, position);
CREATE TABLE IF NOT EXISTS syncapi_presence (
	user_id TEXT PRIMARY KEY,
	presence TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts {bigint} NOT NULL,
	currently_active BOOLEAN NOT NULL,
	position {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS syncapi_presence_position ON syncapi_presence (position);
`}, {Version: 3, SQL: `
CREATE INDEX IF NOT EXISTS syncapi_events_unread ON syncapi_events (room_id, position, notify, sender, mentions);
`}, {Version: 4, SQL: `
ALTER TABLE syncapi_stream_position ADD COLUMN backfill_position {bigint} NOT NULL DEFAULT 0;
`}, {Version: 5, SQL: `
CREATE TABLE IF NOT EXISTS syncapi_key_changes (
	user_id TEXT PRIMARY KEY,
	stream_id {bigint} NOT NULL,
	position {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS syncapi_key_changes_position ON syncapi_key_changes (position);
CREATE INDEX IF NOT EXISTS syncapi_memberships_position ON syncapi_memberships (position);
`}, {Version: 6, Up: migrateUserDirectory}, {Version: 7, Up: migrateRelations},
	{Version: 8, SQL: slidingMigrationSQL()}, {Version: 9, Up: dropUnreadColumns}, {Version: 10, SQL: `
CREATE TABLE IF NOT EXISTS syncapi_notification_counts (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	threads TEXT NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (user_id, room_id)
);
CREATE INDEX IF NOT EXISTS syncapi_notification_counts_position ON syncapi_notification_counts (user_id, position);
`}, {Version: 11, SQL: `
CREATE TABLE IF NOT EXISTS syncapi_private_key_changes (
	user_id TEXT NOT NULL,
	notify_user_id TEXT NOT NULL,
	stream_id {bigint} NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (notify_user_id, user_id)
);
CREATE INDEX IF NOT EXISTS syncapi_private_key_changes_position ON syncapi_private_key_changes (notify_user_id, position);
`}, {Version: 12, SQL: `
CREATE INDEX IF NOT EXISTS syncapi_room_activity_last ON syncapi_room_activity (last_position);
CREATE TABLE IF NOT EXISTS syncapi_state_removals (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (room_id, position, type, state_key)
);
`}, {Version: 13, SQL: `
CREATE TABLE IF NOT EXISTS syncapi_peeks (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	position {bigint} NOT NULL,
	PRIMARY KEY (user_id, device_id, room_id)
);
CREATE INDEX IF NOT EXISTS syncapi_peeks_room ON syncapi_peeks (room_id, user_id);
`}, {Version: 14, SQL: `
CREATE INDEX IF NOT EXISTS syncapi_receipts_position ON syncapi_receipts (position);
`}, {Version: 15, Up: positionSequence}}

// positionSequence moves PostgreSQL's stream positions to a sequence (see positions).
func positionSequence(ctx context.Context, tx *sql.Tx, d sqlutil.Dialect) error {
	if d.Engine != sqlutil.Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, positionSequenceSQL)
	return err
}

// dropUnreadColumns drops what the sync API's own approximation of notification counts
// used (the pushserver's counts replaced it). It can run again after a test reset the
// schema version: SQLite has no DROP COLUMN IF EXISTS, so it asks for the columns first.
func dropUnreadColumns(ctx context.Context, tx *sql.Tx, d sqlutil.Dialect) error {
	if _, err := tx.ExecContext(ctx, "DROP INDEX IF EXISTS syncapi_events_unread"); err != nil {
		return err
	}
	for _, col := range []string{"notify", "mentions"} {
		if d.Engine == sqlutil.Postgres {
			if _, err := tx.ExecContext(ctx, "ALTER TABLE syncapi_events DROP COLUMN IF EXISTS "+col); err != nil {
				return err
			}
			continue
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM pragma_table_info('syncapi_events') WHERE name = $1", col).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, "ALTER TABLE syncapi_events DROP COLUMN "+col); err != nil {
			return err
		}
	}
	return nil
}
