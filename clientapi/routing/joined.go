package routing

import (
	"context"
	"strings"
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
// Expired entries are dropped at most a TTL after they expire, so that it holds the users
// who wrote in the last moments, not every user who ever wrote (up to joinedSize).
type joinedCache struct {
	mu      sync.Mutex
	entries map[joinedKey]time.Time // expiry
	// gen counts invalidations: a query that overlapped one does not store its answer.
	gen uint64
	// sweep is when put next drops the expired entries.
	sweep time.Time
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

// get reports whether key is a live entry at now, and the generation a put of the answer
// to a query started now must pass.
func (c *joinedCache) get(key joinedKey, now time.Time) (bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	expires, ok := c.entries[key]
	return ok && now.Before(expires), c.gen
}

// put remembers key until joinedTTL after now, unless an invalidation came after get
// returned gen. The key's strings are copied: they are often parts of a request's path.
func (c *joinedCache) put(key joinedKey, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	full := len(c.entries) >= joinedSize
	if full || !now.Before(c.sweep) {
		for k, exp := range c.entries {
			if !now.Before(exp) || (full && len(c.entries) >= joinedSize*9/10) {
				delete(c.entries, k)
			}
		}
		c.sweep = now.Add(joinedTTL)
	}
	c.entries[joinedKey{strings.Clone(key.roomID), strings.Clone(key.userID)}] = now.Add(joinedTTL)
}

// requireJoinedToWrite is requireJoined for writes the roomserver will check again.
func (rm *Rooms) requireJoinedToWrite(ctx context.Context, roomID, userID string) error {
	c := rm.joinedCache()
	key := joinedKey{roomID, userID}
	ok, gen := c.get(key, time.Now())
	if ok {
		return nil
	}
	m, err := rm.membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m.Membership != spec.Join {
		return matrixerr.Forbidden("you are not joined to this room")
	}
	c.put(key, gen, time.Now())
	return nil
}

func (rm *Rooms) joinedCache() *joinedCache {
	rm.joinedOnce.Do(func() { rm.joined = newJoinedCache() })
	return rm.joined
}
