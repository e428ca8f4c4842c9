package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// WriteKeyChanges implements storage.Database.
func (d *Database) WriteKeyChanges(ctx context.Context, changes []storage.KeyChange, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamKeyChanges, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, c := range changes {
			if c.NotifyOnly != "" {
				if err := d.writePrivateKeyChange(ctx, tx, applied, c); err != nil {
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
			err = d.storeAtNextPosition(ctx, tx, applied, "key change", `INSERT INTO syncapi_key_changes (user_id, stream_id, position)
				VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET stream_id = $2, position = $3`, c.UserID, c.StreamID)
			if err != nil {
				return err
			}
			applied.KeyUsers = append(applied.KeyUsers, c.UserID)
			if c.DeletedDevice == "" {
				continue
			}
			if _, err = tx.ExecContext(ctx, "DELETE FROM syncapi_sliding_positions WHERE user_id = $1 AND device_id = $2", c.UserID, c.DeletedDevice); err != nil {
				return fmt.Errorf("forget sliding sync connections of a deleted device: %w", err)
			}
		}
		return nil
	})
}

// writePrivateKeyChange records a change only c.NotifyOnly is told of, once per stream ID.
func (d *Database) writePrivateKeyChange(ctx context.Context, tx *sql.Tx, applied *storage.Applied, c storage.KeyChange) error {
	var old int64
	err := tx.QueryRowContext(ctx, "SELECT stream_id FROM syncapi_private_key_changes WHERE notify_user_id = $1 AND user_id = $2",
		c.NotifyOnly, c.UserID).Scan(&old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if err == nil && c.StreamID <= old {
		return nil
	}
	err = d.storeAtNextPosition(ctx, tx, applied, "private key change", `INSERT INTO syncapi_private_key_changes (notify_user_id, user_id, stream_id, position)
		VALUES ($1, $2, $3, $4) ON CONFLICT (notify_user_id, user_id) DO UPDATE SET stream_id = $3, position = $4`, c.NotifyOnly, c.UserID, c.StreamID)
	if err != nil {
		return err
	}
	applied.Users = append(applied.Users, c.NotifyOnly)
	return nil
}

// DeviceListChanges implements storage.Database. It reads the key changes and membership
// changes in the range first, and then only what they name: which of their users share a
// joined room with userID, which of their rooms userID is joined to, and the members of the
// rooms userID joined or left in the range. So its cost follows the changes, not the number
// of rooms the user is in (a sync with no such change reads two empty ranges).
func (d *Database) DeviceListChanges(ctx context.Context, userID string, after, upTo int64) (*storage.DeviceLists, error) {
	keyUsers, err := d.strings(ctx, "SELECT user_id FROM syncapi_key_changes WHERE position > $1 AND position <= $2", after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load key changes: %w", err)
	}
	// Changes only this user is told of (their own user-signing key, their signatures on
	// others' master keys).
	private, err := d.strings(ctx, "SELECT user_id FROM syncapi_private_key_changes WHERE notify_user_id = $1 AND position > $2 AND position <= $3",
		userID, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load private key changes: %w", err)
	}
	changes, err := d.memberChangesBetween(ctx, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("load membership changes: %w", err)
	}
	if len(keyUsers) == 0 && len(private) == 0 && len(changes) == 0 {
		return &storage.DeviceLists{}, nil
	}
	var changeRooms []string
	for _, c := range changes {
		changeRooms = append(changeRooms, c.room)
	}
	q, args := d.db.Dialect.InList("SELECT room_id FROM syncapi_current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join' AND room_id IN ({ids})",
		"{ids}", []any{userID}, uniq(changeRooms))
	joinedList, err := d.strings(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("load the user's rooms among those changed: %w", err)
	}
	joined := setOf(joinedList)
	// The rooms whose whole membership matters: those the user joined (all their members
	// changed for them) and those they left (members they no longer share a room with left).
	var joinedNow, roomsLeft []string
	for _, c := range changes {
		if c.user != userID {
			continue
		}
		if c.membership == spec.Join && joined[c.room] {
			joinedNow = append(joinedNow, c.room)
		}
		if c.membership == spec.Leave || c.membership == spec.Ban {
			roomsLeft = append(roomsLeft, c.room)
		}
	}
	members := map[string][]string{}
	if rooms := uniq(append(slices.Clone(joinedNow), roomsLeft...)); len(rooms) > 0 {
		q, args := d.db.Dialect.InList("SELECT room_id, state_key FROM syncapi_current_state WHERE type = 'm.room.member' AND membership = 'join' AND room_id IN ({ids})",
			"{ids}", nil, rooms)
		if err := d.pairs(ctx, q, args, func(room, user string) { members[room] = append(members[room], user) }); err != nil {
			return nil, fmt.Errorf("load members of rooms joined or left: %w", err)
		}
	}
	candidates := slices.Clone(keyUsers)
	for _, c := range changes {
		candidates = append(candidates, c.user)
	}
	for _, r := range roomsLeft {
		candidates = append(candidates, members[r]...)
	}
	candidates = slices.DeleteFunc(uniq(candidates), func(u string) bool { return u == userID })
	mates, err := d.sharingARoom(ctx, userID, candidates)
	if err != nil {
		return nil, fmt.Errorf("load room-mates: %w", err)
	}
	changed := map[string]bool{}
	left := map[string]bool{}
	for _, u := range keyUsers {
		if mates[u] {
			changed[u] = true
		}
	}
	for _, u := range private {
		changed[u] = true
	}
	for _, r := range joinedNow {
		for _, u := range members[r] {
			changed[u] = true
		}
	}
	for _, c := range changes {
		switch {
		case c.user == userID:
		case c.membership == spec.Join && joined[c.room] && mates[c.user]:
			changed[c.user] = true
		case (c.membership == spec.Invite || c.membership == spec.Knock) && joined[c.room]:
			// Clients encrypt to invited members too, so they need their devices (Synapse
			// lists them the same way).
			changed[c.user] = true
		case (c.membership == spec.Leave || c.membership == spec.Ban) && !mates[c.user] && (joined[c.room] || slices.Contains(roomsLeft, c.room)):
			left[c.user] = true
		}
	}
	for _, r := range roomsLeft {
		for _, u := range members[r] {
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

// memberChange is one membership change of the syncapi_memberships log.
type memberChange struct{ room, user, membership string }

// memberChangesBetween lists the membership changes in (after, upTo], in order.
func (d *Database) memberChangesBetween(ctx context.Context, after, upTo int64) ([]memberChange, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT room_id, user_id, membership FROM syncapi_memberships WHERE position > $1 AND position <= $2 ORDER BY position",
		after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []memberChange
	for rows.Next() {
		var c memberChange
		if err := rows.Scan(&c.room, &c.user, &c.membership); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// sharingARoomBatch bounds the users of one sharingARoom query (SQLite's parameter limit).
const sharingARoomBatch = 500

// fewRooms is the number of joined rooms up to which sharingARoom starts from the user's
// rooms rather than from the candidates' memberships.
const fewRooms = 8

// sharingARoom returns which of users share a joined room with userID now; userID itself
// is always in the set. Either side can be the large one: a user in hundreds of rooms
// asking about a few candidates, or (device-list fan-out) hundreds of room-mates in a
// room or two each, all asking about one candidate in hundreds of rooms. So it reads up to
// fewRooms+1 of the user's rooms first: with at most fewRooms it looks the candidates up
// in those rooms by primary key (rooms x candidates lookups); otherwise it starts from
// the candidates' memberships, each checked against the user's membership of that room.
func (d *Database) sharingARoom(ctx context.Context, userID string, users []string) (map[string]bool, error) {
	out := map[string]bool{userID: true}
	if len(users) == 0 {
		return out, nil
	}
	rooms, err := d.strings(ctx, "SELECT room_id FROM syncapi_current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join' LIMIT $2",
		userID, fewRooms+1)
	if err != nil || len(rooms) == 0 {
		return out, err
	}
	for len(users) > 0 {
		batch := users[:min(len(users), sharingARoomBatch)]
		users = users[len(batch):]
		var q string
		var args []any
		if len(rooms) <= fewRooms {
			q, args = d.db.Dialect.InList(`SELECT DISTINCT state_key FROM syncapi_current_state
				WHERE room_id IN ({rooms}) AND type = 'm.room.member' AND state_key IN ({ids}) AND membership = 'join'`, "{rooms}", nil, rooms)
			q, args = d.db.Dialect.InList(q, "{ids}", args, batch)
		} else {
			q, args = d.db.Dialect.InList(`SELECT DISTINCT o.state_key FROM syncapi_current_state o
				WHERE o.type = 'm.room.member' AND o.membership = 'join' AND o.state_key IN ({ids})
				AND EXISTS (SELECT 1 FROM syncapi_current_state m WHERE m.room_id = o.room_id
					AND m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join')`, "{ids}", []any{userID}, batch)
		}
		found, err := d.strings(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for _, u := range found {
			out[u] = true
		}
	}
	return out, nil
}

// pairs runs a query of two text columns.
func (d *Database) pairs(ctx context.Context, query string, args []any, each func(a, b string)) error {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		each(a, b)
	}
	return rows.Err()
}

func setOf(list []string) map[string]bool {
	out := make(map[string]bool, len(list))
	for _, s := range list {
		out[s] = true
	}
	return out
}

// uniq returns list sorted without repeats.
func uniq(list []string) []string {
	slices.Sort(list)
	return slices.Compact(list)
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

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
