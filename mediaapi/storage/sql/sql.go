// Package sql implements the mediaapi's storage.Database for SQLite and PostgreSQL.
package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/mediaapi/storage"
)

var migrations = []sqlutil.Migration{{Version: 1, SQL: `
CREATE TABLE IF NOT EXISTS mediaapi_media (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	content_type TEXT NOT NULL,
	upload_name TEXT NOT NULL,
	size {bigint} NOT NULL,
	sha256 TEXT NOT NULL,
	user_id TEXT NOT NULL,
	created_ts {bigint} NOT NULL,
	expires_ts {bigint} NOT NULL,
	authenticated_only BOOLEAN NOT NULL,
	PRIMARY KEY (server_name, media_id)
);
CREATE INDEX IF NOT EXISTS mediaapi_media_pending ON mediaapi_media (user_id, expires_ts) WHERE sha256 = '';
CREATE TABLE IF NOT EXISTS mediaapi_thumbnails (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	width INTEGER NOT NULL,
	height INTEGER NOT NULL,
	method TEXT NOT NULL,
	content_type TEXT NOT NULL,
	size {bigint} NOT NULL,
	sha256 TEXT NOT NULL,
	PRIMARY KEY (server_name, media_id, width, height, method)
);
`}}

// Database is the SQL mediaapi store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "mediaapi", migrations); err != nil {
		return nil, fmt.Errorf("migrate mediaapi schema: %w", err)
	}
	return &Database{db: db}, nil
}

const mediaColumns = "server_name, media_id, content_type, upload_name, size, sha256, user_id, created_ts, expires_ts, authenticated_only"

func mediaArgs(m *storage.Media) []any {
	return []any{m.ServerName, m.MediaID, m.ContentType, m.UploadName, m.Size, m.SHA256, m.UserID, m.CreatedTS, m.ExpiresTS, m.AuthenticatedOnly}
}

// InsertMedia implements storage.Database.
func (d *Database) InsertMedia(ctx context.Context, m *storage.Media) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO mediaapi_media ("+mediaColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"+
			" ON CONFLICT (server_name, media_id) DO NOTHING", mediaArgs(m)...)
		if err != nil {
			return fmt.Errorf("insert media: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("insert media: %w", err)
		} else if n == 0 {
			return storage.ErrExists
		}
		return nil
	})
}

// StoreRemoteMedia implements storage.Database.
func (d *Database) StoreRemoteMedia(ctx context.Context, m *storage.Media) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO mediaapi_media ("+mediaColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"+
			" ON CONFLICT (server_name, media_id) DO UPDATE SET content_type = $3, upload_name = $4, size = $5, sha256 = $6", mediaArgs(m)...)
		if err != nil {
			return fmt.Errorf("store remote media: %w", err)
		}
		return nil
	})
}

// CompleteMedia implements storage.Database.
func (d *Database) CompleteMedia(ctx context.Context, m *storage.Media, userID string, nowTS int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var sha string
		var expires int64
		err := tx.QueryRowContext(ctx, "SELECT sha256, expires_ts FROM mediaapi_media WHERE server_name = $1 AND media_id = $2 AND user_id = $3",
			m.ServerName, m.MediaID, userID).Scan(&sha, &expires)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return storage.ErrNotFound
		case err != nil:
			return fmt.Errorf("select reserved media: %w", err)
		case sha != "":
			return storage.ErrExists
		case expires != 0 && expires < nowTS:
			return storage.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `UPDATE mediaapi_media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6, expires_ts = 0
			WHERE server_name = $1 AND media_id = $2`, m.ServerName, m.MediaID, m.ContentType, m.UploadName, m.Size, m.SHA256)
		if err != nil {
			return fmt.Errorf("complete media: %w", err)
		}
		return nil
	})
}

// SelectMedia implements storage.Database.
func (d *Database) SelectMedia(ctx context.Context, serverName, mediaID string) (*storage.Media, error) {
	var m storage.Media
	err := d.db.QueryRowContext(ctx, "SELECT "+mediaColumns+" FROM mediaapi_media WHERE server_name = $1 AND media_id = $2", serverName, mediaID).
		Scan(&m.ServerName, &m.MediaID, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.UserID, &m.CreatedTS, &m.ExpiresTS, &m.AuthenticatedOnly)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select media: %w", err)
	}
	return &m, nil
}

// CountPending implements storage.Database.
func (d *Database) CountPending(ctx context.Context, userID string, nowTS int64) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mediaapi_media WHERE user_id = $1 AND sha256 = '' AND expires_ts >= $2", userID, nowTS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pending media: %w", err)
	}
	return n, nil
}

// DeleteExpired implements storage.Database.
func (d *Database) DeleteExpired(ctx context.Context, nowTS int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM mediaapi_media WHERE sha256 = '' AND expires_ts < $1", nowTS); err != nil {
			return fmt.Errorf("delete expired media: %w", err)
		}
		return nil
	})
}

// InsertThumbnail implements storage.Database.
func (d *Database) InsertThumbnail(ctx context.Context, t *storage.Thumbnail) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO mediaapi_thumbnails (server_name, media_id, width, height, method, content_type, size, sha256)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (server_name, media_id, width, height, method) DO NOTHING`,
			t.ServerName, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.Size, t.SHA256)
		if err != nil {
			return fmt.Errorf("insert thumbnail: %w", err)
		}
		return nil
	})
}

// SelectThumbnails implements storage.Database.
func (d *Database) SelectThumbnails(ctx context.Context, serverName, mediaID string) ([]storage.Thumbnail, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT width, height, method, content_type, size, sha256 FROM mediaapi_thumbnails
		WHERE server_name = $1 AND media_id = $2 ORDER BY width, height`, serverName, mediaID)
	if err != nil {
		return nil, fmt.Errorf("select thumbnails: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Thumbnail
	for rows.Next() {
		t := storage.Thumbnail{ServerName: serverName, MediaID: mediaID}
		if err = rows.Scan(&t.Width, &t.Height, &t.Method, &t.ContentType, &t.Size, &t.SHA256); err != nil {
			return nil, fmt.Errorf("select thumbnails: %w", err)
		}
		out = append(out, t)
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("select thumbnails: %w", err)
	}
	return out, nil
}

// TotalBytes implements storage.Database.
func (d *Database) TotalBytes(ctx context.Context) (int64, error) {
	var n int64
	if err := d.db.QueryRowContext(ctx, "SELECT COALESCE(SUM(size), 0) FROM mediaapi_media").Scan(&n); err != nil {
		return 0, fmt.Errorf("sum media sizes: %w", err)
	}
	return n, nil
}
