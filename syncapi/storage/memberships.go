package storage

import (
	"sort"
	"sync"
)

// Memberships is a user's membership history up to a position, oldest first, indexed by
// room: a sync finds the changes of one room, or those after a position, in time that
// does not grow with the number of rooms the user was ever in.
type Memberships struct {
	// changes are the user's changes up to the position asked; they are a prefix of
	// log.changes, which only grows.
	changes []MemberChange
	log     *memberLog
}

// memberLog is a user's membership changes and, per room, the indexes of that room's
// changes among them. Appends happen under mu; a reader takes a room's index list under mu
// and keeps only the indexes below its own length, so appends never touch what it reads.
type memberLog struct {
	mu      sync.RWMutex
	changes []MemberChange
	rooms   map[string][]int
}

func newMemberLog() *memberLog {
	return &memberLog{rooms: map[string][]int{}}
}

// add appends changes, newer than every change held; l.mu must be held for writing.
func (l *memberLog) add(changes []MemberChange) {
	for _, c := range changes {
		l.rooms[c.RoomID] = append(l.rooms[c.RoomID], len(l.changes))
		l.changes = append(l.changes, c)
	}
}

// upTo is the history up to position pos; l.mu must be held.
func (l *memberLog) upTo(pos int64) Memberships {
	n := sort.Search(len(l.changes), func(i int) bool { return l.changes[i].Position > pos })
	return Memberships{changes: l.changes[:n:n], log: l}
}

// NewMemberships indexes changes, oldest first.
func NewMemberships(changes []MemberChange) Memberships {
	l := newMemberLog()
	l.add(changes)
	return Memberships{changes: l.changes, log: l}
}

// All is every change, oldest first. The caller must not modify it.
func (m Memberships) All() []MemberChange {
	return m.changes
}

// After is the changes after position pos, oldest first. The caller must not modify it.
func (m Memberships) After(pos int64) []MemberChange {
	i := sort.Search(len(m.changes), func(i int) bool { return m.changes[i].Position > pos })
	return m.changes[i:]
}

// Room is the changes in roomID, oldest first, or nil when the user was never in it.
func (m Memberships) Room(roomID string) []MemberChange {
	if m.log == nil {
		return nil
	}
	m.log.mu.RLock()
	idx := m.log.rooms[roomID]
	m.log.mu.RUnlock()
	n := sort.SearchInts(idx, len(m.changes))
	if n == 0 {
		return nil
	}
	out := make([]MemberChange, n)
	for i, j := range idx[:n] {
		out[i] = m.changes[j]
	}
	return out
}
