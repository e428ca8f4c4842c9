package api

import (
	"context"
	"encoding/json"
)

// PerformUploadKeysRequest is POST /keys/upload for one device. DeviceKeys, OneTimeKeys and
// FallbackKeys are the request body's fields as the client sent them; each is optional.
type PerformUploadKeysRequest struct {
	UserID       string                     `json:"user_id"`
	DeviceID     string                     `json:"device_id"`
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// PerformUploadKeysResponse is the device's unclaimed one-time keys per algorithm.
type PerformUploadKeysResponse struct {
	OneTimeKeyCounts map[string]int `json:"one_time_key_counts"`
}

// QueryKeysRequest is POST /keys/query for local users: DeviceKeys maps a user ID to the
// device IDs wanted (empty: every device). UserID is who asks: only they see their own
// user-signing key and the signatures they made on others' keys.
type QueryKeysRequest struct {
	UserID     string              `json:"user_id,omitempty"`
	DeviceKeys map[string][]string `json:"device_keys"`
}

// QueryKeysResponse is the body of POST /keys/query's answer for local users: per user, per
// device, the signed device keys with unsigned.device_display_name added, and the users'
// cross-signing keys. Failures maps a server name to why it could not be asked (remote
// users).
type QueryKeysResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]json.RawMessage            `json:"failures"`
}

// PerformUploadDeviceSigningKeysRequest is POST /keys/device_signing/upload: each key is
// optional. Without Authenticated (the caller passed User-Interactive Authentication) only
// a first upload, or one that changes nothing, is accepted; anything else is 401
// M_UNAUTHORIZED, which the client API answers with its authentication flows.
type PerformUploadDeviceSigningKeysRequest struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
	Authenticated  bool            `json:"authenticated,omitempty"`
}

// PerformUploadDeviceSigningKeysResponse is empty.
type PerformUploadDeviceSigningKeysResponse struct{}

// PerformUploadSignaturesRequest is POST /keys/signatures/upload by UserID: user ID -> key
// ID (a device ID or a master key's public key) -> the signed key object.
type PerformUploadSignaturesRequest struct {
	UserID     string                                `json:"user_id"`
	Signatures map[string]map[string]json.RawMessage `json:"signatures"`
}

// PerformUploadSignaturesResponse lists, per user and key ID, the Matrix error of each
// signature that was not stored.
type PerformUploadSignaturesResponse struct {
	Failures map[string]map[string]json.RawMessage `json:"failures"`
}

// PerformClaimKeysRequest is POST /keys/claim: user ID -> device ID -> algorithm.
type PerformClaimKeysRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// PerformClaimKeysResponse is user ID -> device ID -> "algorithm:key_id" -> key. Each
// one-time key is handed out to exactly one claim; a device without one answers with its
// fallback key (which stays). Unknown users and devices are absent.
type PerformClaimKeysResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]json.RawMessage                       `json:"failures"`
}

// QueryOneTimeKeyCountsRequest asks for one device's key counts, for /sync.
type QueryOneTimeKeyCountsRequest struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
}

// QueryOneTimeKeyCountsResponse is /sync's device_one_time_keys_count and
// device_unused_fallback_key_types.
type QueryOneTimeKeyCountsResponse struct {
	OneTimeKeyCounts            map[string]int `json:"one_time_key_counts"`
	UnusedFallbackKeyAlgorithms []string       `json:"unused_fallback_key_algorithms"`
}

// PerformMarkRemoteDeviceListsStaleRequest names other servers' users with whom this server
// shares no joined room any more: their servers stop sending device list updates, so the cached
// lists may go out of date.
type PerformMarkRemoteDeviceListsStaleRequest struct {
	UserIDs []string `json:"user_ids"`
}

// PerformMarkRemoteDeviceListsStaleResponse is empty.
type PerformMarkRemoteDeviceListsStaleResponse struct{}

// SyncKeyAPI is what the syncapi uses: one-time key counts for /sync, and marking the cached
// device lists of remote users it no longer shares a room with stale.
type SyncKeyAPI interface {
	QueryOneTimeKeyCounts(ctx context.Context, req *QueryOneTimeKeyCountsRequest) (*QueryOneTimeKeyCountsResponse, error)
	// PerformMarkRemoteDeviceListsStale marks the cached device lists of those of the users
	// that belong to other servers stale, so that the next /keys/query fetches them again.
	// Users without a cached list, and local users, are ignored; it is idempotent.
	PerformMarkRemoteDeviceListsStale(ctx context.Context, req *PerformMarkRemoteDeviceListsStaleRequest) (*PerformMarkRemoteDeviceListsStaleResponse, error)
}

// QueryDeviceListRequest asks for a local user's devices with their keys, for another
// server (GET /_matrix/federation/v1/user/devices/{userId}).
type QueryDeviceListRequest struct {
	UserID string `json:"user_id"`
}

// DeviceListEntry is one device of a device list; Keys is absent for a device that
// uploaded none.
type DeviceListEntry struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// QueryDeviceListResponse is the user's device list at StreamID (the stream of
// m.device_list_update), with their master and self-signing keys.
type QueryDeviceListResponse struct {
	UserID         string            `json:"user_id"`
	StreamID       int64             `json:"stream_id"`
	Devices        []DeviceListEntry `json:"devices"`
	MasterKey      json.RawMessage   `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage   `json:"self_signing_key,omitempty"`
}

// QueryRemoteKeysRequest is POST /keys/query for other servers' users: DeviceKeys maps a
// user ID to the device IDs wanted (empty: every device). TimeoutMS bounds how long
// fetching lists from other servers may take (0: DefaultRemoteTimeout). UserID is the
// local user asking: the signatures they made on these users' master keys, which only
// they see, are added.
type QueryRemoteKeysRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
	TimeoutMS  int64               `json:"timeout_ms,omitempty"`
	UserID     string              `json:"user_id,omitempty"`
}

// QueryRemoteKeysResponse is the other servers' users' part of POST /keys/query's answer:
// per user, per device, the device keys with unsigned.device_display_name (a device whose
// keys did not pass the checks has user_id, device_id and unsigned alone), their master and
// self-signing keys, and per server that could not be asked (with nothing cached) why.
type QueryRemoteKeysResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	Failures        map[string]json.RawMessage            `json:"failures"`
}

// RemoteDeviceFetcher asks another server for a user's device list (GET
// /_matrix/federation/v1/user/devices/{userId}), as it answered; the userapi checks it.
type RemoteDeviceFetcher interface {
	FetchUserDevices(ctx context.Context, userID string) (*QueryDeviceListResponse, error)
}
