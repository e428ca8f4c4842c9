package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// Database is the SQL sync API store.
type Database struct {
	db      *sqlutil.DB
	offsets *eventlog.OffsetStore
	// pos hands out stream positions on PostgreSQL (nil on SQLite).
	pos *positions
}

// Open migrates the schema and returns the store. offsets keeps the consumers' positions in
// the same database, so they commit with what they account for.
func Open(ctx context.Context, db *sqlutil.DB, offsets *eventlog.OffsetStore) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "syncapi", migrations); err != nil {
		return nil, fmt.Errorf("migrate syncapi schema: %w", err)
	}
	d := &Database{db: db, offsets: offsets}
	if db.Engine() == sqlutil.Postgres {
		var err error
		if d.pos, err = loadPositions(ctx, db.DB); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// NextOffset implements storage.Database.
func (d *Database) NextOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	return d.offsets.Next(ctx, topic, partition)
}

// MaxPosition implements storage.Database.
func (d *Database) MaxPosition(ctx context.Context) (int64, error) {
	if d.pos != nil {
		return d.pos.current(), nil
	}
	var pos int64
	err := d.db.QueryRowContext(ctx, "SELECT position FROM syncapi_stream_position WHERE id = 1").Scan(&pos)
	return pos, err
}

// JoinedOrInvited implements storage.Database.
func (d *Database) JoinedOrInvited(ctx context.Context) (map[string][]string, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT room_id, state_key FROM syncapi_current_state WHERE type = $1 AND membership IN ($2, $3)",
		spec.MRoomMember, spec.Join, spec.Invite)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var roomID, userID string
		if err := rows.Scan(&roomID, &userID); err != nil {
			return nil, err
		}
		out[roomID] = append(out[roomID], userID)
	}
	return out, rows.Err()
}

const stateColumns = "room_id, type, state_key, event_id, position, membership, event_json"

func scanState(rows *sql.Rows) ([]storage.StateEvent, error) {
	defer rows.Close()
	var out []storage.StateEvent
	for rows.Next() {
		var s storage.StateEvent
		var js string
		if err := rows.Scan(&s.RoomID, &s.Type, &s.StateKey, &s.EventID, &s.Position, &s.Membership, &js); err != nil {
			return nil, err
		}
		s.JSON = []byte(js)
		out = append(out, s)
	}
	return out, rows.Err()
}

// MembershipsForUser implements storage.Database.
func (d *Database) MembershipsForUser(ctx context.Context, userID string) ([]storage.StateEvent, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+stateColumns+" FROM syncapi_current_state WHERE state_key = $1 AND type = $2", userID, spec.MRoomMember)
	if err != nil {
		return nil, err
	}
	return scanState(rows)
}

// CurrentState implements storage.Database.
func (d *Database) CurrentState(ctx context.Context, roomIDs []string) (map[string][]storage.StateEvent, error) {
	out := make(map[string][]storage.StateEvent, len(roomIDs))
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		q, args := d.db.Dialect.InList("SELECT "+stateColumns+" FROM syncapi_current_state WHERE room_id IN ({rooms})", "{rooms}", nil, chunk)
		rows, err := d.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		state, err := scanState(rows)
		if err != nil {
			return nil, err
		}
		for _, s := range state {
			out[s.RoomID] = append(out[s.RoomID], s)
		}
	}
	return out, nil
}

// MembershipHistory implements storage.Database.
func (d *Database) MembershipHistory(ctx context.Context, userID string, upTo int64) (storage.Memberships, error) {
	changes, err := d.MembershipChanges(ctx, userID, math.MinInt64, upTo)
	if err != nil {
		return storage.Memberships{}, err
	}
	return storage.NewMemberships(changes), nil
}

// MembershipChanges implements storage.Database.
func (d *Database) MembershipChanges(ctx context.Context, userID string, after, upTo int64) ([]storage.MemberChange, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, membership, event_id, position FROM syncapi_memberships
		WHERE user_id = $1 AND position > $2 AND position <= $3 ORDER BY position`, userID, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.MemberChange
	for rows.Next() {
		m := storage.MemberChange{UserID: userID}
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.Position); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RoomsWithEvents implements storage.Database. It scans the position range: incremental
// syncs cover short ranges, and the caller picks the user's rooms from the answer in memory,
// so no room list of the user's is sent (users can be in more rooms than an engine accepts
// parameters).
func (d *Database) RoomsWithEvents(ctx context.Context, after, upTo int64) ([]string, error) {
	return d.roomIDs(ctx, "SELECT DISTINCT room_id FROM syncapi_events WHERE position > $1 AND position <= $2", after, upTo)
}

const eventColumns = `position, room_id, event_id, type, sender, state_key, event_json, history_visibility,
	replaces_event_id, txn_user_id, txn_device_id, txn_id, room_version`

func scanEvents(rows *sql.Rows) ([]storage.Event, error) {
	defer rows.Close()
	var out []storage.Event
	for rows.Next() {
		var e storage.Event
		var sk sql.NullString
		var js string
		err := rows.Scan(&e.Position, &e.RoomID, &e.EventID, &e.Type, &e.Sender, &sk, &js, &e.HistoryVisibility,
			&e.Replaces, &e.Txn.UserID, &e.Txn.DeviceID, &e.Txn.TxnID, &e.RoomVersion)
		if err != nil {
			return nil, err
		}
		if sk.Valid {
			e.StateKey = &sk.String
		}
		e.JSON = []byte(js)
		out = append(out, e)
	}
	return out, rows.Err()
}

// RoomEvents implements storage.Database.
func (d *Database) RoomEvents(ctx context.Context, roomID string, r storage.Range) ([]storage.Event, error) {
	order := "ASC"
	if r.Backward {
		order = "DESC"
	}
	rows, err := d.db.QueryContext(ctx, "SELECT "+eventColumns+` FROM syncapi_events
		WHERE room_id = $1 AND position > $2 AND position <= $3 ORDER BY position `+order+" LIMIT $4", roomID, r.After, r.UpTo, r.Limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// StateEventsAfter implements storage.Database.
func (d *Database) StateEventsAfter(ctx context.Context, roomID string, after int64) ([]storage.Event, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+eventColumns+` FROM syncapi_events
		WHERE room_id = $1 AND position > $2 AND state_key IS NOT NULL ORDER BY position DESC`, roomID, after)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// EventsByID implements storage.Database.
func (d *Database) EventsByID(ctx context.Context, ids []string) ([]storage.Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q, args := d.db.Dialect.InList("SELECT "+eventColumns+" FROM syncapi_events WHERE event_id IN ({ids})", "{ids}", nil, ids)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// GlobalAccountData implements storage.Database.
func (d *Database) GlobalAccountData(ctx context.Context, userID, dataType string) ([]byte, error) {
	var content string
	err := d.db.QueryRowContext(ctx, `SELECT content FROM syncapi_account_data WHERE user_id = $1 AND room_id = '' AND type = $2`,
		userID, dataType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []byte(content), nil
}

// AccountData implements storage.Database.
func (d *Database) AccountData(ctx context.Context, userID string, after, upTo int64) ([]storage.AccountData, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, type, content, position FROM syncapi_account_data
		WHERE user_id = $1 AND position > $2 AND position <= $3 ORDER BY position`, userID, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.AccountData
	for rows.Next() {
		var a storage.AccountData
		var content string
		if err := rows.Scan(&a.RoomID, &a.Type, &content, &a.Position); err != nil {
			return nil, err
		}
		a.Content = []byte(content)
		out = append(out, a)
	}
	return out, rows.Err()
}
