package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// backupRoutes are the server-side key backup endpoints (the keys live in the userapi).
func (k *Keys) backupRoutes(auth func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc) []httputil.Route {
	get, put, post, del := http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete
	var routes []httputil.Route
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomID}", "/room_keys/keys/{roomID}/{sessionID}"} {
		routes = append(routes,
			httputil.Route{Name: "putRoomKeys", Method: put, Path: p, Handler: auth(k.PutRoomKeys)},
			httputil.Route{Name: "getRoomKeys", Method: get, Path: p, Handler: auth(k.GetRoomKeys)},
			httputil.Route{Name: "deleteRoomKeys", Method: del, Path: p, Handler: auth(k.DeleteRoomKeys)},
		)
	}
	return append(routes,
		httputil.Route{Name: "createKeyBackup", Method: post, Path: "/room_keys/version", Handler: auth(k.CreateKeyBackup)},
		httputil.Route{Name: "getKeyBackup", Method: get, Path: "/room_keys/version", Handler: auth(k.GetKeyBackup)},
		httputil.Route{Name: "getKeyBackup", Method: get, Path: "/room_keys/version/{version}", Handler: auth(k.GetKeyBackup)},
		httputil.Route{Name: "updateKeyBackup", Method: put, Path: "/room_keys/version/{version}", Handler: auth(k.UpdateKeyBackup)},
		httputil.Route{Name: "deleteKeyBackup", Method: del, Path: "/room_keys/version/{version}", Handler: auth(k.DeleteKeyBackup)},
	)
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

// CreateKeyBackup is POST /room_keys/version.
func (k *Keys) CreateKeyBackup(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body backupVersionBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	res, err := k.UserAPI.PerformKeyBackupVersion(r.Context(), &uapi.PerformKeyBackupVersionRequest{UserID: dev.UserID, Algorithm: body.Algorithm, AuthData: body.AuthData})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"version": res.Version}), nil
}

// GetKeyBackup is GET /room_keys/version[/{version}] (without a version: the latest).
func (k *Keys) GetKeyBackup(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	res, err := k.UserAPI.QueryKeyBackupVersion(r.Context(), &uapi.QueryKeyBackupVersionRequest{UserID: dev.UserID, Version: httputil.Vars(r)["version"]})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res.KeyBackupVersion), nil
}

// UpdateKeyBackup is PUT /room_keys/version/{version}: only auth_data changes.
func (k *Keys) UpdateKeyBackup(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body backupVersionBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	version := httputil.Vars(r)["version"]
	if body.Version != "" && body.Version != version {
		return httputil.Response{}, matrixerr.InvalidParam("the version in the body is not the one in the path")
	}
	_, err := k.UserAPI.PerformKeyBackupVersion(r.Context(), &uapi.PerformKeyBackupVersionRequest{UserID: dev.UserID, Version: version,
		Algorithm: body.Algorithm, AuthData: body.AuthData})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// DeleteKeyBackup is DELETE /room_keys/version/{version}.
func (k *Keys) DeleteKeyBackup(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	_, err := k.UserAPI.PerformKeyBackupVersion(r.Context(), &uapi.PerformKeyBackupVersionRequest{UserID: dev.UserID, Version: httputil.Vars(r)["version"], Delete: true})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// roomKeysQuery is the version query parameter and the path's room and session IDs.
func roomKeysQuery(r *http.Request) (version, roomID, sessionID string, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", matrixerr.MissingParam("version is required")
	}
	v := httputil.Vars(r)
	return version, v["roomID"], v["sessionID"], nil
}

type roomSessions struct {
	Sessions map[string]uapi.KeyBackupSession `json:"sessions"`
}

// PutRoomKeys is PUT /room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (k *Keys) PutRoomKeys(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	version, roomID, sessionID, err := roomKeysQuery(r)
	if err != nil {
		return httputil.Response{}, err
	}
	keys := map[string]map[string]uapi.KeyBackupSession{}
	switch {
	case sessionID != "":
		var body uapi.KeyBackupSession
		if err = httputil.DecodeJSON(r, &body); err != nil {
			return httputil.Response{}, err
		}
		keys[roomID] = map[string]uapi.KeyBackupSession{sessionID: body}
	case roomID != "":
		var body roomSessions
		if err = httputil.DecodeJSON(r, &body); err != nil {
			return httputil.Response{}, err
		}
		keys[roomID] = body.Sessions
	default:
		var body struct {
			Rooms map[string]roomSessions `json:"rooms"`
		}
		if err = httputil.DecodeJSON(r, &body); err != nil {
			return httputil.Response{}, err
		}
		for room, s := range body.Rooms {
			keys[room] = s.Sessions
		}
	}
	res, err := k.UserAPI.PerformRoomKeys(r.Context(), &uapi.PerformRoomKeysRequest{UserID: dev.UserID, Version: version, Keys: keys})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// GetRoomKeys is GET /room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (k *Keys) GetRoomKeys(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	version, roomID, sessionID, err := roomKeysQuery(r)
	if err != nil {
		return httputil.Response{}, err
	}
	res, err := k.UserAPI.QueryRoomKeys(r.Context(), &uapi.QueryRoomKeysRequest{UserID: dev.UserID, Version: version, RoomID: roomID, SessionID: sessionID})
	if err != nil {
		return httputil.Response{}, err
	}
	switch {
	case sessionID != "":
		s, ok := res.Rooms[roomID][sessionID]
		if !ok {
			return httputil.Response{}, matrixerr.NotFound("no such key")
		}
		return httputil.OK(s), nil
	case roomID != "":
		sessions := res.Rooms[roomID]
		if sessions == nil {
			sessions = map[string]uapi.KeyBackupSession{}
		}
		return httputil.OK(roomSessions{Sessions: sessions}), nil
	}
	rooms := map[string]roomSessions{}
	for room, s := range res.Rooms {
		rooms[room] = roomSessions{Sessions: s}
	}
	return httputil.OK(map[string]any{"rooms": rooms}), nil
}

// DeleteRoomKeys is DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (k *Keys) DeleteRoomKeys(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	version, roomID, sessionID, err := roomKeysQuery(r)
	if err != nil {
		return httputil.Response{}, err
	}
	res, err := k.UserAPI.PerformRoomKeys(r.Context(), &uapi.PerformRoomKeysRequest{UserID: dev.UserID, Version: version, Delete: true,
		RoomID: roomID, SessionID: sessionID})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
