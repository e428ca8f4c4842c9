package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// WriteKeyChanges implements storage.Database.
func (d *Database) WriteKeyChanges(ctx context.Context, changes []storage.KeyChange, dead []storage.DeadLetter, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamKeyChanges, dead, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, c := range changes {
			if c.NotifyOnly != "" {
				if err := writePrivateKeyChange(ctx, tx, applied, c); err != nil {
					return err
				}
				continue
			}
			var old int64
			err := tx.QueryRowContext(ctx, "SELECT stream_id FROM syncapi_key_changes WHERE user_id = $1", c.UserID).Scan(&old)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil && c.StreamID <= old {
				continue
			}
			err = storeAtNextPosition(ctx, tx, applied, "key change", `INSERT INTO syncapi_key_changes (user_id, stream_id, position)
				VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET stream_id = $2, position = $3`, c.UserID, c.StreamID)
			if err != nil {
				return err
			}
			applied.KeyUsers = append(applied.KeyUsers, c.UserID)
		}
		return nil
	})
}

// writePrivateKeyChange records a change only c.NotifyOnly is told of, once per stream ID.
func writePrivateKeyChange(ctx context.Context, tx *sql.Tx, applied *storage.Applied, c storage.KeyChange) error {
	var old int64
	err := tx.QueryRowContext(ctx, "SELECT stream_id FROM syncapi_private_key_changes WHERE notify_user_id = $1 AND user_id = $2",
		c.NotifyOnly, c.UserID).Scan(&old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if err == nil && c.StreamID <= old {
		return nil
	}
	err = storeAtNextPosition(ctx, tx, applied, "private key change", `INSERT INTO syncapi_private_key_changes (notify_user_id, user_id, stream_id, position)
		VALUES ($1, $2, $3, $4) ON CONFLICT (notify_user_id, user_id) DO UPDATE SET stream_id = $3, position = $4`, c.NotifyOnly, c.UserID, c.StreamID)
	if err != nil {
		return err
	}
	applied.Users = append(applied.Users, c.NotifyOnly)
	return nil
}

// sharedRoomsSQL lists the users joined to a room userID ($1) is joined to, with the room.
const sharedRoomsSQL = `SELECT o.room_id, o.state_key FROM syncapi_current_state o JOIN syncapi_current_state m ON o.room_id = m.room_id
	WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join' AND o.type = 'm.room.member' AND o.membership = 'join'`

// DeviceListChanges implements storage.Database. It reads the current state once for the
// user's room-mates, then the key changes and the membership changes of the user's rooms
// in the range.
func (d *Database) DeviceListChanges(ctx context.Context, userID string, after, upTo int64) (*storage.DeviceLists, error) {
	mates, myRooms, err := d.roomMates(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("load room-mates: %w", err)
	}
	changed := map[string]bool{}
	left := map[string]bool{}
	keyUsers, err := d.strings(ctx, "SELECT user_id FROM syncapi_key_changes WHERE position > $1 AND position <= $2", after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load key changes: %w", err)
	}
	for _, u := range keyUsers {
		if mates[u] {
			changed[u] = true
		}
	}
	private, err := d.strings(ctx, "SELECT user_id FROM syncapi_private_key_changes WHERE notify_user_id = $1 AND position > $2 AND position <= $3",
		userID, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load private key changes: %w", err)
	}
	for _, u := range private {
		changed[u] = true
	}
	// The rooms whose membership changes matter: those the user is joined to, and those
	// they left in the range (whose members they may no longer share a room with).
	rows, err := d.db.QueryContext(ctx, "SELECT room_id, user_id, membership FROM syncapi_memberships WHERE position > $1 AND position <= $2 ORDER BY position",
		after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load membership changes: %w", err)
	}
	type change struct{ room, user, membership string }
	var all []change
	for rows.Next() {
		var c change
		if err = rows.Scan(&c.room, &c.user, &c.membership); err != nil {
			_ = rows.Close() // the scan error is the one to report
			return nil, err
		}
		all = append(all, c)
	}
	if err = rows.Close(); err != nil {
		return nil, err
	}
	var roomsLeft []string
	for _, c := range all {
		if c.user == userID {
			if c.membership == spec.Join && myRooms[c.room] != nil {
				for u := range myRooms[c.room] {
					changed[u] = true
				}
			}
			if c.membership == spec.Leave || c.membership == spec.Ban {
				roomsLeft = append(roomsLeft, c.room)
			}
			continue
		}
		switch {
		case c.membership == spec.Join && myRooms[c.room] != nil && mates[c.user]:
			changed[c.user] = true
		case (c.membership == spec.Invite || c.membership == spec.Knock) && myRooms[c.room] != nil:
			// Clients encrypt to invited members too, so they need their devices (Synapse
			// lists them the same way).
			changed[c.user] = true
		case (c.membership == spec.Leave || c.membership == spec.Ban) && !mates[c.user] && (myRooms[c.room] != nil || contains(roomsLeft, c.room)):
			left[c.user] = true
		}
	}
	if len(roomsLeft) > 0 {
		q, args := d.db.Dialect.InList("SELECT state_key FROM syncapi_current_state WHERE type = 'm.room.member' AND membership = 'join' AND room_id IN ({ids})",
			"{ids}", nil, roomsLeft)
		members, err := d.strings(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("load members of rooms left: %w", err)
		}
		for _, u := range members {
			if !mates[u] {
				left[u] = true
			}
		}
	}
	for u := range left {
		delete(changed, u)
	}
	delete(left, userID)
	return &storage.DeviceLists{Changed: sortedKeys(changed), Left: sortedKeys(left)}, nil
}

// roomMates is every user sharing a joined room with userID, userID included, and per
// room userID is joined to, its joined members.
func (d *Database) roomMates(ctx context.Context, userID string) (map[string]bool, map[string]map[string]bool, error) {
	rows, err := d.db.QueryContext(ctx, sharedRoomsSQL, userID)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	mates := map[string]bool{userID: true}
	rooms := map[string]map[string]bool{}
	for rows.Next() {
		var room, u string
		if err := rows.Scan(&room, &u); err != nil {
			return nil, nil, err
		}
		mates[u] = true
		if rooms[room] == nil {
			rooms[room] = map[string]bool{}
		}
		rooms[room][u] = true
	}
	return mates, rooms, rows.Err()
}

// strings runs a query of one text column.
func (d *Database) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
