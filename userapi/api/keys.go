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
// device IDs wanted (empty: every device).
type QueryKeysRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
}

// QueryKeysResponse is the body of POST /keys/query's answer for local users: per user, per
// device, the signed device keys with unsigned.device_display_name added. Failures maps a
// server name to why it could not be asked (remote users).
type QueryKeysResponse struct {
	DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	Failures   map[string]json.RawMessage            `json:"failures"`
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

// SyncKeyAPI is what the syncapi uses: one-time key counts for /sync.
type SyncKeyAPI interface {
	QueryOneTimeKeyCounts(ctx context.Context, req *QueryOneTimeKeyCountsRequest) (*QueryOneTimeKeyCountsResponse, error)
}
