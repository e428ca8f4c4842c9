// Package sql implements the roomserver storage.Database with one SQL text for SQLite and
// PostgreSQL.
package sql

import "github.com/matrix-org/dendrite/internal/sqlutil"

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS roomserver_rooms (
	room_nid {serial},
	room_id TEXT NOT NULL UNIQUE,
	room_version TEXT NOT NULL,
	snapshot_nid {bigint} NOT NULL DEFAULT 0,
	latest_event_nids TEXT NOT NULL DEFAULT '',
	depth {bigint} NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS roomserver_event_types (
	type_nid {serial},
	event_type TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS roomserver_state_keys (
	state_key_nid {serial},
	state_key TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS roomserver_events (
	event_nid {serial},
	room_nid {bigint} NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	type_nid {bigint} NOT NULL,
	state_key_nid {bigint} NOT NULL,
	is_state BOOLEAN NOT NULL,
	depth {bigint} NOT NULL,
	before_snapshot_nid {bigint} NOT NULL,
	redacted BOOLEAN NOT NULL DEFAULT FALSE,
	event_json {bytes} NOT NULL
);
CREATE TABLE IF NOT EXISTS roomserver_state_blocks (
	block_nid {serial},
	entries {bytes} NOT NULL
);
CREATE TABLE IF NOT EXISTS roomserver_state_snapshots (
	snapshot_nid {serial},
	room_nid {bigint} NOT NULL,
	block_nids {bytes} NOT NULL
);
CREATE TABLE IF NOT EXISTS roomserver_transactions (
	room_nid {bigint} NOT NULL,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_nid, user_id, device_id, txn_id)
);
CREATE TABLE IF NOT EXISTS roomserver_memberships (
	room_nid {bigint} NOT NULL,
	user_id TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX IF NOT EXISTS roomserver_memberships_user ON roomserver_memberships (user_id, membership);
CREATE TABLE IF NOT EXISTS roomserver_outbox (
	seq {serial},
	room_id TEXT NOT NULL,
	payload {bytes} NOT NULL
);
`}, {Version: 2, SQL: `
ALTER TABLE roomserver_events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE roomserver_events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;
`}, {Version: 3, SQL: `
CREATE TABLE IF NOT EXISTS roomserver_room_aliases (
	alias TEXT NOT NULL PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS roomserver_room_aliases_room ON roomserver_room_aliases (room_id);
CREATE TABLE IF NOT EXISTS roomserver_published_rooms (
	room_id TEXT NOT NULL PRIMARY KEY
);
`}, {Version: 4, SQL: `
ALTER TABLE roomserver_events ADD COLUMN redacts TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS roomserver_events_redacts ON roomserver_events (room_nid, redacts) WHERE redacts <> '';
`}, {Version: 5, SQL: `
CREATE TABLE IF NOT EXISTS roomserver_network_rooms (
	network TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (network, room_id)
);
`}, {Version: 6, SQL: `
ALTER TABLE roomserver_events ADD COLUMN rejected BOOLEAN NOT NULL DEFAULT FALSE;
`}, {Version: 7, SQL: `
ALTER TABLE roomserver_outbox ADD COLUMN partition_id INTEGER NOT NULL DEFAULT -1;
ALTER TABLE roomserver_outbox ADD COLUMN partition_seq {bigint} NOT NULL DEFAULT 0;
ALTER TABLE roomserver_outbox ADD COLUMN produced BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE roomserver_outbox ADD COLUMN created_ms {bigint} NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS roomserver_outbox_partition ON roomserver_outbox (partition_id, partition_seq);
CREATE INDEX IF NOT EXISTS roomserver_outbox_unproduced ON roomserver_outbox (seq) WHERE NOT produced;
CREATE TABLE IF NOT EXISTS roomserver_output_seqs (
	partition_id INTEGER NOT NULL PRIMARY KEY,
	last_seq {bigint} NOT NULL
);
`}, {Version: 8, SQL: `
CREATE INDEX IF NOT EXISTS roomserver_events_room ON roomserver_events (room_nid, event_nid);
`}, {Version: 9, SQL: `
ALTER TABLE roomserver_outbox ADD COLUMN event_nid {bigint} NOT NULL DEFAULT 0;
`}}
