package internal

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// backupError turns the storage's answers into the spec's errors.
func backupError(err error) error {
	var wrong *storage.ErrWrongVersion
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return matrixerr.NotFound("no such backup version")
	case errors.As(err, &wrong):
		return matrixerr.WrongRoomKeysVersion(wrong.Current)
	}
	return err
}

// PerformKeyBackupVersion creates, updates (auth data only; the algorithm must stay) or
// deletes a backup version.
func (u *UserAPI) PerformKeyBackupVersion(ctx context.Context, req *api.PerformKeyBackupVersionRequest) (*api.PerformKeyBackupVersionResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.Delete {
		return &api.PerformKeyBackupVersionResponse{Version: req.Version}, backupError(u.DB.DeleteKeyBackup(ctx, local, req.Version))
	}
	if req.Algorithm == "" {
		return nil, matrixerr.MissingParam("algorithm is required")
	}
	if err := checkBackupData(req.Algorithm, "auth_data", req.AuthData); err != nil {
		return nil, err
	}
	if req.Version == "" {
		v, err := u.DB.CreateKeyBackup(ctx, local, req.Algorithm, req.AuthData)
		if err != nil {
			return nil, err
		}
		return &api.PerformKeyBackupVersionResponse{Version: v}, nil
	}
	b, err := u.DB.KeyBackup(ctx, local, req.Version)
	if err != nil {
		return nil, backupError(err)
	}
	if b.Algorithm != req.Algorithm {
		return nil, matrixerr.InvalidParam("the algorithm of a backup version cannot change")
	}
	return &api.PerformKeyBackupVersionResponse{Version: req.Version}, backupError(u.DB.UpdateKeyBackup(ctx, local, req.Version, req.AuthData))
}

// megolmBackupV1 is the one backup algorithm the spec defines (client-server API, "Server-side
// key backups").
const megolmBackupV1 = "m.megolm_backup.v1.curve25519-aes-sha2"

// checkBackupData checks a backup version's auth_data or a backed-up key's session_data (field
// names which). Both are algorithm-dependent data: for the spec's algorithm they must be objects
// (public_key and signatures; ciphertext, ephemeral and mac); for an algorithm the spec does not
// define, the server cannot know their format and keeps any JSON value but null, as it keeps the
// algorithm itself (sytest's Device Key Backup tests use "m.megolm_backup.v1" with strings).
func checkBackupData(algorithm, field string, data json.RawMessage) error {
	if len(data) == 0 || string(data) == "null" {
		return matrixerr.MissingParam(field + " is required")
	}
	if algorithm != megolmBackupV1 {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil || obj == nil {
		return matrixerr.BadJSON(field + " must be an object")
	}
	return nil
}

// QueryKeyBackupVersion is a version's metadata with its key count and etag.
func (u *UserAPI) QueryKeyBackupVersion(ctx context.Context, req *api.QueryKeyBackupVersionRequest) (*api.QueryKeyBackupVersionResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	b, err := u.DB.KeyBackup(ctx, local, req.Version)
	if err != nil {
		return nil, backupError(err)
	}
	return &api.QueryKeyBackupVersionResponse{KeyBackupVersion: versionOf(b)}, nil
}

func versionOf(b *storage.KeyBackup) api.KeyBackupVersion {
	return api.KeyBackupVersion{Version: b.Version, Algorithm: b.Algorithm, AuthData: b.AuthData, Count: b.Count, ETag: strconv.FormatInt(b.ETag, 10)}
}

// PerformRoomKeys stores keys in (only the current version) or deletes keys from a version.
func (u *UserAPI) PerformRoomKeys(ctx context.Context, req *api.PerformRoomKeysRequest) (*api.PerformRoomKeysResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.Version == "" {
		return nil, matrixerr.MissingParam("version is required")
	}
	var b *storage.KeyBackup
	if req.Delete {
		b, err = u.DB.DeleteRoomKeys(ctx, local, req.Version, req.RoomID, req.SessionID)
	} else {
		b, err = u.putRoomKeys(ctx, local, req)
	}
	if err != nil {
		return nil, backupError(err)
	}
	v := versionOf(b)
	return &api.PerformRoomKeysResponse{Count: v.Count, ETag: v.ETag}, nil
}

// putRoomKeys stores req's keys into its version. A version's algorithm never changes and its
// number is never reused, so the algorithm read before the store is the one of the version the
// store writes to (or the store fails: M_NOT_FOUND, M_WRONG_ROOM_KEYS_VERSION).
func (u *UserAPI) putRoomKeys(ctx context.Context, local string, req *api.PerformRoomKeysRequest) (*storage.KeyBackup, error) {
	version, err := u.DB.KeyBackup(ctx, local, req.Version)
	if err != nil {
		return nil, err
	}
	var keys []storage.RoomKey
	for roomID, sessions := range req.Keys {
		for sessionID, k := range sessions {
			if err := checkBackupData(version.Algorithm, "session_data", k.SessionData); err != nil {
				return nil, err
			}
			keys = append(keys, storage.RoomKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: k.FirstMessageIndex,
				ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified, SessionData: k.SessionData})
		}
	}
	return u.DB.PutRoomKeys(ctx, local, req.Version, keys)
}

// QueryRoomKeys reads a version's keys.
func (u *UserAPI) QueryRoomKeys(ctx context.Context, req *api.QueryRoomKeysRequest) (*api.QueryRoomKeysResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.Version == "" {
		return nil, matrixerr.MissingParam("version is required")
	}
	keys, err := u.DB.RoomKeys(ctx, local, req.Version, req.RoomID, req.SessionID)
	if err != nil {
		return nil, backupError(err)
	}
	res := &api.QueryRoomKeysResponse{Rooms: map[string]map[string]api.KeyBackupSession{}}
	for _, k := range keys {
		if res.Rooms[k.RoomID] == nil {
			res.Rooms[k.RoomID] = map[string]api.KeyBackupSession{}
		}
		res.Rooms[k.RoomID][k.SessionID] = api.KeyBackupSession{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
			IsVerified: k.IsVerified, SessionData: k.SessionData}
	}
	return res, nil
}
