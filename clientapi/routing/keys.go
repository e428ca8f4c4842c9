package routing

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Keys serves the end-to-end encryption key endpoints and the server-side key backup; the
// keys live in the userapi.
// Replacing cross-signing keys runs the password stage of Accounts.
type Keys struct {
	ServerName string
	UserAPI    uapi.ClientUserAPI
	Accounts   *Accounts
	// Federation asks other servers for their users' keys; nil answers with a failure
	// for every other server.
	Federation fapi.ClientFederationAPI
}

// defaultRemoteKeyTimeout and maxRemoteKeyTimeout bound how long /keys/query and
// /keys/claim wait for other servers (the request's timeout, in milliseconds, within).
const (
	defaultRemoteKeyTimeout = 10 * time.Second
	maxRemoteKeyTimeout     = 30 * time.Second
)

// remoteTimeout is the request's timeout field, defaulted and clamped.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultRemoteKeyTimeout
	}
	return min(time.Duration(min(*ms, int64(maxRemoteKeyTimeout/time.Millisecond)))*time.Millisecond, maxRemoteKeyTimeout)
}

// serverOf is the server part of a user ID ("" for a malformed one).
func serverOf(userID string) string {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return ""
	}
	return string(uid.Domain())
}

// unreachable is the failures entry of a server that could not be asked.
var unreachable = json.RawMessage(`{"status":503,"message":"the server could not be reached"}`)

// fanOut runs ask for every server at once, within timeout, and returns the answers of
// the servers that answered without error.
func fanOut[T any](ctx context.Context, servers []string, timeout time.Duration, ask func(ctx context.Context, server string) (T, error)) map[string]T {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]T{}
	for _, server := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := ask(ctx, server)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			out[server] = res
		}()
	}
	wg.Wait()
	return out
}

// Routes lists the key endpoints with their absolute paths.
func (k *Keys) Routes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(k.UserAPI), h)
	}
	// The guest access module opens upload, query and claim to guests (they may encrypt).
	guest := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(GuestDeviceLookup(k.UserAPI), h)
	}
	post := http.MethodPost
	crossSigning := []httputil.Route{
		{Name: "uploadDeviceSigningKeys", Method: post, Path: "/keys/device_signing/upload", Handler: auth(k.UploadDeviceSigning)},
		{Name: "uploadSignatures", Method: post, Path: "/keys/signatures/upload", Handler: auth(k.UploadSignatures)},
	}
	routes := clientPaths(append(append([]httputil.Route{
		{Name: "uploadKeys", Method: post, Path: "/keys/upload", Handler: guest(k.Upload)},
		{Name: "queryKeys", Method: post, Path: "/keys/query", Handler: guest(k.Query)},
		{Name: "claimKeys", Method: post, Path: "/keys/claim", Handler: guest(k.Claim)},
	}, crossSigning...), k.backupRoutes(auth)...))
	// NOTSPEC: cross-signing (MSC1756) was served under /unstable before Matrix 1.1 made it
	// /v3 (https://spec.matrix.org/v1.1/client-server-api/#cross-signing); clients of that
	// time and sytest still use those paths, which Synapse serves too.
	for _, r := range crossSigning {
		r.Path = "/_matrix/client/unstable" + r.Path
		routes = append(routes, r)
	}
	return routes
}

// askServers asks every server in remote (a map keyed by server name) at once through
// ask, within timeout; a server missing from the answer failed or could not be asked.
func askServers[V, T any](ctx context.Context, k *Keys, remote map[string]V, timeout time.Duration, ask func(ctx context.Context, server string) (T, error)) map[string]T {
	if k.Federation == nil || len(remote) == 0 {
		return map[string]T{}
	}
	return fanOut(ctx, slices.Collect(maps.Keys(remote)), timeout, ask)
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

// Query is POST /keys/query: local users' keys, and other servers' users' keys from the
// userapi's cache of their device lists (which it refreshes from their servers).
func (k *Keys) Query(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.DeviceKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("device_keys is required")
	}
	local, remote := splitByServer(k.ServerName, body.DeviceKeys)
	res, err := k.UserAPI.QueryKeys(r.Context(), &uapi.QueryKeysRequest{UserID: dev.UserID, DeviceKeys: local})
	if err != nil {
		return httputil.Response{}, err
	}
	others := map[string][]string{}
	for _, users := range remote {
		maps.Copy(others, users)
	}
	if len(others) > 0 {
		q, err := k.UserAPI.QueryRemoteKeys(r.Context(), &uapi.QueryRemoteKeysRequest{DeviceKeys: others, TimeoutMS: remoteTimeout(body.Timeout).Milliseconds(), UserID: dev.UserID})
		if err != nil {
			return httputil.Response{}, err
		}
		maps.Copy(res.DeviceKeys, q.DeviceKeys)
		maps.Copy(res.MasterKeys, q.MasterKeys)
		maps.Copy(res.SelfSigningKeys, q.SelfSigningKeys)
		maps.Copy(res.Failures, q.Failures)
	}
	return httputil.OK(res), nil
}

// splitByServer splits a request keyed by user ID into this server's users (own) and the
// other servers' users, keyed by server name; a user ID without a server is left out.
func splitByServer[V any](own string, byUser map[string]V) (map[string]V, map[string]map[string]V) {
	local, remote := map[string]V{}, map[string]map[string]V{}
	for userID, v := range byUser {
		switch server := serverOf(userID); server {
		case "":
		case own:
			local[userID] = v
		default:
			if remote[server] == nil {
				remote[server] = map[string]V{}
			}
			remote[server][userID] = v
		}
	}
	return local, remote
}

// Claim is POST /keys/claim.
func (k *Keys) Claim(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.OneTimeKeys == nil {
		return httputil.Response{}, matrixerr.MissingParam("one_time_keys is required")
	}
	local, remote := splitByServer(k.ServerName, body.OneTimeKeys)
	res, err := k.UserAPI.PerformClaimKeys(r.Context(), &uapi.PerformClaimKeysRequest{OneTimeKeys: local})
	if err != nil {
		return httputil.Response{}, err
	}
	answers := askServers(r.Context(), k, remote, remoteTimeout(body.Timeout), func(ctx context.Context, server string) (*fapi.ClaimRemoteKeysResponse, error) {
		return k.Federation.ClaimRemoteKeys(ctx, &fapi.ClaimRemoteKeysRequest{Server: server, OneTimeKeys: remote[server]})
	})
	for server := range remote {
		a, ok := answers[server]
		if !ok {
			res.Failures[server] = unreachable
			continue
		}
		maps.Copy(res.OneTimeKeys, a.OneTimeKeys)
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
