package routing

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// QueryDirectory is GET /_matrix/federation/v1/query/directory?room_alias=...: the room a
// local alias names and the servers joined to it (this one first).
func (rt *Routing) QueryDirectory(r *http.Request, _ *fclient.FederationRequest) (httputil.Response, error) {
	raw := r.URL.Query().Get("room_alias")
	if raw == "" {
		return httputil.Response{}, matrixerr.MissingParam("room_alias is required")
	}
	alias, err := roomalias.Parse(raw)
	if err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("room_alias is not a valid room alias")
	}
	if alias.Server != rt.ServerName {
		return httputil.Response{}, matrixerr.NotFound("room alias not found: not an alias of this server")
	}
	res, err := rt.Directory.QueryRoomAlias(r.Context(), &rsapi.QueryRoomAliasRequest{Alias: raw})
	if err != nil {
		return httputil.Response{}, err
	}
	if res.RoomID == "" {
		return httputil.Response{}, matrixerr.NotFound("room alias not found")
	}
	servers, err := rt.joinedServers(r, res.RoomID)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(fclient.RespDirectory{RoomID: res.RoomID, Servers: servers}), nil
}

// joinedServers are this server and the servers with a joined member in the room. It
// reads the room's whole current state: the spec's answer needs every server.
func (rt *Routing) joinedServers(r *http.Request, roomID string) ([]spec.ServerName, error) {
	cur, err := rt.Rooms.QueryCurrentState(r.Context(), &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return nil, err
	}
	servers := []spec.ServerName{rt.ServerName}
	for _, e := range cur.StateEvents {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil {
			continue
		}
		if m, err := e.Membership(); err != nil || m != spec.Join {
			continue
		}
		if uid, err := spec.NewUserID(*e.StateKey(), true); err == nil && !slices.Contains(servers, uid.Domain()) {
			servers = append(servers, uid.Domain())
		}
	}
	return servers, nil
}

// PublicRooms is GET /_matrix/federation/v1/publicRooms (limit, since in the query).
// third_party_instance_id lists an application service network's directory instead of the
// main one; include_all_networks adds every network's rooms to the main one.
func (rt *Routing) PublicRooms(r *http.Request, _ *fclient.FederationRequest) (httputil.Response, error) {
	req, err := rsapi.ParsePublicRoomsQuery(r.URL.Query())
	if err != nil {
		return httputil.Response{}, err
	}
	return rt.listPublicRooms(r, req)
}

// PublicRoomsFiltered is POST /_matrix/federation/v1/publicRooms (limit, since and
// filter.generic_search_term in the body).
func (rt *Routing) PublicRoomsFiltered(r *http.Request, fr *fclient.FederationRequest) (httputil.Response, error) {
	var body rsapi.PublicRoomsBody
	if len(fr.Content()) > 0 {
		if err := json.Unmarshal(fr.Content(), &body); err != nil {
			return httputil.Response{}, matrixerr.BadJSON("the body is not a public rooms request")
		}
	}
	return rt.listPublicRooms(r, body.Request())
}

func (rt *Routing) listPublicRooms(r *http.Request, req rsapi.PublicRoomsRequest) (httputil.Response, error) {
	res, err := rsapi.ListPublicRooms(r.Context(), rt.Directory, req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
