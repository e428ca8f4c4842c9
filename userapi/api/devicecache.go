package api

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"
)

// DeviceCacheTTL is how long a DeviceCache trusts an access token it looked up: in a
// process that did not perform the logout itself, the bound on how long a logged-out token
// keeps working.
const DeviceCacheTTL = 2 * time.Second

// deviceCacheSize bounds the entries of a DeviceCache.
const deviceCacheSize = 10000

// DeviceCache is a ClientUserAPI that remembers the device of each access token it looked
// up for DeviceCacheTTL, so that a polylith process (clientapi, syncapi) does not ask the
// userapi on every request. Unknown tokens and errors are not remembered: a new login works
// at once. Logouts and re-logins made through the cache (PerformDeviceDeletion,
// PerformDeviceCreation with a known device ID) drop the user's entries, so the process
// that serves logout (clientapi) never accepts a token it revoked; another process holding
// a cache (syncapi) accepts a revoked token for at most DeviceCacheTTL.
type DeviceCache struct {
	ClientUserAPI
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedDevice
	// gen counts invalidations: a lookup that overlapped one does not store its answer,
	// which may predate the revocation.
	gen uint64
}

type cachedDevice struct {
	dev     Device
	expires time.Time
}

// NewDeviceCache wraps u with a cache whose entries live for ttl (DeviceCacheTTL in the
// polylith).
func NewDeviceCache(u ClientUserAPI, ttl time.Duration) *DeviceCache {
	return &DeviceCache{ClientUserAPI: u, ttl: ttl, max: deviceCacheSize, entries: map[[sha256.Size]byte]cachedDevice{}}
}

// QueryAccessToken answers from the cache, or asks the wrapped API and remembers a known
// token's device. The cache holds token hashes, never tokens.
func (c *DeviceCache) QueryAccessToken(ctx context.Context, req *QueryAccessTokenRequest) (*QueryAccessTokenResponse, error) {
	// An application service's token stands for a different user (and device) with each
	// user_id (and device_id).
	key := sha256.Sum256([]byte(req.AccessToken + "\x00" + req.UserID + "\x00" + req.DeviceID))
	c.mu.Lock()
	e, ok := c.entries[key]
	now := time.Now()
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		dev := e.dev
		return &QueryAccessTokenResponse{Device: &dev}, nil
	}
	res, err := c.ClientUserAPI.QueryAccessToken(ctx, req)
	if err != nil || res.Device == nil {
		return res, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return res, nil
	}
	if len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[key] = cachedDevice{dev: *res.Device, expires: now.Add(c.ttl)}
	return res, nil
}

// evict drops expired entries, and if none had expired, an arbitrary tenth of them.
func (c *DeviceCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) < c.max*9/10 {
			break
		}
		delete(c.entries, k)
	}
}

// forget drops the cached tokens of userID's devices that match.
func (c *DeviceCache) forget(userID string, match func(deviceID string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.entries {
		if e.dev.UserID == userID && match(e.dev.DeviceID) {
			delete(c.entries, k)
		}
	}
}

// PerformDeviceDeletion logs the devices out and drops their cached tokens. The entries
// are dropped before and after the call: a lookup racing with it cannot keep a token.
func (c *DeviceCache) PerformDeviceDeletion(ctx context.Context, req *PerformDeviceDeletionRequest) (*PerformDeviceDeletionResponse, error) {
	match := func(deviceID string) bool {
		if req.All {
			return deviceID != req.ExceptDeviceID
		}
		return slices.Contains(req.DeviceIDs, deviceID)
	}
	c.forget(req.UserID, match)
	defer c.forget(req.UserID, match)
	return c.ClientUserAPI.PerformDeviceDeletion(ctx, req)
}

// PerformDeviceCreation logs a device in; a known device ID's old token stops working, so
// its cached entry is dropped.
func (c *DeviceCache) PerformDeviceCreation(ctx context.Context, req *PerformDeviceCreationRequest) (*PerformDeviceCreationResponse, error) {
	res, err := c.ClientUserAPI.PerformDeviceCreation(ctx, req)
	if err == nil && res.Device != nil {
		deviceID := res.Device.DeviceID
		c.forget(res.Device.UserID, func(id string) bool { return id == deviceID })
	}
	return res, err
}

// PerformPasswordUpdate changes the password and, when it logs the other devices out, drops
// their cached tokens, before and after the call like PerformDeviceDeletion.
func (c *DeviceCache) PerformPasswordUpdate(ctx context.Context, req *PerformPasswordUpdateRequest) (*PerformPasswordUpdateResponse, error) {
	if req.KeepDevices {
		return c.ClientUserAPI.PerformPasswordUpdate(ctx, req)
	}
	prefix := "@" + req.Localpart + ":"
	drop := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.gen++
		for k, e := range c.entries {
			if strings.HasPrefix(e.dev.UserID, prefix) && e.dev.DeviceID != req.ExceptDeviceID {
				delete(c.entries, k)
			}
		}
	}
	drop()
	defer drop()
	return c.ClientUserAPI.PerformPasswordUpdate(ctx, req)
}

// PerformGuestUpgrade upgrades the account and drops its cached tokens, whose devices still
// say guest.
func (c *DeviceCache) PerformGuestUpgrade(ctx context.Context, req *PerformGuestUpgradeRequest) (*PerformGuestUpgradeResponse, error) {
	res, err := c.ClientUserAPI.PerformGuestUpgrade(ctx, req)
	if err == nil {
		c.forget(res.Account.UserID, func(string) bool { return true })
	}
	return res, err
}

// PerformAccountDeactivation deactivates the account and drops its cached tokens, before
// and after the call like PerformDeviceDeletion.
func (c *DeviceCache) PerformAccountDeactivation(ctx context.Context, req *PerformAccountDeactivationRequest) (*PerformAccountDeactivationResponse, error) {
	prefix := "@" + req.Localpart + ":"
	drop := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.gen++
		for k, e := range c.entries {
			if strings.HasPrefix(e.dev.UserID, prefix) {
				delete(c.entries, k)
			}
		}
	}
	drop()
	defer drop()
	return c.ClientUserAPI.PerformAccountDeactivation(ctx, req)
}
