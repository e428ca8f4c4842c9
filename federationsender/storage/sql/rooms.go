package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// RoomKnown implements storage.Database.
func (d *Database) RoomKnown(ctx context.Context, tx *sql.Tx, roomID string) (bool, error) {
	var one int
	err := sqlutil.Conn(d.db, tx).QueryRowContext(ctx, "SELECT 1 FROM federationsender_rooms WHERE room_id = $1", roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select room: %w", err)
	}
	return true, nil
}

// UnknownRooms implements storage.Database.
func (d *Database) UnknownRooms(ctx context.Context, tx *sql.Tx, roomIDs []string) ([]string, error) {
	query, args := d.db.Dialect.InList("SELECT room_id FROM federationsender_rooms WHERE room_id IN ({list})", "{list}", nil, roomIDs)
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select rooms: %w", err)
	}
	defer rows.Close()
	known := map[string]bool{}
	for rows.Next() {
		var id string
		if err = rows.Scan(&id); err != nil {
			return nil, err
		}
		known[id] = true
	}
	if err = rows.Err(); err != nil {
		return nil, err
	}
	var unknown []string
	for _, id := range roomIDs {
		if !known[id] {
			unknown = append(unknown, id)
		}
	}
	return unknown, nil
}

// AddRoom implements storage.Database.
func (d *Database) AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []storage.Member) error {
	_, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, "INSERT INTO federationsender_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING", roomID)
	if err != nil {
		return fmt.Errorf("insert room: %w", err)
	}
	for _, m := range members {
		if err := d.SetJoined(ctx, tx, roomID, m); err != nil {
			return err
		}
	}
	return nil
}

// SetJoined implements storage.Database.
func (d *Database) SetJoined(ctx context.Context, tx *sql.Tx, roomID string, m storage.Member) error {
	_, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, `INSERT INTO federationsender_joined_members (room_id, user_id, server_name, event_id)
		VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO UPDATE SET server_name = $3, event_id = $4`,
		roomID, m.UserID, m.ServerName, m.EventID)
	if err != nil {
		return fmt.Errorf("store joined member: %w", err)
	}
	return nil
}

// SetLeft implements storage.Database.
func (d *Database) SetLeft(ctx context.Context, tx *sql.Tx, roomID, userID string) error {
	_, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, "DELETE FROM federationsender_joined_members WHERE room_id = $1 AND user_id = $2", roomID, userID)
	if err != nil {
		return fmt.Errorf("delete member: %w", err)
	}
	return nil
}

// RemoveMemberEvents implements storage.Database.
func (d *Database) RemoveMemberEvents(ctx context.Context, tx *sql.Tx, roomID string, eventIDs []string) error {
	if len(eventIDs) == 0 {
		return nil
	}
	query, args := d.db.Dialect.InList("DELETE FROM federationsender_joined_members WHERE room_id = $1 AND event_id IN ({ids})",
		"{ids}", []any{roomID}, eventIDs)
	if _, err := sqlutil.Conn(d.db, tx).ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("delete removed members: %w", err)
	}
	return nil
}

// JoinedServers implements storage.Database.
func (d *Database) JoinedServers(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	return d.strings(ctx, tx, "SELECT DISTINCT server_name FROM federationsender_joined_members WHERE room_id = $1", roomID)
}

// JoinedUsers implements storage.Database.
func (d *Database) JoinedUsers(ctx context.Context, tx *sql.Tx, roomID, serverName string) ([]string, error) {
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx,
		"SELECT user_id FROM federationsender_joined_members WHERE room_id = $1 AND server_name = $2 ORDER BY user_id", roomID, serverName)
	if err != nil {
		return nil, fmt.Errorf("select joined users: %w", err)
	}
	return sqlutil.Column[string](rows)
}

// ServersSharingRooms implements storage.Database.
func (d *Database) ServersSharingRooms(ctx context.Context, tx *sql.Tx, userID string) ([]string, error) {
	return d.strings(ctx, tx, `SELECT DISTINCT o.server_name FROM federationsender_joined_members m
		JOIN federationsender_joined_members o ON o.room_id = m.room_id WHERE m.user_id = $1`, userID)
}

func (d *Database) strings(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]string, error) {
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select servers: %w", err)
	}
	return sqlutil.Column[string](rows)
}
