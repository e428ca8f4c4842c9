package storage

import (
	"context"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
)

// memberChangeCost estimates the bytes of one cached MemberChange: its strings (room and
// event IDs, membership), the struct and its room index entry.
const memberChangeCost = 168

// membershipCache is a Database whose MembershipHistory remembers each user's history and
// reads only the changes after what it remembers, so that a /sync of a user in thousands of
// rooms does not read every membership the user ever had. The history is append-only: a
// membership is stored once at the position of the write that stores it, and every
// position up to MaxPosition is committed (or abandoned), so a history read up to a
// committed position never misses a change.
type membershipCache struct {
	Database
	histories *caching.Cache[string, *memberHistory]
}

// memberHistory is a user's membership changes up to upTo. It only grows: extensions are
// appended under log.mu, and the Memberships handed out keep their own length.
type memberHistory struct {
	upTo int64
	log  *memberLog
}

// WithMembershipCache wraps db with a membership-history cache of at most maxBytes, whose
// metrics (cache "syncapi_membership_histories") go to reg when not nil.
func WithMembershipCache(db Database, maxBytes int64, reg prometheus.Registerer) Database {
	cost := func(userID string, h *memberHistory) int {
		h.log.mu.RLock()
		defer h.log.mu.RUnlock()
		return len(userID) + 64 + memberChangeCost*len(h.log.changes)
	}
	return &membershipCache{Database: db, histories: caching.New("syncapi_membership_histories", maxBytes, cost, reg)}
}

// MembershipHistory implements Database from the cache, reading only the changes in
// (cached upTo, upTo] and appending them to what is cached, so its cost follows what
// changed, not the user's rooms. A history asked up to a position beyond what is committed
// is read but not cached.
func (c *membershipCache) MembershipHistory(ctx context.Context, userID string, upTo int64) (Memberships, error) {
	h, ok := c.histories.Get(userID)
	if !ok {
		h = c.histories.PutIfAbsent(userID, &memberHistory{upTo: math.MinInt64, log: newMemberLog()})
	}
	h.log.mu.RLock()
	if h.upTo >= upTo {
		defer h.log.mu.RUnlock()
		return h.log.upTo(upTo), nil
	}
	h.log.mu.RUnlock()
	top, err := c.MaxPosition(ctx)
	if err != nil {
		return Memberships{}, err
	}
	if upTo > top {
		all, err := c.MembershipChanges(ctx, userID, math.MinInt64, upTo)
		if err != nil {
			return Memberships{}, err
		}
		return NewMemberships(all), nil
	}
	m, grown, err := c.extend(ctx, userID, h, upTo)
	if err == nil && grown {
		c.histories.Put(userID, h) // weigh it again
	}
	return m, err
}

// extend reads the user's changes from h.upTo to upTo and appends them to h, one extension
// at a time per user, and reports whether h grew.
func (c *membershipCache) extend(ctx context.Context, userID string, h *memberHistory, upTo int64) (Memberships, bool, error) {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.upTo >= upTo {
		return h.log.upTo(upTo), false, nil
	}
	more, err := c.MembershipChanges(ctx, userID, h.upTo, upTo)
	if err != nil {
		return Memberships{}, false, err
	}
	h.log.add(more)
	h.upTo = upTo
	return h.log.upTo(upTo), len(more) > 0, nil
}
