package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/pushserver/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// RuleCache keeps users' effective rulesets parsed, keyed by the stored content they
// came from, so a room of a thousand members does not parse a thousand rulesets per
// event. The rulesets share the default rules (pushrules.LoadShared), so a user who
// changed nothing costs under 1 KiB; the cache is bounded in bytes. It is safe for
// concurrent use.
type RuleCache struct {
	rules *caching.Cache[string, cachedRules]
}

type cachedRules struct {
	stored string
	rs     *pushrules.Ruleset
}

// NewRuleCache returns an empty cache holding at most maxBytes (cache pushserver_rules;
// reg, when not nil, gets its metrics).
func NewRuleCache(maxBytes int64, reg prometheus.Registerer) *RuleCache {
	weigh := func(userID string, c cachedRules) int { return len(userID) + 16 + len(c.stored) + 8 + c.rs.OwnBytes() }
	return &RuleCache{rules: caching.New("pushserver_rules", maxBytes, weigh, reg)}
}

// Get returns the user's effective ruleset for the stored m.push_rules content (nil: the
// defaults), which the caller must not modify. Content that cannot be parsed counts as
// no content, with a warning.
func (c *RuleCache) Get(userID string, stored json.RawMessage, logger *logrus.Entry) *pushrules.Ruleset {
	if hit, ok := c.rules.Get(userID); ok && hit.stored == string(stored) {
		return hit.rs
	}
	rs, err := pushrules.LoadShared(userID, stored)
	if err != nil {
		logger.WithError(err).WithField("user_id", userID).Warn("stored push rules unreadable; using the defaults")
		if rs, err = pushrules.LoadShared(userID, nil); err != nil {
			rs = &pushrules.Ruleset{}
		}
	}
	c.rules.Put(userID, cachedRules{stored: string(stored), rs: rs})
	return rs
}

// ignoredUserListType is the account data type that lists the users a user ignores.
const ignoredUserListType = "m.ignored_user_list"

// ClientData is the Handle of the OutputClientData consumer: it keeps every user's
// m.push_rules content and the users of their m.ignored_user_list, whose events notify
// them of nothing (spec "Ignoring Users": the client no longer receives their events).
// Replays store the same content again.
type ClientData struct {
	DB     storage.Database
	Logger *logrus.Entry
}

// Handle implements eventlog.Consumer.Handle.
func (c *ClientData) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	for _, rec := range recs {
		var out uapi.OutputClientData
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return fmt.Errorf("decode client data: %w", err)
		}
		ad := out.AccountData
		if out.Type != uapi.OutputClientDataTypeAccountData || ad == nil || ad.RoomID != "" {
			continue
		}
		var err error
		switch ad.Type {
		case pushrules.AccountDataType:
			err = c.DB.SetPushRules(ctx, tx, ad.UserID, ad.Content)
		case ignoredUserListType:
			err = c.DB.SetIgnoredUsers(ctx, tx, ad.UserID, ignoredUsers(ad.Content))
		default:
			continue
		}
		if err != nil {
			return eventlog.Retry(err)
		}
	}
	return nil
}

// ignoredUsers are the user IDs of m.ignored_user_list content, sorted; content without
// the event's shape ignores nobody.
func ignoredUsers(content json.RawMessage) []string {
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil
	}
	return slices.Sorted(maps.Keys(c.IgnoredUsers))
}

// powerLevels is what push rules need of a room's power levels.
type powerLevels struct {
	users         map[string]int64
	usersDefault  int64
	notifications map[string]int64
}

// of is the user's power level.
func (p *powerLevels) of(userID string) int64 {
	if l, ok := p.users[userID]; ok {
		return l
	}
	return p.usersDefault
}

// parsePowerLevels reads power levels content; levels may be numbers or, in old rooms,
// strings of digits. Without content every user has 0 (the room's creator's 100 comes
// from the content every room has from its second event on).
func parsePowerLevels(content json.RawMessage) powerLevels {
	var raw struct {
		Users         map[string]json.RawMessage `json:"users"`
		UsersDefault  json.RawMessage            `json:"users_default"`
		Notifications map[string]json.RawMessage `json:"notifications"`
	}
	out := powerLevels{users: map[string]int64{}, notifications: map[string]int64{}}
	if len(content) == 0 || json.Unmarshal(content, &raw) != nil {
		return out
	}
	out.usersDefault, _ = level(raw.UsersDefault)
	for u, v := range raw.Users {
		if l, ok := level(v); ok {
			out.users[u] = l
		}
	}
	for k, v := range raw.Notifications {
		if l, ok := level(v); ok {
			out.notifications[k] = l
		}
	}
	return out
}

func level(v json.RawMessage) (int64, bool) {
	var n json.Number
	if json.Unmarshal(v, &n) == nil {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, true
		}
	}
	return 0, false
}

// KeyChanges is the Handle of the OutputKeyChangeEvent consumer: a deleted local device
// (deleted, or logged out) takes its pushers with it. Replays delete nothing more.
type KeyChanges struct {
	DB         storage.Database
	ServerName string
}

// Handle implements eventlog.Consumer.Handle.
func (k *KeyChanges) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	for _, rec := range recs {
		var out uapi.OutputKeyChangeEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return fmt.Errorf("decode key change: %w", err)
		}
		dk := out.DeviceKeys
		if out.Type != uapi.OutputKeyChangeTypeDeviceKeys || dk == nil || !dk.Deleted || !strings.HasSuffix(dk.UserID, ":"+k.ServerName) {
			continue
		}
		if err := k.DB.DeleteDevicePushers(ctx, tx, dk.UserID, dk.DeviceID); err != nil {
			return eventlog.Retry(err)
		}
	}
	return nil
}
