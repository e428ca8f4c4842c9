package internal

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Remote profiles are kept this long, and at most this many: clients ask for the profile of
// every member they show, and the answer seldom changes.
const (
	profileCacheTTL  = 5 * time.Minute
	profileCacheSize = 10000
)

// profileCache holds recent remote profile answers by user ID.
type profileCache struct {
	mu      sync.Mutex
	entries map[string]cachedProfile
}

type cachedProfile struct {
	profile api.QueryRemoteProfileResponse
	expires time.Time
}

func (c *profileCache) get(userID string, now time.Time) (api.QueryRemoteProfileResponse, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[userID]
	if !ok || now.After(e.expires) {
		return api.QueryRemoteProfileResponse{}, false
	}
	return e.profile, true
}

// put stores an answer; a full cache first drops its expired entries, and everything if
// none had expired.
func (c *profileCache) put(userID string, p api.QueryRemoteProfileResponse, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]cachedProfile{}
	}
	if len(c.entries) >= profileCacheSize {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= profileCacheSize {
			clear(c.entries)
		}
	}
	c.entries[userID] = cachedProfile{profile: p, expires: now.Add(profileCacheTTL)}
}

// QueryRemoteProfile implements api.ClientFederationAPI: GET /query/profile on the user's
// server, or a cached answer of the last profileCacheTTL.
func (m *Membership) QueryRemoteProfile(ctx context.Context, req *api.QueryRemoteProfileRequest) (*api.QueryRemoteProfileResponse, error) {
	uid, err := spec.NewUserID(req.UserID, true)
	if err != nil {
		return nil, matrixerr.InvalidParam("invalid user ID")
	}
	if uid.Domain() == m.ServerName {
		return nil, matrixerr.InvalidParam("the user is of this server")
	}
	now := time.Now()
	if p, ok := m.profiles.get(req.UserID, now); ok {
		return &p, nil
	}
	res, err := m.Client.LookupProfile(ctx, m.ServerName, uid.Domain(), req.UserID, "")
	if err != nil {
		return nil, askFailure(err, uid.Domain(), "profile not found")
	}
	p := api.QueryRemoteProfileResponse{DisplayName: res.DisplayName, AvatarURL: res.AvatarURL}
	m.profiles.put(req.UserID, p, now)
	return &p, nil
}
