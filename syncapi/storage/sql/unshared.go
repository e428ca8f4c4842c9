package sql

import (
	"context"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// UnsharedRemoteUsers implements storage.Database.
func (d *Database) UnsharedRemoteUsers(ctx context.Context, serverName string, changes []storage.MemberChange) ([]string, error) {
	local := func(userID string) bool { return strings.HasSuffix(userID, ":"+serverName) }
	var candidates, roomsLeft []string
	for _, c := range changes {
		switch {
		case !local(c.UserID) && c.Membership != spec.Join:
			candidates = append(candidates, c.UserID)
		case local(c.UserID) && (c.Membership == spec.Leave || c.Membership == spec.Ban):
			roomsLeft = append(roomsLeft, c.RoomID)
		}
	}
	if len(roomsLeft) > 0 {
		q, args := d.db.Dialect.InList("SELECT state_key FROM syncapi_current_state WHERE type = 'm.room.member' AND membership = 'join' AND room_id IN ({ids})",
			"{ids}", nil, uniq(roomsLeft))
		members, err := d.strings(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("load members of rooms a local user left: %w", err)
		}
		for _, u := range members {
			if !local(u) {
				candidates = append(candidates, u)
			}
		}
	}
	candidates = uniq(candidates)
	sharing := map[string]bool{}
	pattern := "%:" + likeEscaper.Replace(serverName)
	for rest := candidates; len(rest) > 0; {
		batch := rest[:min(len(rest), sharingARoomBatch)]
		rest = rest[len(batch):]
		// Driven by the candidates' memberships, each room checked for a local member.
		q, args := d.db.Dialect.InList(`SELECT DISTINCT o.state_key FROM syncapi_current_state o
			WHERE o.type = 'm.room.member' AND o.membership = 'join' AND o.state_key IN ({ids})
			AND EXISTS (SELECT 1 FROM syncapi_current_state m WHERE m.room_id = o.room_id
				AND m.type = 'm.room.member' AND m.membership = 'join' AND m.state_key LIKE $1 ESCAPE '\')`, "{ids}", []any{pattern}, batch)
		found, err := d.strings(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("load remote users sharing a room with a local user: %w", err)
		}
		for _, u := range found {
			sharing[u] = true
		}
	}
	var out []string
	for _, u := range candidates {
		if !sharing[u] {
			out = append(out, u)
		}
	}
	return out, nil
}

// likeEscaper escapes LIKE's wildcards (with ESCAPE '\').
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
