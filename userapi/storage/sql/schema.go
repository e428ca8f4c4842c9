// Package sql implements the userapi storage.Database with one SQL text for SQLite and
// PostgreSQL.
package sql

import "github.com/matrix-org/dendrite/internal/sqlutil"

// migrations are the userapi schema steps, in order; never edit a released one.
var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS userapi_accounts (
	localpart TEXT NOT NULL PRIMARY KEY,
	password_hash TEXT NOT NULL,
	account_type INTEGER NOT NULL,
	created_ts {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS userapi_profiles (
	localpart TEXT NOT NULL PRIMARY KEY,
	display_name TEXT NOT NULL DEFAULT '',
	avatar_url TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS userapi_devices (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	token_hash {bytes} NOT NULL UNIQUE,
	display_name TEXT NOT NULL DEFAULT '',
	created_ts {bigint} NOT NULL,
	last_seen_ts {bigint} NOT NULL,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	user_agent TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (localpart, device_id)
);
CREATE TABLE IF NOT EXISTS userapi_account_data (
	localpart TEXT NOT NULL,
	room_id TEXT NOT NULL,
	data_type TEXT NOT NULL,
	content TEXT NOT NULL,
	PRIMARY KEY (localpart, room_id, data_type)
);
CREATE TABLE IF NOT EXISTS userapi_filters (
	filter_id {serial},
	localpart TEXT NOT NULL,
	filter TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS userapi_filters_localpart ON userapi_filters (localpart);
`}, {Version: 2, SQL: `
CREATE TABLE IF NOT EXISTS userapi_device_keys (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (localpart, device_id)
);
CREATE TABLE IF NOT EXISTS userapi_one_time_keys (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (localpart, device_id, key_id)
);
CREATE INDEX IF NOT EXISTS userapi_one_time_keys_algorithm ON userapi_one_time_keys (localpart, device_id, algorithm);
CREATE TABLE IF NOT EXISTS userapi_fallback_keys (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (localpart, device_id, algorithm)
);
CREATE TABLE IF NOT EXISTS userapi_device_list_streams (
	localpart TEXT NOT NULL PRIMARY KEY,
	stream_id {bigint} NOT NULL
);
`}, {Version: 3, SQL: `
CREATE TABLE IF NOT EXISTS userapi_cross_signing_keys (
	localpart TEXT NOT NULL,
	purpose TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (localpart, purpose)
);
CREATE TABLE IF NOT EXISTS userapi_key_signatures (
	target_user_id TEXT NOT NULL,
	target_key_id TEXT NOT NULL,
	signer_user_id TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature TEXT NOT NULL,
	PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
`}, {Version: 4, SQL: `
CREATE TABLE IF NOT EXISTS userapi_remote_device_lists (
	user_id TEXT NOT NULL PRIMARY KEY,
	stream_id {bigint} NOT NULL
);
`}, {Version: 5, SQL: `
CREATE TABLE IF NOT EXISTS userapi_key_backup_versions (
	localpart TEXT NOT NULL,
	version {bigint} NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag {bigint} NOT NULL DEFAULT 0,
	deleted BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (localpart, version)
);
CREATE TABLE IF NOT EXISTS userapi_key_backups (
	localpart TEXT NOT NULL,
	version {bigint} NOT NULL,
	room_id TEXT NOT NULL,
	session_id TEXT NOT NULL,
	first_message_index {bigint} NOT NULL,
	forwarded_count {bigint} NOT NULL,
	is_verified BOOLEAN NOT NULL,
	session_data TEXT NOT NULL,
	PRIMARY KEY (localpart, version, room_id, session_id)
);
`}, {Version: 6, SQL: `
ALTER TABLE userapi_remote_device_lists ADD COLUMN stale BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE userapi_remote_device_lists ADD COLUMN local_stream {bigint} NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS userapi_remote_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT NOT NULL DEFAULT '',
	key_json TEXT,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS userapi_remote_cross_signing_keys (
	user_id TEXT NOT NULL,
	purpose TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, purpose)
);
`}, {Version: 7, SQL: `
CREATE TABLE IF NOT EXISTS userapi_outbox (
	id {serial},
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	partition_seq {bigint} NOT NULL,
	msg_key TEXT NOT NULL,
	payload {bytes} NOT NULL,
	produced BOOLEAN NOT NULL DEFAULT FALSE,
	created_ms {bigint} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS userapi_outbox_partition ON userapi_outbox (topic, partition_id, partition_seq);
CREATE INDEX IF NOT EXISTS userapi_outbox_unproduced ON userapi_outbox (id) WHERE NOT produced;
CREATE TABLE IF NOT EXISTS userapi_output_seqs (
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	last_seq {bigint} NOT NULL,
	PRIMARY KEY (topic, partition_id)
);
`}, {Version: 8, SQL: `
CREATE TABLE IF NOT EXISTS userapi_erased_accounts (
	localpart TEXT NOT NULL PRIMARY KEY,
	erased_ts {bigint} NOT NULL
);
`}}
