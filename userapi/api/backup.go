package api

import (
	"context"
	"encoding/json"
)

// KeyBackupVersion is a backup version's metadata: /room_keys/version's answer.
type KeyBackupVersion struct {
	Version   string          `json:"version"`
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
}

// PerformKeyBackupVersionRequest creates (Version ""), updates the auth data of, or
// (Delete) deletes a user's backup version.
type PerformKeyBackupVersionRequest struct {
	UserID    string          `json:"user_id"`
	Version   string          `json:"version,omitempty"`
	Algorithm string          `json:"algorithm,omitempty"`
	AuthData  json.RawMessage `json:"auth_data,omitempty"`
	Delete    bool            `json:"delete,omitempty"`
}

// PerformKeyBackupVersionResponse names the version created or changed.
type PerformKeyBackupVersionResponse struct {
	Version string `json:"version"`
}

// QueryKeyBackupVersionRequest asks for a version's metadata; Version "" is the latest.
type QueryKeyBackupVersionRequest struct {
	UserID  string `json:"user_id"`
	Version string `json:"version,omitempty"`
}

// QueryKeyBackupVersionResponse is the version (M_NOT_FOUND when there is none).
type QueryKeyBackupVersionResponse struct {
	KeyBackupVersion
}

// KeyBackupSession is one backed-up room key (the spec's KeyBackupData).
type KeyBackupSession struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// PerformRoomKeysRequest stores (Keys: room ID -> session ID -> key) or, with Delete,
// deletes (every key, RoomID's, or RoomID's SessionID) keys of a backup version, which
// must be the user's latest (else 403 M_WRONG_ROOM_KEYS_VERSION for a store).
type PerformRoomKeysRequest struct {
	UserID    string                                 `json:"user_id"`
	Version   string                                 `json:"version"`
	Keys      map[string]map[string]KeyBackupSession `json:"keys,omitempty"`
	Delete    bool                                   `json:"delete,omitempty"`
	RoomID    string                                 `json:"room_id,omitempty"`
	SessionID string                                 `json:"session_id,omitempty"`
}

// PerformRoomKeysResponse is the version's key count and etag afterwards.
type PerformRoomKeysResponse struct {
	Count int64  `json:"count"`
	ETag  string `json:"etag"`
}

// QueryRoomKeysRequest reads a version's keys: every key, RoomID's, or one session's.
type QueryRoomKeysRequest struct {
	UserID    string `json:"user_id"`
	Version   string `json:"version"`
	RoomID    string `json:"room_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
}

// QueryRoomKeysResponse is room ID -> session ID -> key.
type QueryRoomKeysResponse struct {
	Rooms map[string]map[string]KeyBackupSession `json:"rooms"`
}

// KeyBackupAPI is the server-side key backup, which clientapi serves.
type KeyBackupAPI interface {
	PerformKeyBackupVersion(ctx context.Context, req *PerformKeyBackupVersionRequest) (*PerformKeyBackupVersionResponse, error)
	QueryKeyBackupVersion(ctx context.Context, req *QueryKeyBackupVersionRequest) (*QueryKeyBackupVersionResponse, error)
	PerformRoomKeys(ctx context.Context, req *PerformRoomKeysRequest) (*PerformRoomKeysResponse, error)
	QueryRoomKeys(ctx context.Context, req *QueryRoomKeysRequest) (*QueryRoomKeysResponse, error)
}
