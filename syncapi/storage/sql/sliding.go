package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// migrateSliding adds what simplified sliding sync (MSC4186) reads: each room's latest
// event and latest "bump" event, kept up to date by writeRoomEvent and filled here from the
// events already stored, so that ordering a user's rooms costs one row per room however
// long their histories are; and the per-connection state behind each pos token.
const migrateSliding = `
CREATE TABLE IF NOT EXISTS syncapi_room_activity (
	room_id TEXT PRIMARY KEY,
	last_position {bigint} NOT NULL,
	bump_position {bigint} NOT NULL
);
INSERT INTO syncapi_room_activity (room_id, last_position, bump_position)
	SELECT room_id, MAX(position), COALESCE(MAX(CASE WHEN type IN ({bump_types}) THEN position END), 0)
	FROM syncapi_events WHERE position > 0 GROUP BY room_id
	ON CONFLICT (room_id) DO NOTHING;
CREATE TABLE IF NOT EXISTS syncapi_sliding_positions (
	pos_id {serial},
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	conn_id TEXT NOT NULL,
	position {bigint} NOT NULL,
	state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS syncapi_sliding_positions_conn ON syncapi_sliding_positions (user_id, device_id, conn_id, pos_id);
`

// slidingMigrationSQL is migrateSliding with the bump types spelled out as SQL literals
// (they are constants without quotes).
func slidingMigrationSQL() string {
	quoted := make([]string, len(storage.BumpEventTypes))
	for i, t := range storage.BumpEventTypes {
		quoted[i] = "'" + t + "'"
	}
	return strings.Replace(migrateSliding, "{bump_types}", strings.Join(quoted, ", "), 1)
}

// isBumpType reports whether events of evType move a room's bump stamp.
func isBumpType(evType string) bool {
	for _, t := range storage.BumpEventTypes {
		if t == evType {
			return true
		}
	}
	return false
}

// noteActivity records that the room got an event at pos (of a bump type when bump).
func noteActivity(ctx context.Context, tx *sql.Tx, roomID string, pos int64, bump bool) error {
	bumpPos := int64(0)
	if bump {
		bumpPos = pos
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_room_activity (room_id, last_position, bump_position) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO UPDATE SET last_position = excluded.last_position,
		bump_position = CASE WHEN excluded.bump_position > 0 THEN excluded.bump_position ELSE syncapi_room_activity.bump_position END`,
		roomID, pos, bumpPos)
	return err
}

// ActivitySince implements storage.Database, through the index on last_position.
func (d *Database) ActivitySince(ctx context.Context, after int64) (map[string]storage.RoomActivity, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT room_id, last_position, bump_position FROM syncapi_room_activity WHERE last_position > $1", after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]storage.RoomActivity{}
	for rows.Next() {
		var roomID string
		var a storage.RoomActivity
		if err = rows.Scan(&roomID, &a.Last, &a.Bump); err != nil {
			return nil, err
		}
		out[roomID] = a
	}
	return out, rows.Err()
}

// StateRemovals implements storage.Database.
func (d *Database) StateRemovals(ctx context.Context, roomID string, after, upTo int64) ([]storage.StateKeyTuple, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT type, state_key FROM syncapi_state_removals
		WHERE room_id = $1 AND position > $2 AND position <= $3 ORDER BY position`, roomID, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.StateKeyTuple
	for rows.Next() {
		var k storage.StateKeyTuple
		if err = rows.Scan(&k.Type, &k.StateKey); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// StateOfTypes implements storage.Database.
func (d *Database) StateOfTypes(ctx context.Context, roomIDs, types []string) (map[string][]storage.StateEvent, error) {
	out := make(map[string][]storage.StateEvent, len(roomIDs))
	if len(types) == 0 {
		return out, nil
	}
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		q, args := d.db.Dialect.InList("SELECT "+stateColumns+" FROM syncapi_current_state WHERE type IN ({types})", "{types}", nil, types)
		q, args = d.db.Dialect.InList(q+" AND room_id IN ({rooms})", "{rooms}", args, chunk)
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

// SaveSlidingPos implements storage.Database.
func (d *Database) SaveSlidingPos(ctx context.Context, p *storage.SlidingPos) (int64, error) {
	var id int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO syncapi_sliding_positions (user_id, device_id, conn_id, position, state)
			VALUES ($1, $2, $3, $4, $5) RETURNING pos_id`, p.UserID, p.DeviceID, p.ConnID, p.Position, string(p.State)).Scan(&id)
		if err != nil {
			return err
		}
		// A device keeps at most storage.MaxSlidingConnections connections: the ones used
		// least recently are forgotten (their pos answers M_UNKNOWN_POS).
		_, err = tx.ExecContext(ctx, `DELETE FROM syncapi_sliding_positions WHERE user_id = $1 AND device_id = $2 AND conn_id IN (
			SELECT conn_id FROM syncapi_sliding_positions WHERE user_id = $1 AND device_id = $2
			GROUP BY conn_id ORDER BY MAX(pos_id) DESC LIMIT 1000000 OFFSET $3)`, p.UserID, p.DeviceID, storage.MaxSlidingConnections)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("save sliding sync position: %w", err)
	}
	return id, nil
}

// SlidingPos implements storage.Database.
func (d *Database) SlidingPos(ctx context.Context, id int64) (*storage.SlidingPos, error) {
	p := &storage.SlidingPos{ID: id}
	var state string
	err := d.db.QueryRowContext(ctx, "SELECT user_id, device_id, conn_id, position, state FROM syncapi_sliding_positions WHERE pos_id = $1", id).
		Scan(&p.UserID, &p.DeviceID, &p.ConnID, &p.Position, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	p.State = []byte(state)
	return p, nil
}

// PruneSlidingPos implements storage.Database.
func (d *Database) PruneSlidingPos(ctx context.Context, userID, deviceID, connID string, below int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM syncapi_sliding_positions WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos_id < $4",
			userID, deviceID, connID, below)
		return err
	})
}
