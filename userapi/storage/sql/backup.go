package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// parseVersion is a version string's number; anything else names no version.
func parseVersion(version string) (int64, error) {
	n, err := strconv.ParseInt(version, 10, 64)
	if err != nil || n <= 0 {
		return 0, storage.ErrNotFound
	}
	return n, nil
}

// CreateKeyBackup implements storage.Database.
func (d *Database) CreateKeyBackup(ctx context.Context, localpart, algorithm string, authData []byte) (string, error) {
	var version int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) + 1 FROM userapi_key_backup_versions WHERE localpart = $1",
			localpart).Scan(&version); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO userapi_key_backup_versions (localpart, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)",
			localpart, version, algorithm, string(authData))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create key backup: %w", err)
	}
	return strconv.FormatInt(version, 10), nil
}

// UpdateKeyBackup implements storage.Database.
func (d *Database) UpdateKeyBackup(ctx context.Context, localpart, version string, authData []byte) error {
	v, err := parseVersion(version)
	if err != nil {
		return err
	}
	var n int64
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE userapi_key_backup_versions SET auth_data = $1 WHERE localpart = $2 AND version = $3 AND NOT deleted",
			string(authData), localpart, v)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("update key backup: %w", err)
	}
	if n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// DeleteKeyBackup implements storage.Database.
func (d *Database) DeleteKeyBackup(ctx context.Context, localpart, version string) error {
	v, err := parseVersion(version)
	if err != nil {
		return err
	}
	var n int64
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE userapi_key_backup_versions SET deleted = TRUE WHERE localpart = $1 AND version = $2 AND NOT deleted",
			localpart, v)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM userapi_key_backups WHERE localpart = $1 AND version = $2", localpart, v)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete key backup: %w", err)
	}
	if n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// KeyBackup implements storage.Database.
func (d *Database) KeyBackup(ctx context.Context, localpart, version string) (*storage.KeyBackup, error) {
	return keyBackup(ctx, d.db, localpart, version)
}

func keyBackup(ctx context.Context, q sqlutil.Querier, localpart, version string) (*storage.KeyBackup, error) {
	query, args := "SELECT version, algorithm, auth_data, etag FROM userapi_key_backup_versions WHERE localpart = $1 AND NOT deleted ORDER BY version DESC LIMIT 1",
		[]any{localpart}
	if version != "" {
		v, err := parseVersion(version)
		if err != nil {
			return nil, err
		}
		query, args = "SELECT version, algorithm, auth_data, etag FROM userapi_key_backup_versions WHERE localpart = $1 AND version = $2 AND NOT deleted",
			[]any{localpart, v}
	}
	var b storage.KeyBackup
	var v int64
	var authData string
	err := q.QueryRowContext(ctx, query, args...).Scan(&v, &b.Algorithm, &authData, &b.ETag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select key backup: %w", err)
	}
	b.Version, b.AuthData = strconv.FormatInt(v, 10), []byte(authData)
	if err = q.QueryRowContext(ctx, "SELECT COUNT(*) FROM userapi_key_backups WHERE localpart = $1 AND version = $2", localpart, v).Scan(&b.Count); err != nil {
		return nil, fmt.Errorf("count backed-up keys: %w", err)
	}
	return &b, nil
}

const upsertRoomKeySQL = "INSERT INTO userapi_key_backups (localpart, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)" +
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (localpart, version, room_id, session_id) DO UPDATE SET" +
	" first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count," +
	" is_verified = excluded.is_verified, session_data = excluded.session_data"

// PutRoomKeys implements storage.Database.
func (d *Database) PutRoomKeys(ctx context.Context, localpart, version string, keys []storage.RoomKey) (*storage.KeyBackup, error) {
	var out *storage.KeyBackup
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		latest, err := keyBackup(ctx, tx, localpart, "")
		if errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if err != nil {
			return err
		}
		if latest.Version != version {
			if _, err := keyBackup(ctx, tx, localpart, version); err != nil {
				return err
			}
			return &storage.ErrWrongVersion{Current: latest.Version}
		}
		v, _ := parseVersion(version) // latest.Version is a number
		changed := false
		for i := range keys {
			k := &keys[i]
			old, err := roomKeys(ctx, tx, localpart, v, k.RoomID, k.SessionID)
			if err != nil {
				return err
			}
			if len(old) == 1 && !k.Better(&old[0]) {
				continue
			}
			if _, err = tx.ExecContext(ctx, upsertRoomKeySQL, localpart, v, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount,
				k.IsVerified, string(k.SessionData)); err != nil {
				return err
			}
			changed = true
		}
		if changed {
			if _, err = tx.ExecContext(ctx, "UPDATE userapi_key_backup_versions SET etag = etag + 1 WHERE localpart = $1 AND version = $2", localpart, v); err != nil {
				return err
			}
		}
		out, err = keyBackup(ctx, tx, localpart, version)
		return err
	})
	var wrong *storage.ErrWrongVersion
	if errors.Is(err, storage.ErrNotFound) || errors.As(err, &wrong) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("store room keys: %w", err)
	}
	return out, nil
}

// roomKeys reads keys of one version: all (roomID ""), a room's, or one session's.
func roomKeys(ctx context.Context, q sqlutil.Querier, localpart string, version int64, roomID, sessionID string) ([]storage.RoomKey, error) {
	query := "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM userapi_key_backups WHERE localpart = $1 AND version = $2"
	args := []any{localpart, version}
	if roomID != "" {
		query += " AND room_id = $3"
		args = append(args, roomID)
		if sessionID != "" {
			query += " AND session_id = $4"
			args = append(args, sessionID)
		}
	}
	rows, err := q.QueryContext(ctx, query+" ORDER BY room_id, session_id", args...)
	if err != nil {
		return nil, fmt.Errorf("select room keys: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.RoomKey
	for rows.Next() {
		var k storage.RoomKey
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, fmt.Errorf("scan room key: %w", err)
		}
		k.SessionData = []byte(data)
		out = append(out, k)
	}
	return out, rows.Err()
}

// RoomKeys implements storage.Database.
func (d *Database) RoomKeys(ctx context.Context, localpart, version, roomID, sessionID string) ([]storage.RoomKey, error) {
	b, err := keyBackup(ctx, d.db, localpart, version)
	if err != nil {
		return nil, err
	}
	v, _ := parseVersion(b.Version) // b.Version is a number
	return roomKeys(ctx, d.db, localpart, v, roomID, sessionID)
}

// DeleteRoomKeys implements storage.Database.
func (d *Database) DeleteRoomKeys(ctx context.Context, localpart, version, roomID, sessionID string) (*storage.KeyBackup, error) {
	var out *storage.KeyBackup
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		b, err := keyBackup(ctx, tx, localpart, version)
		if err != nil {
			return err
		}
		v, _ := parseVersion(b.Version) // b.Version is a number
		query := "DELETE FROM userapi_key_backups WHERE localpart = $1 AND version = $2"
		args := []any{localpart, v}
		if roomID != "" {
			query += " AND room_id = $3"
			args = append(args, roomID)
			if sessionID != "" {
				query += " AND session_id = $4"
				args = append(args, sessionID)
			}
		}
		if _, err = tx.ExecContext(ctx, query, args...); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, "UPDATE userapi_key_backup_versions SET etag = etag + 1 WHERE localpart = $1 AND version = $2", localpart, v); err != nil {
			return err
		}
		out, err = keyBackup(ctx, tx, localpart, version)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("delete room keys: %w", err)
	}
	return out, nil
}
