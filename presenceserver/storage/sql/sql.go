// Package sql implements the presenceserver's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/presenceserver/storage"
)

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS presenceserver_presence (
	user_id TEXT PRIMARY KEY,
	presence TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts {bigint} NOT NULL,
	last_seen_ts {bigint} NOT NULL,
	explicit BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS presenceserver_presence_active ON presenceserver_presence (presence, last_active_ts);
CREATE INDEX IF NOT EXISTS presenceserver_presence_seen ON presenceserver_presence (presence, last_seen_ts);
`}, {Version: 2, SQL: `
ALTER TABLE presenceserver_presence ADD COLUMN remote BOOLEAN NOT NULL DEFAULT FALSE;
`}}

// Database is the SQL presenceserver store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "presenceserver", migrations); err != nil {
		return nil, fmt.Errorf("migrate presenceserver schema: %w", err)
	}
	return &Database{db: db}, nil
}

// Presence implements storage.Database.
func (d *Database) Presence(ctx context.Context, tx *sql.Tx, userID string) (*storage.Presence, error) {
	p := storage.Presence{UserID: userID}
	var status sql.NullString
	err := sqlutil.Conn(d.db, tx).QueryRowContext(ctx, `SELECT presence, status_msg, last_active_ts, last_seen_ts, explicit, remote
		FROM presenceserver_presence WHERE user_id = $1`, userID).Scan(&p.Presence, &status, &p.LastActiveTS, &p.LastSeenTS, &p.Explicit, &p.Remote)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("select presence: %w", err)
	}
	if status.Valid {
		p.StatusMsg = &status.String
	}
	return &p, nil
}

// SetPresence implements storage.Database.
func (d *Database) SetPresence(ctx context.Context, tx *sql.Tx, p *storage.Presence) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO presenceserver_presence (user_id, presence, status_msg, last_active_ts, last_seen_ts, explicit, remote)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id) DO UPDATE
		SET presence = $2, status_msg = $3, last_active_ts = $4, last_seen_ts = $5, explicit = $6, remote = $7`,
		p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.LastSeenTS, p.Explicit, p.Remote)
	if err != nil {
		return fmt.Errorf("store presence: %w", err)
	}
	return nil
}

// Stale implements storage.Database.
func (d *Database) Stale(ctx context.Context, activeBefore, seenBefore int64, limit int) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT user_id FROM presenceserver_presence
		WHERE NOT remote AND ((presence = 'online' AND last_active_ts < $1) OR (presence <> 'offline' AND last_seen_ts < $2)) LIMIT $3`,
		activeBefore, seenBefore, limit)
	if err != nil {
		return nil, fmt.Errorf("select stale presence: %w", err)
	}
	return sqlutil.Column[string](rows)
}
