package internal

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
)

// lazyKey names the members one device was sent in one room.
type lazyKey struct{ userID, deviceID, roomID string }

// LazyMembers remembers, per device and room, the membership events a lazy-loading /sync
// sent, so that later syncs leave out the redundant ones (spec "Lazy-loading room members":
// the server may assume the client remembers them) unless the filter asks for
// include_redundant_members. An initial sync starts the device's memory afresh. What the
// cache evicts is sent again, which the spec allows.
type LazyMembers struct {
	sent *caching.Cache[lazyKey, map[string]string]
}

// NewLazyMembers makes a LazyMembers holding at most maxBytes, whose metrics (cache
// "syncapi_lazy_members") go to reg when not nil.
func NewLazyMembers(maxBytes int64, reg prometheus.Registerer) *LazyMembers {
	weigh := func(k lazyKey, v map[string]string) int {
		n := len(k.userID) + len(k.deviceID) + len(k.roomID)
		for member, eventID := range v {
			n += len(member) + len(eventID) + 32
		}
		return n
	}
	return &LazyMembers{sent: caching.New("syncapi_lazy_members", maxBytes, weigh, reg)}
}

// known is what the device was sent in the room: member user ID to membership event ID.
func (l *LazyMembers) known(userID, deviceID, roomID string) map[string]string {
	if l == nil {
		return nil
	}
	m, _ := l.sent.Get(lazyKey{userID, deviceID, roomID})
	return m
}

// record adds sent (member user ID to membership event ID) to what the device knows of
// the room; fresh forgets what it knew before. Cached maps are never changed: an update is
// a copy.
func (l *LazyMembers) record(userID, deviceID, roomID string, sent map[string]string, fresh bool) {
	if l == nil || len(sent) == 0 && !fresh {
		return
	}
	k := lazyKey{userID, deviceID, roomID}
	next := map[string]string{}
	if !fresh {
		if old, ok := l.sent.Get(k); ok {
			next = maps.Clone(old)
		}
	}
	maps.Copy(next, sent)
	l.sent.Put(k, next)
}
