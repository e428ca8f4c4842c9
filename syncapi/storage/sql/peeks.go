package sql

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// WritePeek implements storage.Database.
func (d *Database) WritePeek(ctx context.Context, userID, deviceID, roomID string) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamPeeks, storage.Offset{}, func(tx *sql.Tx, applied *storage.Applied) error {
		err := d.storeAtNextPosition(ctx, tx, applied, "peek", `INSERT INTO syncapi_peeks (user_id, device_id, room_id, position)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id, room_id) DO UPDATE SET position = $4`, userID, deviceID, roomID)
		if err != nil {
			return err
		}
		applied.Users = append(applied.Users, userID)
		applied.Peeks = append(applied.Peeks, storage.Peek{UserID: userID, DeviceID: deviceID, RoomID: roomID, Position: applied.Position})
		return nil
	})
}

// DeletePeek implements storage.Database.
func (d *Database) DeletePeek(ctx context.Context, userID, deviceID, roomID string) (bool, error) {
	var n int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM syncapi_peeks WHERE user_id = $1 AND device_id = $2 AND room_id = $3", userID, deviceID, roomID)
		if err != nil {
			return fmt.Errorf("delete peek: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n > 0, err
}

// Peeks implements storage.Database.
func (d *Database) Peeks(ctx context.Context, userID, deviceID string) ([]storage.Peek, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT user_id, device_id, room_id, position FROM syncapi_peeks WHERE user_id = $1 AND device_id = $2",
		userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("select peeks: %w", err)
	}
	return scanPeeks(rows)
}

// AllPeeks implements storage.Database.
func (d *Database) AllPeeks(ctx context.Context) ([]storage.Peek, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT user_id, device_id, room_id, position FROM syncapi_peeks")
	if err != nil {
		return nil, fmt.Errorf("select peeks: %w", err)
	}
	return scanPeeks(rows)
}

func scanPeeks(rows *sql.Rows) ([]storage.Peek, error) {
	defer rows.Close()
	var out []storage.Peek
	for rows.Next() {
		var p storage.Peek
		if err := rows.Scan(&p.UserID, &p.DeviceID, &p.RoomID, &p.Position); err != nil {
			return nil, fmt.Errorf("select peeks: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// endPeeks ends every peek of userID into roomID when their membership becomes join (a
// member reads the room as joined), leave or ban (a user who left, was kicked or banned
// stops following the room).
func endPeeks(ctx context.Context, tx *sql.Tx, roomID, userID string) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM syncapi_peeks WHERE user_id = $1 AND room_id = $2", userID, roomID); err != nil {
		return fmt.Errorf("end peeks of a user whose membership changed: %w", err)
	}
	return nil
}
