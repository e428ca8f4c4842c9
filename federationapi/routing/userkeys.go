package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// isLocalUser reports whether userID is a valid user ID of this server.
func (rt *Routing) isLocalUser(userID string) bool {
	uid, err := spec.NewUserID(userID, true)
	return err == nil && uid.Domain() == rt.ServerName
}

// UserKeysQuery is POST /_matrix/federation/v1/user/keys/query: our users' device keys and
// master and self-signing keys (never user-signing keys, never others' signatures). Users
// of other servers are left out.
func (rt *Routing) UserKeysQuery(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("the body is not a key query")
	}
	if body.DeviceKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("device_keys is required")
	}
	local := map[string][]string{}
	for userID, devices := range body.DeviceKeys {
		if rt.isLocalUser(userID) {
			local[userID] = devices
		}
	}
	res, err := rt.Users.QueryKeys(r.Context(), &uapi.QueryKeysRequest{DeviceKeys: local})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"device_keys": res.DeviceKeys, "master_keys": res.MasterKeys, "self_signing_keys": res.SelfSigningKeys}), nil
}

// UserKeysClaim is POST /_matrix/federation/v1/user/keys/claim: one key per device of our
// users, as /keys/claim.
func (rt *Routing) UserKeysClaim(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("the body is not a key claim")
	}
	if body.OneTimeKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("one_time_keys is required")
	}
	local := map[string]map[string]string{}
	for userID, devices := range body.OneTimeKeys {
		if rt.isLocalUser(userID) {
			local[userID] = devices
		}
	}
	res, err := rt.Users.PerformClaimKeys(r.Context(), &uapi.PerformClaimKeysRequest{OneTimeKeys: local})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"one_time_keys": res.OneTimeKeys}), nil
}

// UserDevices is GET /_matrix/federation/v1/user/devices/{userId}: a local user's device
// list with its stream ID, for another server that tracks the user.
func (rt *Routing) UserDevices(r *http.Request, _ *fclient.FederationRequest) (httputil.Response, error) {
	userID := httputil.Vars(r)["userID"]
	if !rt.isLocalUser(userID) {
		return httputil.Response{}, matrixerr.NotFound("not a user of this server")
	}
	res, err := rt.Users.QueryDeviceList(r.Context(), &uapi.QueryDeviceListRequest{UserID: userID})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
