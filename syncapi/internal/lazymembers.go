package internal

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
)

// lazyKey names the members one device was sent in one room.
type lazyKey struct{ userID, deviceID, roomID string }

// sentMember is a membership event a sync sent, and the position that sync ended at.
type sentMember struct {
	eventID string
	at      int64
}

// LazyMembers remembers, per device and room, the membership events a lazy-loading /sync
// sent, so that later syncs leave out the redundant ones (spec "Lazy-loading room members":
// the server may assume the client remembers them) unless the filter asks for
// include_redundant_members. A member counts as known only to a sync from a since token at
// or after the end of the sync that sent it: a client that never got that response, and
// syncs again from its older token, is sent the member again. A full sync of the room
// starts the device's memory of it afresh. What the cache evicts is sent again, which the
// spec allows.
type LazyMembers struct {
	sent *caching.Cache[lazyKey, map[string]sentMember]
}

// NewLazyMembers makes a LazyMembers holding at most maxBytes, whose metrics (cache
// "syncapi_lazy_members") go to reg when not nil.
func NewLazyMembers(maxBytes int64, reg prometheus.Registerer) *LazyMembers {
	weigh := func(k lazyKey, v map[string]sentMember) int {
		n := len(k.userID) + len(k.deviceID) + len(k.roomID)
		for member, m := range v {
			n += len(member) + len(m.eventID) + 48
		}
		return n
	}
	return &LazyMembers{sent: caching.New("syncapi_lazy_members", maxBytes, weigh, reg)}
}

// known is what a sync from since may assume the device has of the room: member user ID
// to membership event ID.
func (l *LazyMembers) known(userID, deviceID, roomID string, since int64) map[string]string {
	if l == nil {
		return nil
	}
	m, _ := l.sent.Get(lazyKey{userID, deviceID, roomID})
	out := make(map[string]string, len(m))
	for member, s := range m {
		if s.at <= since {
			out[member] = s.eventID
		}
	}
	return out
}

// record adds sent (member user ID to membership event ID), sent by a sync that ended at
// position at, to what the device knows of the room; fresh forgets what it knew before.
// Cached maps are never changed: an update is a copy.
func (l *LazyMembers) record(userID, deviceID, roomID string, sent map[string]string, at int64, fresh bool) {
	if l == nil || len(sent) == 0 && !fresh {
		return
	}
	k := lazyKey{userID, deviceID, roomID}
	next := map[string]sentMember{}
	if !fresh {
		if old, ok := l.sent.Get(k); ok {
			next = maps.Clone(old)
		}
	}
	for member, eventID := range sent {
		next[member] = sentMember{eventID: eventID, at: at}
	}
	l.sent.Put(k, next)
}
