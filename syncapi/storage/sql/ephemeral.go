package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// WriteTyping implements storage.Database.
func (d *Database) WriteTyping(ctx context.Context, typing []storage.Typing, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamTyping, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, t := range typing {
			users, err := json.Marshal(t.Users)
			if err != nil {
				return err
			}
			var old string
			err = tx.QueryRowContext(ctx, "SELECT users FROM syncapi_typing WHERE room_id = $1", t.RoomID).Scan(&old)
			if err == nil && old == string(users) {
				continue
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			err = d.storeAtNextPosition(ctx, tx, applied, "typing", `INSERT INTO syncapi_typing (room_id, users, position) VALUES ($1, $2, $3)
				ON CONFLICT (room_id) DO UPDATE SET users = $2, position = $3`, t.RoomID, string(users))
			if err != nil {
				return err
			}
			applied.EphemeralRooms = append(applied.EphemeralRooms, t.RoomID)
		}
		return nil
	})
}

// WriteReceipts implements storage.Database.
func (d *Database) WriteReceipts(ctx context.Context, receipts []storage.Receipt, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamReceipts, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, r := range receipts {
			var old string
			err := tx.QueryRowContext(ctx, "SELECT event_id FROM syncapi_receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
				r.RoomID, r.UserID, r.Type, r.ThreadID).Scan(&old)
			if err == nil && old == r.EventID {
				continue
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			var eventPos int64
			err = tx.QueryRowContext(ctx, "SELECT position FROM syncapi_events WHERE event_id = $1", r.EventID).Scan(&eventPos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			err = d.storeAtNextPosition(ctx, tx, applied, "receipt", `INSERT INTO syncapi_receipts (room_id, user_id, receipt_type, thread_id, event_id, event_position, ts, position)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (room_id, user_id, receipt_type, thread_id)
				DO UPDATE SET event_id = $5, event_position = $6, ts = $7, position = $8`,
				r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, eventPos, r.TS)
			if err != nil {
				return err
			}
			if r.Type == "m.read.private" {
				applied.Users = append(applied.Users, r.UserID)
			} else {
				applied.EphemeralRooms = append(applied.EphemeralRooms, r.RoomID)
			}
		}
		return nil
	})
}

// WriteToDevice implements storage.Database.
func (d *Database) WriteToDevice(ctx context.Context, msgs []storage.ToDeviceMessage, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamToDevice, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, m := range msgs {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM syncapi_send_to_device WHERE message_id = $1", m.MessageID).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			err := d.storeAtNextPosition(ctx, tx, applied, "to-device message", `INSERT INTO syncapi_send_to_device
				(message_id, user_id, device_id, sender, type, content, position) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				m.MessageID, m.UserID, m.DeviceID, m.Sender, m.Type, string(m.Content))
			if err != nil {
				return err
			}
			applied.Users = append(applied.Users, m.UserID)
		}
		return nil
	})
}

// WritePresence implements storage.Database.
func (d *Database) WritePresence(ctx context.Context, presence []storage.Presence, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamPresence, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, p := range presence {
			var old storage.Presence
			var status sql.NullString
			err := tx.QueryRowContext(ctx, "SELECT presence, status_msg, last_active_ts, currently_active FROM syncapi_presence WHERE user_id = $1",
				p.UserID).Scan(&old.Presence, &status, &old.LastActiveTS, &old.CurrentlyActive)
			if err == nil && old.Presence == p.Presence && old.LastActiveTS == p.LastActiveTS && old.CurrentlyActive == p.CurrentlyActive &&
				status.Valid == (p.StatusMsg != nil) && (p.StatusMsg == nil || status.String == *p.StatusMsg) {
				continue
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			err = d.storeAtNextPosition(ctx, tx, applied, "presence", `INSERT INTO syncapi_presence (user_id, presence, status_msg, last_active_ts, currently_active, position)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id)
				DO UPDATE SET presence = $2, status_msg = $3, last_active_ts = $4, currently_active = $5, position = $6`,
				p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive)
			if err != nil {
				return err
			}
			applied.PresenceUsers = append(applied.PresenceUsers, p.UserID)
		}
		return nil
	})
}

