// Package sql implements the federationapi storage.Database with one SQL text for SQLite and
// PostgreSQL.
package sql

import "github.com/matrix-org/dendrite/internal/sqlutil"

// migrations are the federationapi schema steps, in order; never edit a released one.
var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS federationapi_server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key TEXT NOT NULL,
	valid_until_ts {bigint} NOT NULL,
	expired_ts {bigint} NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
CREATE TABLE IF NOT EXISTS federationapi_key_responses (
	server_name TEXT NOT NULL PRIMARY KEY,
	response TEXT NOT NULL,
	valid_until_ts {bigint} NOT NULL,
	fetched_ts {bigint} NOT NULL
);
`}, {Version: 2, SQL: `
CREATE TABLE IF NOT EXISTS federationapi_transactions (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	response TEXT NOT NULL,
	received_ts {bigint} NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
`}, {Version: 3, SQL: `
CREATE TABLE IF NOT EXISTS federationapi_notary_responses (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	response TEXT NOT NULL,
	valid_until_ts {bigint} NOT NULL,
	fetched_ts {bigint} NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
DROP TABLE IF EXISTS federationapi_key_responses;
`}}
