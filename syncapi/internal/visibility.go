package internal

import (
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

// canSee applies the history visibility in force before ev to userID, whose membership
// history in the room is h and whose membership now is current. A user always sees their
// own membership events.
func canSee(ev *storage.Event, userID string, h memberHistory, current string) bool {
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && *ev.StateKey == userID {
		return true
	}
	m := h.at(ev.Position)
	switch ev.HistoryVisibility {
	case visWorldReadable:
		return true
	case visJoined:
		return m == spec.Join
	case visInvited:
		return m == spec.Join || m == spec.Invite
	default: // shared, and the spec's default when unset
		return m == spec.Join || current == spec.Join
	}
}
