package storage

import (
	"context"
	"math"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
)

// memberChangeCost estimates the bytes of one cached MemberChange: its strings (room and
// event IDs, membership) and the struct.
const memberChangeCost = 160

// membershipCache is a Database whose MembershipHistory remembers each user's history and
// reads only the changes after what it remembers, so that a /sync of a user in thousands of
// rooms does not read every membership the user ever had. The history is append-only: a
// membership is stored once at the position of the write that stores it, and every
// position up to MaxPosition is committed (positions are taken in one row that serialises
// the writes), so a history read up to a committed position never misses a change.
type membershipCache struct {
	Database
	histories *caching.Cache[string, *memberHistory]
}

// memberHistory is a user's membership changes up to upTo. It is never changed once
// cached: an extension is a new memberHistory.
type memberHistory struct {
	upTo    int64
	changes []MemberChange
}

// WithMembershipCache wraps db with a membership-history cache of at most maxBytes, whose
// metrics (cache "syncapi_membership_histories") go to reg when not nil.
func WithMembershipCache(db Database, maxBytes int64, reg prometheus.Registerer) Database {
	cost := func(userID string, h *memberHistory) int { return len(userID) + 32 + memberChangeCost*len(h.changes) }
	return &membershipCache{Database: db, histories: caching.New("syncapi_membership_histories", maxBytes, cost, reg)}
}

// MembershipHistory implements Database from the cache, reading only the changes in
// (cached upTo, upTo]. A history asked up to a position beyond what is committed is read
// but not cached.
func (c *membershipCache) MembershipHistory(ctx context.Context, userID string, upTo int64) ([]MemberChange, error) {
	h, ok := c.histories.Get(userID)
	if ok && h.upTo >= upTo {
		n := sort.Search(len(h.changes), func(i int) bool { return h.changes[i].Position > upTo })
		return slices.Clip(h.changes[:n]), nil
	}
	after := int64(math.MinInt64)
	var known []MemberChange
	if ok {
		after, known = h.upTo, h.changes
	}
	top, err := c.MaxPosition(ctx)
	if err != nil {
		return nil, err
	}
	more, err := c.MembershipChanges(ctx, userID, after, upTo)
	if err != nil {
		return nil, err
	}
	all := append(slices.Clip(known), more...)
	if upTo <= top {
		c.histories.Put(userID, &memberHistory{upTo: upTo, changes: all})
	}
	return slices.Clip(all), nil
}
