package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/dendrite/internal/e2ekeys"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// signedCurve25519 is the one-time key algorithm Olm uses; its count is always reported,
// zero included, so that clients know to upload.
const signedCurve25519 = "signed_curve25519"

// maxKeysPerUpload bounds the one-time and fallback keys of one upload.
const maxKeysPerUpload = 1000

// PerformUploadKeys checks and stores a device's keys. Device keys must be a DeviceKeys
// object of the uploading user and device; one-time and fallback keys strings or KeyObjects.
// Signatures are not verified (see e2ekeys.CheckDeviceKeys): clients verify them before
// they trust a key. A change of the device keys is announced on OutputKeyChangeEvent from
// the outbox, stored with it.
func (u *UserAPI) PerformUploadKeys(ctx context.Context, req *api.PerformUploadKeysRequest) (*api.PerformUploadKeysResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if len(req.OneTimeKeys)+len(req.FallbackKeys) > maxKeysPerUpload {
		return nil, matrixerr.InvalidParam("too many keys in one upload")
	}
	up := &storage.KeyUpload{Localpart: local, DeviceID: req.DeviceID}
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		if up.DeviceKeys, err = checkDeviceKeys(req.DeviceKeys, req.UserID, req.DeviceID); err != nil {
			return nil, err
		}
	}
	if up.OneTimeKeys, err = checkOneTimeKeys(req.OneTimeKeys); err != nil {
		return nil, err
	}
	if up.FallbackKeys, err = checkOneTimeKeys(req.FallbackKeys); err != nil {
		return nil, err
	}
	if !uniqueAlgorithms(up.FallbackKeys) {
		return nil, matrixerr.InvalidParam("at most one fallback key per algorithm")
	}
	change, counts, err := u.DB.UploadKeys(ctx, up, u.deviceChange(req.UserID))
	if err != nil {
		return nil, err
	}
	if change != nil {
		u.Announce(ctx)
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	return &api.PerformUploadKeysResponse{OneTimeKeyCounts: counts}, nil
}

// checkDeviceKeys validates a DeviceKeys object and returns it without "unsigned" (which
// the server fills in on query).
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, error) {
	err := e2ekeys.CheckDeviceKeys(raw, userID, deviceID)
	switch {
	case errors.Is(err, e2ekeys.ErrMalformed):
		return nil, matrixerr.BadJSON("device_keys must be a DeviceKeys object with user_id, device_id, algorithms, keys and signatures")
	case err != nil:
		return nil, matrixerr.InvalidParam("device_keys must name the uploading user and device")
	}
	var obj map[string]json.RawMessage
	if err = json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	delete(obj, "unsigned")
	return json.Marshal(obj)
}

// checkOneTimeKeys validates "<algorithm>:<key_id>" -> key (a string, or a KeyObject).
func checkOneTimeKeys(keys map[string]json.RawMessage) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(keys))
	for id, raw := range keys {
		alg, _, ok := strings.Cut(id, ":")
		if !ok || alg == "" {
			return nil, matrixerr.InvalidParam("key IDs must be <algorithm>:<key_id>")
		}
		var str string
		var obj struct {
			Key        string                       `json:"key"`
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if json.Unmarshal(raw, &str) != nil && (json.Unmarshal(raw, &obj) != nil || obj.Key == "") {
			return nil, matrixerr.BadJSON("a key must be a string or a KeyObject")
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: id, JSON: raw})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, nil
}

func uniqueAlgorithms(keys []storage.OneTimeKey) bool {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.Algorithm] {
			return false
		}
		seen[k.Algorithm] = true
	}
	return true
}

// keyChangeOutput is the outbox record announcing out on OutputKeyChangeEvent under key
// (nil without a log); its Seq is the record's number.
func (u *UserAPI) keyChangeOutput(key string, out api.OutputKeyChangeEvent) *storage.Output {
	return u.output(api.TopicOutputKeyChangeEvent, key, func(seq int64) ([]byte, error) {
		out.Seq = seq
		return json.Marshal(out)
	})
}

// deviceChanges announces changes of userID's devices, one record each, keyed by userID.
// The records are stored with the changes (see storage.Announcement) and produced by
// Announce once they are committed; readers treat each as "this user's device list
// changed", and skip a repeated one by its number.
func (u *UserAPI) deviceChanges(userID string) storage.Announcement[[]storage.KeyChange] {
	return func(changes []storage.KeyChange) ([]*storage.Output, error) {
		outs := make([]*storage.Output, 0, len(changes))
		for _, c := range changes {
			outs = append(outs, u.keyChangeOutput(userID, api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeDeviceKeys, DeviceKeys: &api.DeviceKeyChange{
				UserID: userID, DeviceID: c.DeviceID, StreamID: c.StreamID, DisplayName: c.DisplayName, Deleted: c.Deleted, Keys: c.JSON,
			}}))
		}
		return outs, nil
	}
}

// deviceChange announces one change of userID's devices (see deviceChanges).
func (u *UserAPI) deviceChange(userID string) storage.Announcement[*storage.KeyChange] {
	all := u.deviceChanges(userID)
	return func(c *storage.KeyChange) ([]*storage.Output, error) {
		return all([]storage.KeyChange{*c})
	}
}

