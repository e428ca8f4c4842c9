package internal

import (
	"encoding/json"
	"math"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// History visibility values (m.room.history_visibility).
const (
	visWorldReadable = "world_readable"
	visShared        = "shared"
	visInvited       = "invited"
	visJoined        = "joined"
)

// memberHistory is one user's membership changes in one room, oldest first.
type memberHistory []storage.MemberChange

// at is the user's membership once the event at pos applied ("" before any).
func (h memberHistory) at(pos int64) string {
	i := sort.Search(len(h), func(i int) bool { return h[i].Position > pos })
	if i == 0 {
		return ""
	}
	return h[i-1].Membership
}

// joinedIn reports whether the user joined in (after, upTo].
func (h memberHistory) joinedIn(after, upTo int64) bool {
	for _, c := range h {
		if c.Position > after && c.Position <= upTo && c.Membership == spec.Join {
			return true
		}
	}
	return false
}

// latest is the last membership change, or a zero change when there was none.
func (h memberHistory) latest() storage.MemberChange {
	if len(h) == 0 {
		return storage.MemberChange{}
	}
	return h[len(h)-1]
}

// changedRooms is the membership history, whole, of each room where the user's membership
// changed after since.
func changedRooms(m storage.Memberships, since int64) map[string]memberHistory {
	out := map[string]memberHistory{}
	for _, c := range m.After(since) {
		if _, ok := out[c.RoomID]; !ok {
			out[c.RoomID] = m.Room(c.RoomID)
		}
	}
	return out
}

// byRoom splits a user's membership history per room.
func byRoom(changes []storage.MemberChange) map[string]memberHistory {
	out := map[string]memberHistory{}
	for _, c := range changes {
		out[c.RoomID] = append(out[c.RoomID], c)
	}
	return out
}

// canSee applies the client-server spec's history visibility rules (Room History
// Visibility, Server behaviour) to userID, whose membership history in the room is h and
// whose membership now is current, by the visibility in force before ev and, for a history
// visibility change, after it too ("the user should be allowed to see the event if the
// history_visibility before or after the event would allow them to see it"). A user always
// sees their own membership events.
func canSee(ev *storage.Event, userID string, h memberHistory, current string) bool {
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && *ev.StateKey == userID {
		return true
	}
	m := h.at(ev.Position)
	// "shared, and the user joined the room at any point after the event was sent": a
	// user joined now did, whenever they joined.
	joinedSince := current == spec.Join || h.joinedIn(ev.Position, math.MaxInt64)
	if visibleUnder(ev.HistoryVisibility, m, joinedSince) {
		return true
	}
	if ev.Type == spec.MRoomHistoryVisibility && ev.StateKey != nil && *ev.StateKey == "" {
		var after struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &after) == nil {
			return visibleUnder(after.Content.HistoryVisibility, m, joinedSince)
		}
	}
	return false
}

// visibleUnder applies one history visibility to a user whose membership at the event was
// m and who joined the room after it (or is joined now) when joinedSince.
func visibleUnder(visibility, m string, joinedSince bool) bool {
	switch visibility {
	case visWorldReadable:
		return true
	case visJoined:
		return m == spec.Join
	case visInvited:
		return m == spec.Join || m == spec.Invite
	default: // shared, and the spec's default when unset or not understood
		return m == spec.Join || joinedSince
	}
}
