package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/storage"
)

// readerSchema holds what the push reader keeps: rooms it has state for, their members
// and power levels, users' push rules, the order of the events it saw and the
// notifications it recorded.
const readerSchema = `
CREATE TABLE IF NOT EXISTS pushserver_rooms (
	room_id TEXT PRIMARY KEY,
	power_levels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pushserver_members (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	membership TEXT NOT NULL,
	display_name TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS pushserver_members_joined ON pushserver_members (room_id, membership);
CREATE TABLE IF NOT EXISTS pushserver_push_rules (
	user_id TEXT PRIMARY KEY,
	rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pushserver_events (
	pos {serial},
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pushserver_notifications (
	id {serial},
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	actions TEXT NOT NULL,
	highlight BOOLEAN NOT NULL,
	pos {bigint} NOT NULL,
	ts {bigint} NOT NULL,
	is_read BOOLEAN NOT NULL DEFAULT FALSE,
	UNIQUE (user_id, event_id)
);
CREATE INDEX IF NOT EXISTS pushserver_notifications_unread ON pushserver_notifications (user_id, room_id, is_read, pos);
`

// JoinedCounts implements storage.Database.
func (d *Database) JoinedCounts(ctx context.Context, roomIDs []string) (map[string]int, error) {
	q, args := d.db.Dialect.InList(`SELECT r.room_id, COUNT(m.user_id) FROM pushserver_rooms r
		LEFT JOIN pushserver_members m ON m.room_id = r.room_id AND m.membership = 'join'
		WHERE r.room_id IN ({ids}) GROUP BY r.room_id`, "{ids}", nil, roomIDs)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("select known rooms: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err below reports what matters
	out := map[string]int{}
	for rows.Next() {
		var roomID string
		var n int
		if err := rows.Scan(&roomID, &n); err != nil {
			return nil, fmt.Errorf("scan known room: %w", err)
		}
		out[roomID] = n
	}
	return out, rows.Err()
}

// AddRoom implements storage.Database.
func (d *Database) AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []storage.Member, powerLevels json.RawMessage) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO pushserver_rooms (room_id, power_levels) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING`,
		roomID, string(powerLevels))
	if err != nil {
		return fmt.Errorf("insert room: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err
	}
	for _, m := range members {
		if err := d.SetMember(ctx, tx, roomID, m); err != nil {
			return err
		}
	}
	return nil
}

// SetMember implements storage.Database.
func (d *Database) SetMember(ctx context.Context, tx *sql.Tx, roomID string, m storage.Member) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO pushserver_members (room_id, user_id, membership, display_name) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id, user_id) DO UPDATE SET membership = $3, display_name = $4`, roomID, m.UserID, m.Membership, m.DisplayName)
	if err != nil {
		return fmt.Errorf("store member: %w", err)
	}
	return nil
}

// SetPowerLevels implements storage.Database.
func (d *Database) SetPowerLevels(ctx context.Context, tx *sql.Tx, roomID string, content json.RawMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO pushserver_rooms (room_id, power_levels) VALUES ($1, $2)
		ON CONFLICT (room_id) DO UPDATE SET power_levels = $2`, roomID, string(content))
	if err != nil {
		return fmt.Errorf("store power levels: %w", err)
	}
	return nil
}

// RoomState implements storage.Database.
func (d *Database) RoomState(ctx context.Context, tx *sql.Tx, roomID string) (*storage.RoomState, error) {
	q := sqlutil.Conn(d.db, tx)
	var st storage.RoomState
	var pl string
	err := q.QueryRowContext(ctx, `SELECT power_levels FROM pushserver_rooms WHERE room_id = $1`, roomID).Scan(&pl)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("select power levels: %w", err)
	}
	if pl != "" {
		st.PowerLevels = json.RawMessage(pl)
	}
	rows, err := q.QueryContext(ctx, `SELECT user_id, display_name FROM pushserver_members WHERE room_id = $1 AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("select members: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		m := storage.Member{Membership: "join"}
		if err := rows.Scan(&m.UserID, &m.DisplayName); err != nil {
			return nil, fmt.Errorf("scan member: %w", err)
		}
		st.Joined = append(st.Joined, m)
	}
	return &st, rows.Err()
}

// AddEvent implements storage.Database.
func (d *Database) AddEvent(ctx context.Context, tx *sql.Tx, eventID string, ts int64) (int64, bool, error) {
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO pushserver_events (event_id, ts) VALUES ($1, $2)
		ON CONFLICT (event_id) DO NOTHING RETURNING pos`, eventID, ts).Scan(&pos)
	if err == nil {
		return pos, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("insert event: %w", err)
	}
	pos, _, err = d.EventPosition(ctx, tx, eventID)
	return pos, false, err
}

// EventPosition implements storage.Database.
func (d *Database) EventPosition(ctx context.Context, tx *sql.Tx, eventID string) (int64, bool, error) {
	var pos int64
	err := sqlutil.Conn(d.db, tx).QueryRowContext(ctx, `SELECT pos FROM pushserver_events WHERE event_id = $1`, eventID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("select event position: %w", err)
	}
	return pos, true, nil
}

// SetPushRules implements storage.Database.
func (d *Database) SetPushRules(ctx context.Context, tx *sql.Tx, userID string, content json.RawMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO pushserver_push_rules (user_id, rules) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET rules = $2`, userID, string(content))
	if err != nil {
		return fmt.Errorf("store push rules: %w", err)
	}
	return nil
}