// QueryKeys answers POST /keys/query for local users: each user's listed devices (every
// device when none are listed) with their signed keys and unsigned.device_display_name, and
// their cross-signing keys, with the signatures req.UserID may see.
// Unknown local users get an empty map; remote users a failure for their server.
func (u *UserAPI) QueryKeys(ctx context.Context, req *api.QueryKeysRequest) (*api.QueryKeysResponse, error) {
	res := &api.QueryKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, Failures: map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	for userID, deviceIDs := range req.DeviceKeys {
		local, err := u.localpart(userID)
		var merr *matrixerr.Error
		if errors.As(err, &merr) && merr.Code == "M_NOT_FOUND" {
			_, server, _ := strings.Cut(userID, ":")
			res.Failures[server] = json.RawMessage(`{"status":503,"message":"remote key queries are not supported"}`)
			continue
		}
		if err != nil {
			continue // not a user ID: nothing to answer for it
		}
		sigs, err := u.DB.KeySignatures(ctx, userID)
		if err != nil {
			return nil, err
		}
		devs, err := u.localDeviceKeys(ctx, local, deviceIDs)
		if err != nil {
			return nil, err
		}
		for id, raw := range devs {
			if devs[id], err = withSignatures(raw, userID, req.UserID, id, sigs); err != nil {
				return nil, err
			}
		}
		res.DeviceKeys[userID] = devs
		if err = u.addCrossSigning(ctx, res, userID, local, req.UserID, sigs); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// localDeviceKeys is one local user's device keys with their display names.
func (u *UserAPI) localDeviceKeys(ctx context.Context, local string, deviceIDs []string) (map[string]json.RawMessage, error) {
	keys, err := u.DB.DeviceKeys(ctx, local, deviceIDs)
	if err != nil || len(keys) == 0 {
		return map[string]json.RawMessage{}, err
	}
	devs, err := u.DB.Devices(ctx, local)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(devs))
	for _, d := range devs {
		names[d.DeviceID] = d.DisplayName
	}
	out := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		var obj map[string]json.RawMessage
		if err = json.Unmarshal(k.JSON, &obj); err != nil {
			return nil, fmt.Errorf("stored device keys of %s are not valid: %w", k.DeviceID, err)
		}
		unsigned := map[string]string{}
		if name := names[k.DeviceID]; name != "" {
			unsigned["device_display_name"] = name
		}
		if obj["unsigned"], err = json.Marshal(unsigned); err != nil {
			return nil, err
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out[k.DeviceID] = b
	}
	return out, nil
}

// PerformClaimKeys hands out one key per requested local device: a one-time key, which no
// other claim gets, else the device's fallback key. Devices without either, unknown
// devices and unknown users are left out; remote users get a failure for their server.
func (u *UserAPI) PerformClaimKeys(ctx context.Context, req *api.PerformClaimKeysRequest) (*api.PerformClaimKeysResponse, error) {
	res := &api.PerformClaimKeysResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}, Failures: map[string]json.RawMessage{}}
	var claims []storage.KeyClaim
	owners := map[string]string{} // localpart -> user ID
	for userID, devices := range req.OneTimeKeys {
		local, err := u.localpart(userID)
		var merr *matrixerr.Error
		if errors.As(err, &merr) && merr.Code == "M_NOT_FOUND" {
			_, server, _ := strings.Cut(userID, ":")
			res.Failures[server] = json.RawMessage(`{"status":503,"message":"remote key claims are not supported"}`)
			continue
		}
		if err != nil {
			continue
		}
		owners[local] = userID
		for deviceID, alg := range devices {
			claims = append(claims, storage.KeyClaim{Localpart: local, DeviceID: deviceID, Algorithm: alg})
		}
	}
	if len(claims) == 0 {
		return res, nil
	}
	// One order for every request, so that concurrent claims lock keys in the same order.
	sort.Slice(claims, func(i, j int) bool {
		a, b := claims[i], claims[j]
		if a.Localpart != b.Localpart {
			return a.Localpart < b.Localpart
		}
		return a.DeviceID < b.DeviceID
	})
	keys, err := u.DB.ClaimKeys(ctx, claims)
	if err != nil {
		return nil, err
	}
	for i, key := range keys {
		if key == nil {
			continue
		}
		userID := owners[claims[i].Localpart]
		if res.OneTimeKeys[userID] == nil {
			res.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
		}
		res.OneTimeKeys[userID][claims[i].DeviceID] = map[string]json.RawMessage{key.KeyID: key.JSON}
	}
	return res, nil
}

// QueryOneTimeKeyCounts is a device's one-time key counts (signed_curve25519 always
// present) and the algorithms of its unused fallback keys.
func (u *UserAPI) QueryOneTimeKeyCounts(ctx context.Context, req *api.QueryOneTimeKeyCountsRequest) (*api.QueryOneTimeKeyCountsResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	counts, unused, err := u.DB.KeyCounts(ctx, local, req.DeviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	return &api.QueryOneTimeKeyCountsResponse{OneTimeKeyCounts: counts, UnusedFallbackKeyAlgorithms: unused}, nil
}
