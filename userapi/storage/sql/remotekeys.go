package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/dendrite/userapi/storage"
)

// remoteListState is a remote user's cached list position: found is false when nothing is
// cached.
type remoteListState struct {
	found    bool
	streamID int64
	stale    bool
	// localStream is the stream ID the update at streamID was announced at.
	localStream int64
}

func selectRemoteListState(ctx context.Context, tx *sql.Tx, userID string) (remoteListState, error) {
	var s remoteListState
	err := tx.QueryRowContext(ctx, "SELECT stream_id, stale, local_stream FROM userapi_remote_device_lists WHERE user_id = $1", userID).Scan(&s.streamID, &s.stale, &s.localStream)
	if errors.Is(err, sql.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("select remote device list: %w", err)
	}
	s.found = true
	return s, nil
}

func upsertRemoteListState(ctx context.Context, tx *sql.Tx, userID string, streamID int64, stale bool, localStream int64) error {
	if _, err := tx.ExecContext(ctx, "INSERT INTO userapi_remote_device_lists (user_id, stream_id, stale, local_stream) VALUES ($1, $2, $3, $4)"+
		" ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = excluded.stale, local_stream = excluded.local_stream",
		userID, streamID, stale, localStream); err != nil {
		return fmt.Errorf("store remote device list: %w", err)
	}
	return nil
}

// nullableJSON stores nil as SQL NULL.
func nullableJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

const upsertRemoteDeviceSQL = "INSERT INTO userapi_remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)" +
	" ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json"

// ApplyRemoteDeviceUpdate implements storage.Database.
func (d *Database) ApplyRemoteDeviceUpdate(ctx context.Context, u *storage.RemoteDeviceUpdate) (int64, bool, error) {
	var id int64
	var stale bool
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		s, err := selectRemoteListState(ctx, tx, u.UserID)
		switch {
		case err != nil:
			return err
		case s.found && u.StreamID == s.streamID:
			id, stale = s.localStream, s.stale
			return nil
		case s.found && u.StreamID < s.streamID:
			return nil
		}
		stale = !s.found || s.stale || slices.ContainsFunc(u.PrevIDs, func(id int64) bool { return id > s.streamID })
		if u.Deleted {
			_, err = tx.ExecContext(ctx, "DELETE FROM userapi_remote_devices WHERE user_id = $1 AND device_id = $2", u.UserID, u.Device.DeviceID)
		} else {
			_, err = tx.ExecContext(ctx, upsertRemoteDeviceSQL, u.UserID, u.Device.DeviceID, u.Device.DisplayName, nullableJSON(u.Device.JSON))
		}
		if err != nil {
			return fmt.Errorf("store remote device: %w", err)
		}
		if id, err = bumpStream(ctx, tx, u.UserID); err != nil {
			return err
		}
		return upsertRemoteListState(ctx, tx, u.UserID, u.StreamID, stale, id)
	})
	if err != nil {
		return 0, false, fmt.Errorf("apply remote device list update: %w", err)
	}
	return id, stale, nil
}

// putRemoteCrossSigning replaces the user's cached cross-signing keys of the purposes
// given (nil: left as they are).
func putRemoteCrossSigning(ctx context.Context, tx *sql.Tx, userID string, keys map[string][]byte) error {
	for purpose, k := range keys {
		if k == nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO userapi_remote_cross_signing_keys (user_id, purpose, key_json) VALUES ($1, $2, $3)"+
			" ON CONFLICT (user_id, purpose) DO UPDATE SET key_json = excluded.key_json", userID, purpose, string(k)); err != nil {
			return fmt.Errorf("store remote cross-signing key: %w", err)
		}
	}
	return nil
}

// PutRemoteCrossSigningKeys implements storage.Database.
func (d *Database) PutRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte) (int64, error) {
	var id int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if err := putRemoteCrossSigning(ctx, tx, userID, map[string][]byte{"master": master, "self_signing": selfSigning}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE userapi_remote_device_lists SET stale = TRUE WHERE user_id = $1", userID); err != nil {
			return fmt.Errorf("mark remote device list stale: %w", err)
		}
		var err error
		id, err = bumpStream(ctx, tx, userID)
		return err
	})
	return id, err
}

