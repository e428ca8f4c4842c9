package routing

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Keys serves the end-to-end encryption key endpoints; the keys live in the userapi.
// Replacing cross-signing keys runs the password stage of Accounts.
type Keys struct {
	UserAPI  uapi.ClientUserAPI
	Accounts *Accounts
}

// Routes lists the key endpoints with their absolute paths.
func (k *Keys) Routes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(k.UserAPI), h)
	}
	post := http.MethodPost
	return clientPaths([]httputil.Route{
		{Name: "uploadKeys", Method: post, Path: "/keys/upload", Handler: auth(k.Upload)},
		{Name: "queryKeys", Method: post, Path: "/keys/query", Handler: auth(k.Query)},
		{Name: "claimKeys", Method: post, Path: "/keys/claim", Handler: auth(k.Claim)},
		{Name: "uploadDeviceSigningKeys", Method: post, Path: "/keys/device_signing/upload", Handler: auth(k.UploadDeviceSigning)},
		{Name: "uploadSignatures", Method: post, Path: "/keys/signatures/upload", Handler: auth(k.UploadSignatures)},
	})
}

// Upload is POST /keys/upload: the calling device's keys.
func (k *Keys) Upload(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	res, err := k.UserAPI.PerformUploadKeys(r.Context(), &uapi.PerformUploadKeysRequest{UserID: dev.UserID, DeviceID: dev.DeviceID,
		DeviceKeys: body.DeviceKeys, OneTimeKeys: body.OneTimeKeys, FallbackKeys: body.FallbackKeys})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"one_time_key_counts": res.OneTimeKeyCounts}), nil
}

// Query is POST /keys/query.
func (k *Keys) Query(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.DeviceKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("device_keys is required")
	}
	res, err := k.UserAPI.QueryKeys(r.Context(), &uapi.QueryKeysRequest{UserID: dev.UserID, DeviceKeys: body.DeviceKeys})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// Claim is POST /keys/claim.
func (k *Keys) Claim(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.OneTimeKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("one_time_keys is required")
	}
	res, err := k.UserAPI.PerformClaimKeys(r.Context(), &uapi.PerformClaimKeysRequest{OneTimeKeys: body.OneTimeKeys})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"one_time_keys": res.OneTimeKeys, "failures": res.Failures}), nil
}

// UploadDeviceSigning is POST /keys/device_signing/upload. A first upload, or one that
// changes nothing, needs no authentication (the spec's exceptions); replacing keys runs
// User-Interactive Authentication with the password.
func (k *Keys) UploadDeviceSigning(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
		UserSigningKey json.RawMessage `json:"user_signing_key"`
		Auth           json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	req := &uapi.PerformUploadDeviceSigningKeysRequest{UserID: dev.UserID, MasterKey: body.MasterKey,
		SelfSigningKey: body.SelfSigningKey, UserSigningKey: body.UserSigningKey}
	_, err := k.UserAPI.PerformUploadDeviceSigningKeys(r.Context(), req)
	var merr *matrixerr.Error
	if errors.As(err, &merr) && merr.Code == "M_UNAUTHORIZED" {
		if challenge, err := k.Accounts.requirePassword(r, dev, body.Auth); challenge != nil || err != nil {
			return deref(challenge), err
		}
		req.Authenticated = true
		_, err = k.UserAPI.PerformUploadDeviceSigningKeys(r.Context(), req)
	}
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// UploadSignatures is POST /keys/signatures/upload.
func (k *Keys) UploadSignatures(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	res, err := k.UserAPI.PerformUploadSignatures(r.Context(), &uapi.PerformUploadSignaturesRequest{UserID: dev.UserID, Signatures: body})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"failures": res.Failures}), nil
}
