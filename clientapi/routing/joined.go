package routing

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Bounds of the joined-member cache of the write pre-check.
const (
	joinedTTL  = 10 * time.Second
	joinedSize = 10000
)

// joinedCache remembers, for a short time, that a user is joined to a room. It serves only
// the pre-check before a write (send, redact, state): the roomserver checks every event
// against the room's current state anyway, so a stale entry (the user left a moment ago
// through another process) costs a round trip through the log and still ends in a 403.
// Reads never use it, and it never remembers that a user is not joined, so a join is
// usable at once. Membership events this process submits drop their target's entry.
type joinedCache struct {
	mu      sync.Mutex
	entries map[joinedKey]time.Time // expiry
	// gen counts invalidations: a query that overlapped one does not store its answer.
	gen uint64
}

type joinedKey struct{ roomID, userID string }

func newJoinedCache() *joinedCache {
	return &joinedCache{entries: map[joinedKey]time.Time{}}
}

// forget drops the entry of the user in the room.
func (c *joinedCache) forget(roomID, userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.entries, joinedKey{roomID, userID})
}

// requireJoinedToWrite is requireJoined for writes the roomserver will check again.
func (rm *Rooms) requireJoinedToWrite(ctx context.Context, roomID, userID string) error {
	c := rm.joinedCache()
	key := joinedKey{roomID, userID}
	c.mu.Lock()
	expires, ok := c.entries[key]
	gen := c.gen
	c.mu.Unlock()
	now := time.Now()
	if ok && now.Before(expires) {
		return nil
	}
	m, err := rm.membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m.Membership != spec.Join {
		return matrixerr.Forbidden("you are not joined to this room")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return nil
	}
	if len(c.entries) >= joinedSize {
		for k, exp := range c.entries {
			if !now.Before(exp) || len(c.entries) >= joinedSize*9/10 {
				delete(c.entries, k)
			}
		}
	}
	c.entries[key] = now.Add(joinedTTL)
	return nil
}

func (rm *Rooms) joinedCache() *joinedCache {
	rm.joinedOnce.Do(func() { rm.joined = newJoinedCache() })
	return rm.joined
}