// ReplaceRemoteDeviceList implements storage.Database.
func (d *Database) ReplaceRemoteDeviceList(ctx context.Context, userID string, l *storage.RemoteDeviceList) (int64, error) {
	var id int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		s, err := selectRemoteListState(ctx, tx, userID)
		if err != nil {
			return err
		}
		if s.found && s.streamID > l.StreamID {
			return nil
		}
		if _, err = tx.ExecContext(ctx, "DELETE FROM userapi_remote_devices WHERE user_id = $1", userID); err != nil {
			return err
		}
		for _, dev := range l.Devices {
			if _, err = tx.ExecContext(ctx, upsertRemoteDeviceSQL, userID, dev.DeviceID, dev.DisplayName, nullableJSON(dev.JSON)); err != nil {
				return err
			}
		}
		if _, err = tx.ExecContext(ctx, "DELETE FROM userapi_remote_cross_signing_keys WHERE user_id = $1", userID); err != nil {
			return err
		}
		if err = putRemoteCrossSigning(ctx, tx, userID, map[string][]byte{"master": l.MasterKey, "self_signing": l.SelfSigningKey}); err != nil {
			return err
		}
		if id, err = bumpStream(ctx, tx, userID); err != nil {
			return err
		}
		return upsertRemoteListState(ctx, tx, userID, l.StreamID, false, id)
	})
	if err != nil {
		return 0, fmt.Errorf("replace remote device list: %w", err)
	}
	return id, nil
}

// MarkRemoteDeviceListsStale implements storage.Database.
func (d *Database) MarkRemoteDeviceListsStale(ctx context.Context, userIDs []string) error {
	if len(userIDs) == 0 {
		return nil
	}
	query, args := d.db.Dialect.InList("UPDATE userapi_remote_device_lists SET stale = TRUE WHERE user_id IN ({ids})", "{ids}", nil, userIDs)
	return d.exec(ctx, "mark remote device lists stale", query, args...)
}

// RemoteDeviceLists implements storage.Database.
func (d *Database) RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]*storage.RemoteDeviceList, error) {
	out := map[string]*storage.RemoteDeviceList{}
	if len(userIDs) == 0 {
		return out, nil
	}
	query, args := d.db.Dialect.InList("SELECT user_id, stream_id, stale FROM userapi_remote_device_lists WHERE user_id IN ({ids})", "{ids}", nil, userIDs)
	if err := d.scanRows(ctx, query, args, func(rows *sql.Rows) error {
		l := &storage.RemoteDeviceList{}
		var userID string
		if err := rows.Scan(&userID, &l.StreamID, &l.Stale); err != nil {
			return err
		}
		out[userID] = l
		return nil
	}); err != nil {
		return nil, fmt.Errorf("select remote device lists: %w", err)
	}
	query, args = d.db.Dialect.InList("SELECT user_id, device_id, display_name, key_json FROM userapi_remote_devices WHERE user_id IN ({ids}) ORDER BY user_id, device_id",
		"{ids}", nil, userIDs)
	if err := d.scanRows(ctx, query, args, func(rows *sql.Rows) error {
		var userID string
		var dev storage.RemoteDevice
		var keys sql.NullString
		if err := rows.Scan(&userID, &dev.DeviceID, &dev.DisplayName, &keys); err != nil {
			return err
		}
		if keys.Valid {
			dev.JSON = []byte(keys.String)
		}
		if l := out[userID]; l != nil {
			l.Devices = append(l.Devices, dev)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("select remote devices: %w", err)
	}
	query, args = d.db.Dialect.InList("SELECT user_id, purpose, key_json FROM userapi_remote_cross_signing_keys WHERE user_id IN ({ids})", "{ids}", nil, userIDs)
	if err := d.scanRows(ctx, query, args, func(rows *sql.Rows) error {
		var userID, purpose, key string
		if err := rows.Scan(&userID, &purpose, &key); err != nil {
			return err
		}
		l := out[userID]
		switch {
		case l == nil:
		case purpose == "master":
			l.MasterKey = []byte(key)
		case purpose == "self_signing":
			l.SelfSigningKey = []byte(key)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("select remote cross-signing keys: %w", err)
	}
	return out, nil
}

// scanRows runs query and calls scan for each row.
func (d *Database) scanRows(ctx context.Context, query string, args []any, scan func(*sql.Rows) error) error {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
