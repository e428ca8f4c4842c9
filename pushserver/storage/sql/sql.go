// Package sql implements the push server's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/storage"
)

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS pushserver_pushers (
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	kind TEXT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL,
	lang TEXT NOT NULL,
	data TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts {bigint} NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX IF NOT EXISTS pushserver_pushers_key ON pushserver_pushers (app_id, pushkey);
`}, {Version: 2, SQL: readerSchema}, {Version: 3, SQL: queueSchema},
	{Version: 4, SQL: unreadSchema}, {Version: 5, SQL: ignoredSchema}, {Version: 6, SQL: slimSchema},
	{Version: 7, SQL: unreadAfterSchema}}

// Database is the SQL push server store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "pushserver", migrations); err != nil {
		return nil, fmt.Errorf("migrate pushserver schema: %w", err)
	}
	return &Database{db: db}, nil
}

// UpsertPusher implements storage.Database.
func (d *Database) UpsertPusher(ctx context.Context, p *storage.StoredPusher, appendOthers bool) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if !appendOthers {
			for _, table := range []string{"pushserver_push_queue", "pushserver_pushers"} {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`,
					p.AppID, p.PushKey, p.UserID); err != nil {
					return fmt.Errorf("delete other users' pushers: %w", err)
				}
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO pushserver_pushers (user_id, app_id, pushkey, kind, app_display_name,
			device_display_name, profile_tag, lang, data, device_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = $4, app_display_name = $5, device_display_name = $6,
			profile_tag = $7, lang = $8, data = $9, device_id = $10`,
			p.UserID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data),
			p.DeviceID, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("store pusher: %w", err)
		}
		return nil
	})
}

// DeletePusher implements storage.Database.
func (d *Database) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		return removePusher(ctx, tx, storage.PusherKey{UserID: userID, AppID: appID, PushKey: pushKey})
	})
}

// Pushers implements storage.Database.
func (d *Database) Pushers(ctx context.Context, userID string) ([]storage.StoredPusher, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
		data, device_id FROM pushserver_pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("select pushers: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.StoredPusher
	for rows.Next() {
		p := storage.StoredPusher{UserID: userID}
		var data string
		if err := rows.Scan(&p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang,
			&data, &p.DeviceID); err != nil {
			return nil, fmt.Errorf("scan pusher: %w", err)
		}
		p.Data = []byte(data)
		out = append(out, p)
	}
	return out, rows.Err()
}

// listChunk is how many user IDs one IN list holds. A room's members are read in
// statements of a hundred: SQLite looks each numbered parameter up in a list of the
// statement's parameters, so preparing a statement with a thousand took longer than
// running it (a tenth of a second per event in a room of a thousand), and PostgreSQL
// plans long lists slowly too.
const listChunk = 100

// chunks splits ids into slices of at most listChunk.
func chunks[T any](ids []T) [][]T {
	var out [][]T
	for len(ids) > 0 {
		n := min(len(ids), listChunk)
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	return out
}