// Typing implements storage.Database.
func (d *Database) Typing(ctx context.Context, roomIDs []string, after, upTo int64) ([]storage.Typing, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	q, args := d.db.Dialect.InList("SELECT room_id, users FROM syncapi_typing WHERE position > $1 AND position <= $2 AND room_id IN ({ids})",
		"{ids}", []any{after, upTo}, roomIDs)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Typing
	for rows.Next() {
		var t storage.Typing
		var users string
		if err := rows.Scan(&t.RoomID, &users); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(users), &t.Users); err != nil {
			return nil, fmt.Errorf("decode typing of %s: %w", t.RoomID, err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Receipts implements storage.Database.
func (d *Database) Receipts(ctx context.Context, userID string, roomIDs []string, after, upTo int64) ([]storage.Receipt, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	q, args := d.db.Dialect.InList(`SELECT room_id, user_id, receipt_type, event_id, thread_id, ts FROM syncapi_receipts
		WHERE position > $1 AND position <= $2 AND (receipt_type <> 'm.read.private' OR user_id = $3) AND room_id IN ({ids})
		ORDER BY position`, "{ids}", []any{after, upTo, userID}, roomIDs)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Receipt
	for rows.Next() {
		var r storage.Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.EventID, &r.ThreadID, &r.TS); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// TypingRooms implements storage.Database.
func (d *Database) TypingRooms(ctx context.Context, after, upTo int64) ([]string, error) {
	return d.roomIDs(ctx, "SELECT room_id FROM syncapi_typing WHERE position > $1 AND position <= $2", after, upTo)
}

// ReceiptRooms implements storage.Database.
func (d *Database) ReceiptRooms(ctx context.Context, after, upTo int64) ([]string, error) {
	return d.roomIDs(ctx, "SELECT DISTINCT room_id FROM syncapi_receipts WHERE position > $1 AND position <= $2", after, upTo)
}

// roomIDs runs query, which selects room IDs, with args.
func (d *Database) roomIDs(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []string
	for rows.Next() {
		var roomID string
		if err := rows.Scan(&roomID); err != nil {
			return nil, err
		}
		out = append(out, roomID)
	}
	return out, rows.Err()
}

// ToDevice implements storage.Database.
func (d *Database) ToDevice(ctx context.Context, userID, deviceID string, upTo int64) ([]storage.ToDeviceMessage, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT position, message_id, sender, type, content FROM syncapi_send_to_device
		WHERE user_id = $1 AND device_id = $2 AND position <= $3 AND delivered_ms = 0 ORDER BY position`, userID, deviceID, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.ToDeviceMessage
	for rows.Next() {
		m := storage.ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.Position, &m.MessageID, &m.Sender, &m.Type, &content); err != nil {
			return nil, err
		}
		m.Content = []byte(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// AckToDevice implements storage.Database.
func (d *Database) AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error {
	_, err := d.db.ExecContext(ctx, `UPDATE syncapi_send_to_device SET content = '', delivered_ms = $4
		WHERE user_id = $1 AND device_id = $2 AND position <= $3 AND delivered_ms = 0`, userID, deviceID, upTo, time.Now().UnixMilli())
	return err
}

// PruneToDevice implements storage.Database.
func (d *Database) PruneToDevice(ctx context.Context, before int64) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM syncapi_send_to_device WHERE delivered_ms > 0 AND delivered_ms < $1", before)
	return err
}

// Presence implements storage.Database. An initial sync (after 0) joins the presence table
// with the user's rooms; an incremental one reads the few changes in its range first and
// then checks only those users against the user's rooms, which stays cheap in rooms with
// many members.
func (d *Database) Presence(ctx context.Context, userID string, after, upTo int64) ([]storage.Presence, error) {
	const columns = "SELECT user_id, presence, status_msg, last_active_ts, currently_active, position FROM syncapi_presence"
	const roomMates = `SELECT o.state_key FROM syncapi_current_state o JOIN syncapi_current_state m ON o.room_id = m.room_id
		WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join' AND o.type = 'm.room.member' AND o.membership = 'join'`
	if after == 0 {
		return d.queryPresence(ctx, columns+` WHERE position > $2 AND position <= $3 AND (user_id = $1 OR user_id IN (`+roomMates+`))
			ORDER BY position`, userID, after, upTo)
	}
	changed, err := d.queryPresence(ctx, columns+" WHERE position > $1 AND position <= $2 ORDER BY position", after, upTo)
	if err != nil || len(changed) == 0 {
		return nil, err
	}
	ids := make([]string, 0, len(changed))
	for _, p := range changed {
		if p.UserID != userID {
			ids = append(ids, p.UserID)
		}
	}
	visible := map[string]bool{userID: true}
	if len(ids) > 0 {
		q, args := d.db.Dialect.InList(roomMates+" AND o.state_key IN ({ids})", "{ids}", []any{userID}, ids)
		rows, err := d.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close() // nolint: errcheck // read-only
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				return nil, err
			}
			visible[u] = true
		}
		if err = rows.Err(); err != nil {
			return nil, err
		}
	}
	out := changed[:0]
	for _, p := range changed {
		if visible[p.UserID] {
			out = append(out, p)
		}
	}
	return out, nil
}

// PresenceOf implements storage.Database.
func (d *Database) PresenceOf(ctx context.Context, userIDs []string, upTo int64) ([]storage.Presence, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	q, args := d.db.Dialect.InList("SELECT user_id, presence, status_msg, last_active_ts, currently_active, position"+
		" FROM syncapi_presence WHERE position <= $1 AND user_id IN ({ids}) ORDER BY position", "{ids}", []any{upTo}, userIDs)
	out, err := d.queryPresence(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("select presence of users: %w", err)
	}
	return out, nil
}

func (d *Database) queryPresence(ctx context.Context, query string, args ...any) ([]storage.Presence, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Presence
	for rows.Next() {
		var p storage.Presence
		var status sql.NullString
		if err := rows.Scan(&p.UserID, &p.Presence, &status, &p.LastActiveTS, &p.CurrentlyActive, &p.Position); err != nil {
			return nil, err
		}
		if status.Valid {
			p.StatusMsg = &status.String
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// WriteNotificationCounts implements storage.Database.
func (d *Database) WriteNotificationCounts(ctx context.Context, counts []storage.NotificationCounts, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamNotificationCounts, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, c := range counts {
			joined, err := isJoined(ctx, tx, c.UserID, c.RoomID)
			if err != nil {
				return err
			}
			if !joined {
				// Only joined rooms have counts (unread_notifications); an invite's
				// notification counted now would show as a stale count right after the
				// join, until the pushserver's reset at the join arrives.
				c.Threads = map[string]storage.Counts{}
			}
			threads, err := json.Marshal(c.Threads)
			if err != nil {
				return err
			}
			var old string
			err = tx.QueryRowContext(ctx, "SELECT threads FROM syncapi_notification_counts WHERE user_id = $1 AND room_id = $2",
				c.UserID, c.RoomID).Scan(&old)
			if err == nil && old == string(threads) {
				continue
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err != nil && len(c.Threads) == 0 {
				continue // no counts before and none now: nothing a client could see changed
			}
			err = d.storeAtNextPosition(ctx, tx, applied, "notification counts", `INSERT INTO syncapi_notification_counts
				(user_id, room_id, threads, position) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, room_id) DO UPDATE SET threads = $3, position = $4`, c.UserID, c.RoomID, string(threads))
			if err != nil {
				return err
			}
			applied.Users = append(applied.Users, c.UserID)
		}
		return nil
	})
}

// isJoined reports whether the user's latest membership in the room is a join.
func isJoined(ctx context.Context, tx *sql.Tx, userID, roomID string) (bool, error) {
	var membership string
	err := tx.QueryRowContext(ctx, `SELECT membership FROM syncapi_memberships WHERE room_id = $1 AND user_id = $2
		ORDER BY position DESC LIMIT 1`, roomID, userID).Scan(&membership)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return membership == spec.Join, err
}

// NotificationCounts implements storage.Database.
func (d *Database) NotificationCounts(ctx context.Context, userID string, roomIDs []string) (map[string]map[string]storage.Counts, error) {
	out := map[string]map[string]storage.Counts{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	q, args := d.db.Dialect.InList(`SELECT room_id, threads FROM syncapi_notification_counts WHERE user_id = $1 AND room_id IN ({ids})`,
		"{ids}", []any{userID}, roomIDs)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("select notification counts: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var roomID, threads string
		if err := rows.Scan(&roomID, &threads); err != nil {
			return nil, err
		}
		m := map[string]storage.Counts{}
		if err := json.Unmarshal([]byte(threads), &m); err != nil {
			return nil, fmt.Errorf("decode notification counts: %w", err)
		}
		out[roomID] = m
	}
	return out, rows.Err()
}

// NotificationCountRooms implements storage.Database.
func (d *Database) NotificationCountRooms(ctx context.Context, userID string, after, upTo int64) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id FROM syncapi_notification_counts WHERE user_id = $1 AND position > $2 AND position <= $3`,
		userID, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("select changed notification counts: %w", err)
	}
	return sqlutil.Column[string](rows)
}