// PushRules implements storage.Database.
func (d *Database) PushRules(ctx context.Context, tx *sql.Tx, userIDs []string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, ids := range chunks(userIDs) {
		if err := d.pushRules(ctx, tx, ids, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pushRules adds the stored rules of userIDs, one IN list, to out.
func (d *Database) pushRules(ctx context.Context, tx *sql.Tx, userIDs []string, out map[string]json.RawMessage) error {
	q, args := d.db.Dialect.InList(`SELECT user_id, rules FROM pushserver_push_rules WHERE user_id IN ({ids})`, "{ids}", nil, userIDs)
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("select push rules: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var userID, rules string
		if err := rows.Scan(&userID, &rules); err != nil {
			return fmt.Errorf("scan push rules: %w", err)
		}
		out[userID] = json.RawMessage(rules)
	}
	return rows.Err()
}

// ignoredSchema holds each local user's m.ignored_user_list, one row per ignored user.
const ignoredSchema = `
CREATE TABLE IF NOT EXISTS pushserver_ignored_users (
	user_id TEXT NOT NULL,
	ignored_user_id TEXT NOT NULL,
	PRIMARY KEY (ignored_user_id, user_id)
);
`

// SetIgnoredUsers implements storage.Database.
func (d *Database) SetIgnoredUsers(ctx context.Context, tx *sql.Tx, userID string, ignored []string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM pushserver_ignored_users WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete ignored users: %w", err)
	}
	for _, other := range ignored {
		_, err := tx.ExecContext(ctx, `INSERT INTO pushserver_ignored_users (user_id, ignored_user_id) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, userID, other)
		if err != nil {
			return fmt.Errorf("store ignored user: %w", err)
		}
	}
	return nil
}

// IgnoredBy implements storage.Database. It reads everyone who ignores sender (the
// primary key's prefix; few users ignore any one sender) rather than passing userIDs, a
// room's members, as a list.
func (d *Database) IgnoredBy(ctx context.Context, tx *sql.Tx, sender string, userIDs []string) (map[string]bool, error) {
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, `SELECT user_id FROM pushserver_ignored_users WHERE ignored_user_id = $1`, sender)
	if err != nil {
		return nil, fmt.Errorf("select ignoring users: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	ignoring := map[string]bool{}
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return nil, fmt.Errorf("scan ignoring user: %w", err)
		}
		ignoring[userID] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, u := range userIDs {
		if ignoring[u] {
			out[u] = true
		}
	}
	return out, nil
}

// Notifications implements storage.Database.
func (d *Database) Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]storage.Notification, error) {
	args := []any{userID, limit}
	if before > 0 {
		args = append(args, before)
	}
	query := notificationsSQL(before > 0, onlyHighlight)
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select notifications: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Notification
	for rows.Next() {
		n := storage.Notification{UserID: userID}
		var actions string
		if err := rows.Scan(&n.Pos, &n.RoomID, &n.EventID, &n.ThreadID, &actions, &n.Highlight, &n.TS, &n.Read); err != nil {
			return nil, fmt.Errorf("scan notification: %w", err)
		}
		n.ID = n.Pos
		n.Actions = expandActions(actions)
		out = append(out, n)
	}
	return out, rows.Err()
}

// notificationsSQL is the statement of Notifications, whose parameters are the user ID,
// the limit and, when before, the position to list from. The page is picked first,
// newest first from pushserver_notifications_user (or _highlights), and then its events'
// IDs and timestamps, and its rooms' IDs, are looked up by their primary keys: as one
// join, SQLite carried the position bound over to pushserver_events and read every event
// below it.
func notificationsSQL(before, onlyHighlight bool) string {
	page := `SELECT pos, room_nid, thread_id, actions, highlight, is_read FROM pushserver_notifications
		WHERE user_nid = (SELECT nid FROM pushserver_nids WHERE id = $1)`
	if before {
		page += " AND pos < $3"
	}
	if onlyHighlight {
		page += " AND highlight"
	}
	return `SELECT n.pos, r.id, e.event_id, n.thread_id, n.actions, n.highlight, e.ts, n.is_read FROM (` + page +
		` ORDER BY pos DESC LIMIT $2) n JOIN pushserver_events e ON e.pos = n.pos JOIN pushserver_nids r ON r.nid = n.room_nid
		ORDER BY n.pos DESC`
}
