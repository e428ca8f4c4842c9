package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Keys serves the end-to-end encryption key endpoints; the keys live in the userapi.
type Keys struct {
	UserAPI uapi.ClientUserAPI
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
func (k *Keys) Query(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.DeviceKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("device_keys is required")
	}
	res, err := k.UserAPI.QueryKeys(r.Context(), &uapi.QueryKeysRequest{DeviceKeys: body.DeviceKeys})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"device_keys": res.DeviceKeys, "failures": res.Failures}), nil
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
