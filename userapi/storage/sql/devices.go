package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/userapi/storage"
)

const deviceColumns = "localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, user_agent"

// A re-login with a known device ID keeps the device's name (the spec ignores
// initial_device_display_name for a known device) and replaces its token.
const upsertDeviceSQL = "INSERT INTO userapi_devices (" + deviceColumns + ", token_hash)" +
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8)" +
	" ON CONFLICT (localpart, device_id) DO UPDATE SET token_hash = excluded.token_hash," +
	" last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip, user_agent = excluded.user_agent"

// PutDevice implements storage.Database.
func (d *Database) PutDevice(ctx context.Context, dev *storage.Device, tokenHash []byte, ann storage.Announcement[*storage.KeyChange]) (*storage.KeyChange, error) {
	var change *storage.KeyChange
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM userapi_accounts WHERE localpart = $1", dev.Localpart).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, "SELECT 1 FROM userapi_devices WHERE localpart = $1 AND device_id = $2", dev.Localpart, dev.DeviceID).Scan(&one)
		known := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err = tx.ExecContext(ctx, upsertDeviceSQL, dev.Localpart, dev.DeviceID, dev.DisplayName,
			dev.CreatedTS, dev.LastSeenTS, dev.LastSeenIP, dev.UserAgent, tokenHash); err != nil || known {
			return err
		}
		stream, err := bumpStream(ctx, tx, dev.Localpart)
		if err != nil {
			return err
		}
		change = &storage.KeyChange{DeviceID: dev.DeviceID, StreamID: stream, DisplayName: dev.DisplayName}
		return insertAnnounced(ctx, tx, ann, change)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("upsert device: %w", err)
	}
	return change, nil
}

func scanDevice(row interface{ Scan(...any) error }) (*storage.Device, error) {
	var dev storage.Device
	err := row.Scan(&dev.Localpart, &dev.DeviceID, &dev.DisplayName, &dev.CreatedTS, &dev.LastSeenTS, &dev.LastSeenIP, &dev.UserAgent)
	return &dev, err
}

// DeviceByTokenHash implements storage.Database.
func (d *Database) DeviceByTokenHash(ctx context.Context, tokenHash []byte) (*storage.Device, error) {
	var dev storage.Device
	err := d.db.QueryRowContext(ctx, "SELECT d.localpart, d.device_id, d.display_name, d.created_ts, d.last_seen_ts,"+
		" d.last_seen_ip, d.user_agent, a.account_type FROM userapi_devices d"+
		" JOIN userapi_accounts a ON a.localpart = d.localpart WHERE d.token_hash = $1", tokenHash,
	).Scan(&dev.Localpart, &dev.DeviceID, &dev.DisplayName, &dev.CreatedTS, &dev.LastSeenTS, &dev.LastSeenIP, &dev.UserAgent, &dev.AccountType)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select device by token: %w", err)
	}
	return &dev, nil
}

// Devices implements storage.Database.
func (d *Database) Devices(ctx context.Context, localpart string) ([]storage.Device, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+deviceColumns+" FROM userapi_devices WHERE localpart = $1 ORDER BY device_id", localpart)
	if err != nil {
		return nil, fmt.Errorf("select devices: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.Device
	for rows.Next() {
		dev, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("scan device: %w", err)
		}
		out = append(out, *dev)
	}
	return out, rows.Err()
}

// DeleteDevices implements storage.Database.
func (d *Database) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string, ann storage.Announcement[[]storage.KeyChange]) ([]storage.KeyChange, error) {
	if len(deviceIDs) == 0 {
		return nil, nil
	}
	query, args := d.db.Dialect.InList("DELETE FROM userapi_devices WHERE localpart = $1 AND device_id IN ({ids}) RETURNING device_id", "{ids}", []any{localpart}, deviceIDs)
	return d.deleteDevices(ctx, localpart, ann, query, args...)
}

// DeleteDevicesExcept implements storage.Database.
func (d *Database) DeleteDevicesExcept(ctx context.Context, localpart, except string, ann storage.Announcement[[]storage.KeyChange]) ([]storage.KeyChange, error) {
	return d.deleteDevices(ctx, localpart, ann, "DELETE FROM userapi_devices WHERE localpart = $1 AND device_id <> $2 RETURNING device_id", localpart, except)
}

// deleteDevices runs a DELETE ... RETURNING device_id of the account's devices and deletes
// the deleted devices' keys in the same transaction, announcing the deletions with ann.
func (d *Database) deleteDevices(ctx context.Context, localpart string, ann storage.Announcement[[]storage.KeyChange], query string, args ...any) ([]storage.KeyChange, error) {
	var changes []storage.KeyChange
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err = rows.Scan(&id); err != nil {
				_ = rows.Close() // the scan error is the one to report
				return err
			}
			ids = append(ids, id)
		}
		if err = rows.Close(); err != nil {
			return err
		}
		if err = rows.Err(); err != nil {
			return err
		}
		if changes, err = deleteDeviceKeys(ctx, tx, localpart, ids); err != nil || len(changes) == 0 {
			return err
		}
		return insertAnnounced(ctx, tx, ann, changes)
	})
	if err != nil {
		return nil, fmt.Errorf("delete devices: %w", err)
	}
	return changes, nil
}

// SetDeviceDisplayName implements storage.Database.
func (d *Database) SetDeviceDisplayName(ctx context.Context, localpart, deviceID, name string, ann storage.Announcement[*storage.KeyChange]) (*storage.KeyChange, error) {
	var change *storage.KeyChange
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, "SELECT display_name FROM userapi_devices WHERE localpart = $1 AND device_id = $2", localpart, deviceID).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil || old == name {
			return err
		}
		if _, err = tx.ExecContext(ctx, "UPDATE userapi_devices SET display_name = $1 WHERE localpart = $2 AND device_id = $3", name, localpart, deviceID); err != nil {
			return err
		}
		keys, err := deviceKeyJSON(ctx, tx, localpart, deviceID)
		if err != nil {
			return err
		}
		stream, err := bumpStream(ctx, tx, localpart)
		if err != nil {
			return err
		}
		change = &storage.KeyChange{DeviceID: deviceID, StreamID: stream, JSON: keys, DisplayName: name}
		return insertAnnounced(ctx, tx, ann, change)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("rename device: %w", err)
	}
	return change, nil
}

// TouchDevice implements storage.Database.
func (d *Database) TouchDevice(ctx context.Context, localpart, deviceID string, ts int64) error {
	return d.exec(ctx, "touch device", "UPDATE userapi_devices SET last_seen_ts = $1 WHERE localpart = $2 AND device_id = $3", ts, localpart, deviceID)
}

// exec runs one write statement in a transaction (SQLite writers are serialised there).
func (d *Database) exec(ctx context.Context, what, query string, args ...any) error {
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
