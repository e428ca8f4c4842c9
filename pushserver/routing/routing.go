// Package routing is the push server's client endpoints: GET /pushers,
// POST /pushers/set and GET /notifications.
package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Limits of the spec for pusher fields.
const (
	maxPushKeyBytes = 512
	maxAppIDChars   = 64
	maxFieldChars   = 1024
)

// Handlers serves the push server's client routes.
type Handlers struct {
	DB storage.Database
	// Rooms gives /notifications the events.
	Rooms        rsapi.QueryAPI
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
}

// Routes lists the endpoints with their absolute paths.
func (h *Handlers) Routes() []httputil.Route {
	auth := func(f func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(h.DeviceLookup, f)
	}
	var out []httputil.Route
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		out = append(out,
			httputil.Route{Name: "getPushers", Method: http.MethodGet, Path: prefix + "/pushers", Handler: auth(h.GetPushers)},
			httputil.Route{Name: "setPusher", Method: http.MethodPost, Path: prefix + "/pushers/set", Handler: auth(h.SetPusher)},
			httputil.Route{Name: "getNotifications", Method: http.MethodGet, Path: prefix + "/notifications", Handler: auth(h.GetNotifications)},
		)
	}
	return out
}

// GetPushers is GET /pushers.
func (h *Handlers) GetPushers(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	ps, err := h.DB.Pushers(r.Context(), dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	out := make([]api.Pusher, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Pusher)
	}
	return httputil.OK(map[string][]api.Pusher{"pushers": out}), nil
}

// setPusherBody is POST /pushers/set's body; Kind is null to delete.
type setPusherBody struct {
	api.Pusher
	Kind   *string `json:"kind"`
	Append bool    `json:"append"`
}

// SetPusher is POST /pushers/set: add or replace a pusher of the caller, or delete it
// with "kind": null.
func (h *Handlers) SetPusher(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var raw map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &raw); err != nil {
		return httputil.Response{}, err
	}
	whole, err := json.Marshal(raw)
	if err != nil {
		return httputil.Response{}, err
	}
	var body setPusherBody
	if json.Unmarshal(whole, &body) != nil {
		return httputil.Response{}, matrixerr.BadJSON("a pusher's fields are strings, data an object and append a boolean")
	}
	if body.PushKey == "" || body.AppID == "" {
		return httputil.Response{}, matrixerr.MissingParam("pushkey and app_id are required")
	}
	if len(body.PushKey) > maxPushKeyBytes || utf8.RuneCountInString(body.AppID) > maxAppIDChars {
		return httputil.Response{}, matrixerr.InvalidParam("pushkey is at most 512 bytes and app_id at most 64 characters")
	}
	if _, present := raw["kind"]; present && body.Kind == nil {
		if err := h.DB.DeletePusher(r.Context(), dev.UserID, body.AppID, body.PushKey); err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(struct{}{}), nil
	}
	p, err := checkPusher(&body)
	if err != nil {
		return httputil.Response{}, err
	}
	err = h.DB.UpsertPusher(r.Context(), &storage.StoredPusher{Pusher: *p, UserID: dev.UserID, DeviceID: dev.DeviceID}, body.Append)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// checkPusher checks the fields of a pusher to add: every required field present, an
// http kind, and data.url an http(s) URL with a host ending in the notify path.
func checkPusher(b *setPusherBody) (*api.Pusher, error) {
	if b.Kind == nil || b.AppDisplayName == "" || b.DeviceDisplayName == "" || b.Lang == "" || len(b.Data) == 0 {
		return nil, matrixerr.MissingParam("kind, app_display_name, device_display_name, lang and data are required")
	}
	for _, f := range []string{b.AppDisplayName, b.DeviceDisplayName, b.Lang, b.ProfileTag} {
		if utf8.RuneCountInString(f) > maxFieldChars {
			return nil, matrixerr.InvalidParam("a pusher field is too long")
		}
	}
	if *b.Kind != api.PusherKindHTTP {
		return nil, matrixerr.InvalidParam("only http pushers are supported")
	}
	var data struct {
		URL    *string `json:"url"`
		Format *string `json:"format"`
	}
	if json.Unmarshal(b.Data, &data) != nil {
		return nil, matrixerr.BadJSON("data must be an object")
	}
	if data.URL == nil {
		return nil, matrixerr.MissingParam("an http pusher needs data.url")
	}
	u, err := url.Parse(*data.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		!strings.HasSuffix(u.Path, api.NotifyPath) {
		return nil, matrixerr.InvalidParam("data.url must be an http(s) URL ending with " + api.NotifyPath)
	}
	p := b.Pusher
	p.Kind = *b.Kind
	return &p, nil
}
