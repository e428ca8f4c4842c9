package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// mRoomCanonicalAlias is the state event naming a room's published aliases.
const mRoomCanonicalAlias = "m.room.canonical_alias"

// Directory visibilities.
const (
	visibilityPublic  = "public"
	visibilityPrivate = "private"
)

// directoryRoutes are the room alias and published room directory endpoints. Resolving an
// alias, a room's visibility and GET /publicRooms of this server need no access token (the
// spec gives them no security requirement); another server's directory does (PublicRooms).
func (rm *Rooms) directoryRoutes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(rm.UserAPI), h)
	}
	return []httputil.Route{
		{Name: "getRoomAlias", Method: http.MethodGet, Path: "/directory/room/{roomAlias}", Handler: rm.GetRoomAlias},
		{Name: "setRoomAlias", Method: http.MethodPut, Path: "/directory/room/{roomAlias}", Handler: auth(rm.SetRoomAlias)},
		{Name: "deleteRoomAlias", Method: http.MethodDelete, Path: "/directory/room/{roomAlias}", Handler: auth(rm.DeleteRoomAlias)},
		{Name: "roomAliases", Method: http.MethodGet, Path: "/rooms/{roomID}/aliases", Handler: auth(rm.RoomAliases)},
		{Name: "getRoomVisibility", Method: http.MethodGet, Path: "/directory/list/room/{roomID}", Handler: rm.GetRoomVisibility},
		{Name: "setRoomVisibility", Method: http.MethodPut, Path: "/directory/list/room/{roomID}", Handler: auth(rm.SetRoomVisibility)},
		{Name: "publicRooms", Method: http.MethodGet, Path: "/publicRooms", Handler: rm.PublicRooms},
		{Name: "publicRoomsFiltered", Method: http.MethodPost, Path: "/publicRooms", Handler: auth(rm.PublicRoomsFiltered)},
	}
}

// aliasVar returns the parsed roomAlias path variable; local requires an alias of this
// server. Both failures are 400 M_INVALID_PARAM, as the spec says.
func (rm *Rooms) aliasVar(r *http.Request, local bool) (roomalias.Alias, error) {
	a, err := roomalias.Parse(httputil.Vars(r)["roomAlias"])
	if err != nil {
		return roomalias.Alias{}, matrixerr.InvalidParam("room alias invalid")
	}
	if local && a.Server != rm.ServerName {
		return roomalias.Alias{}, matrixerr.InvalidParam("room alias is not of this server")
	}
	return a, nil
}

// GetRoomAlias is GET /directory/room/{roomAlias}: a local alias from the roomserver, any
// other through the alias's server.
func (rm *Rooms) GetRoomAlias(r *http.Request) (httputil.Response, error) {
	a, err := rm.aliasVar(r, false)
	if err != nil {
		return httputil.Response{}, err
	}
	roomID, servers, err := rm.resolveAlias(r.Context(), a)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"room_id": roomID, "servers": servers}), nil
}

// resolveAlias returns the alias's room and servers to join it through.
func (rm *Rooms) resolveAlias(ctx context.Context, a roomalias.Alias) (string, []string, error) {
	if a.Server != rm.ServerName {
		if rm.Federation == nil {
			return "", nil, matrixerr.NotFound("room alias not found: " + a.String())
		}
		res, err := rm.Federation.QueryRoomAlias(ctx, &fapi.QueryRoomAliasRequest{Alias: a.String()})
		if err != nil {
			return "", nil, err
		}
		return res.RoomID, res.Servers, nil
	}
	res, err := rm.RSAPI.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: a.String()})
	if err != nil {
		return "", nil, err
	}
	if res.RoomID == "" {
		// An application service may provide the alias on demand: ask it, then look again.
		created, err := rm.askAppServiceForAlias(ctx, a.String())
		if err != nil {
			return "", nil, err
		}
		if !created {
			return "", nil, matrixerr.NotFound("room alias not found: " + a.String())
		}
		if res, err = rm.RSAPI.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: a.String()}); err != nil {
			return "", nil, err
		}
		if res.RoomID == "" {
			return "", nil, matrixerr.NotFound("room alias not found: " + a.String())
		}
	}
	servers, err := rm.joinedServers(ctx, res.RoomID)
	if err != nil {
		return "", nil, err
	}
	return res.RoomID, servers, nil
}

// joinedServers are this server and the servers with a joined member in the room.
func (rm *Rooms) joinedServers(ctx context.Context, roomID string) ([]string, error) {
	servers := []string{string(rm.ServerName)}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return nil, err
	}
	for _, e := range cur.StateEvents {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil {
			continue
		}
		if m, err := e.Membership(); err != nil || m != spec.Join {
			continue
		}
		if uid, err := spec.NewUserID(*e.StateKey(), true); err == nil && !slices.Contains(servers, string(uid.Domain())) {
			servers = append(servers, string(uid.Domain()))
		}
	}
	return servers, nil
}

// SetRoomAlias is PUT /directory/room/{roomAlias}: the user must be joined to the room. An
// alias that exists is 409, even for the same room.
func (rm *Rooms) SetRoomAlias(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	a, err := rm.aliasVar(r, true)
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if _, err = spec.NewRoomID(body.RoomID); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("room_id must be a room ID")
	}
	// An application service manages the aliases of its namespace without being in the room.
	if as := rm.AppServices.AppServiceByID(dev.AppServiceID); as == nil || !as.OwnsAlias(a.String()) {
		if err = rm.requireJoined(r.Context(), body.RoomID, dev.UserID); err != nil {
			return httputil.Response{}, err
		}
	}
	return httputil.OK(struct{}{}), rm.createAlias(r.Context(), a, body.RoomID, dev, matrixerr.Conflict)
}

// createAlias stores a new alias, failing with taken(message) when it exists and with
// M_EXCLUSIVE when it is in an application service's exclusive namespace and dev is not
// that service.
func (rm *Rooms) createAlias(ctx context.Context, a roomalias.Alias, roomID string, dev *uapi.Device, taken func(string) *matrixerr.Error) error {
	if as := rm.AppServices.ExclusiveAlias(a.String()); as != nil && as.ID != dev.AppServiceID {
		return matrixerr.Exclusive("room alias " + a.String() + " is reserved by an application service")
	}
	res, err := rm.RSAPI.PerformSetRoomAlias(ctx, &rsapi.PerformSetRoomAliasRequest{Alias: a.String(), RoomID: roomID, Creator: dev.UserID})
	if err != nil {
		return err
	}
	if !res.Created {
		return taken("room alias " + a.String() + " already exists")
	}
	return nil
}

// DeleteRoomAlias is DELETE /directory/room/{roomAlias}: by its creator, or by a member of
// the room allowed to change its m.room.canonical_alias.
func (rm *Rooms) DeleteRoomAlias(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	a, err := rm.aliasVar(r, true)
	if err != nil {
		return httputil.Response{}, err
	}
	ctx := r.Context()
	res, err := rm.RSAPI.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: a.String()})
	if err != nil {
		return httputil.Response{}, err
	}
	if res.RoomID == "" {
		return httputil.Response{}, matrixerr.NotFound("room alias not found: " + a.String())
	}
	if res.Creator != dev.UserID {
		ok, err := rm.mayEditDirectory(ctx, res.RoomID, dev.UserID)
		if err != nil {
			return httputil.Response{}, err
		}
		if !ok {
			return httputil.Response{}, matrixerr.Forbidden("only the alias's creator or a room moderator may delete it")
		}
	}
	removed, err := rm.RSAPI.PerformRemoveRoomAlias(ctx, &rsapi.PerformRemoveRoomAliasRequest{Alias: a.String()})
	if err != nil {
		return httputil.Response{}, err
	}
	if !removed.Removed {
		return httputil.Response{}, matrixerr.NotFound("room alias not found: " + a.String())
	}
	if err = rm.dropCanonicalAlias(ctx, res.RoomID, dev.UserID, a.String()); err != nil {
		httputil.Logger(r).WithError(err).WithField("room_id", res.RoomID).Warn("removing a deleted alias from m.room.canonical_alias failed")
	}
	return httputil.OK(struct{}{}), nil
}

// dropCanonicalAlias removes a deleted alias from the room's m.room.canonical_alias (alias
// and alt_aliases), sent by the user who deleted it, as the spec lets servers do on
// DELETE /directory/room/{roomAlias}. The alias is gone either way: a user without the
// power to change the event gets their deletion and an error to log.
func (rm *Rooms) dropCanonicalAlias(ctx context.Context, roomID, userID, alias string) error {
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: mRoomCanonicalAlias}}})
	if err != nil || len(cur.StateEvents) != 1 {
		return err
	}
	var content map[string]any
	if err = json.Unmarshal(cur.StateEvents[0].Content(), &content); err != nil {
		return nil // content that is not an object names no alias
	}
	changed := false
	if content["alias"] == alias {
		delete(content, "alias")
		changed = true
	}
	if alt, ok := content["alt_aliases"].([]any); ok {
		kept := make([]any, 0, len(alt))
		for _, v := range alt {
			if v != alias {
				kept = append(kept, v)
			}
		}
		if len(kept) != len(alt) {
			content["alt_aliases"], changed = kept, true
		}
	}
	if !changed {
		return nil
	}
	body, err := json.Marshal(content)
	if err != nil {
		return err
	}
	empty := ""
	_, err = rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: userID, Type: mRoomCanonicalAlias, StateKey: &empty, Content: body}, nil)
	return err
}

// mayEditDirectory reports whether the user is joined to the room with the power to send
// m.room.canonical_alias: who may delete others' aliases and change the room's visibility.
func (rm *Rooms) mayEditDirectory(ctx context.Context, roomID, userID string) (bool, error) {
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{
		{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}, {EventType: spec.MRoomMember, StateKey: userID},
	}})
	if err != nil || !cur.RoomExists {
		return false, err
	}
	var create, pl gomatrixserverlib.PDU
	joined := false
	for _, e := range cur.StateEvents {
		switch e.Type() {
		case spec.MRoomCreate:
			create = e.PDU
		case spec.MRoomPowerLevels:
			pl = e.PDU
		case spec.MRoomMember:
			m, _ := e.Membership()
			joined = m == spec.Join
		}
	}
	if !joined || create == nil {
		return false, nil
	}
	if creators(create, cur.RoomVersion)[userID] {
		return true, nil
	}
	if pl == nil {
		return false, nil
	}
	levels, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl)
	if err != nil {
		return false, nil
	}
	return levels.UserLevel(spec.SenderID(userID)) >= levels.EventLevel(mRoomCanonicalAlias, true), nil
}

// creators are the users with unlimited power in the room: the create event's sender and
// additional_creators from v12, none before (their power comes from the power levels; a
// room without power levels gives the creator all of it, so the sender counts there too).
func creators(create gomatrixserverlib.PDU, version string) map[string]bool {
	out := map[string]bool{}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil || !v.PrivilegedCreators() {
		return out
	}
	out[string(create.SenderID())] = true
	var c struct {
		AdditionalCreators []string `json:"additional_creators"`
	}
	if json.Unmarshal(create.Content(), &c) == nil {
		for _, u := range c.AdditionalCreators {
			out[u] = true
		}
	}
	return out
}

// RoomAliases is GET /rooms/{roomId}/aliases: for members, or anyone when the room is world
// readable.
func (rm *Rooms) RoomAliases(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	ctx := r.Context()
	m, err := rm.membership(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	if m.Membership != spec.Join {
		readable, err := rm.worldReadable(ctx, roomID)
		if err != nil {
			return httputil.Response{}, err
		}
		if !readable {
			return httputil.Response{}, matrixerr.Forbidden("you are not joined to this room")
		}
	}
	res, err := rm.RSAPI.QueryAliasesForRoom(ctx, &rsapi.QueryAliasesForRoomRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string][]string{"aliases": res.Aliases}), nil
}

func (rm *Rooms) worldReadable(ctx context.Context, roomID string) (bool, error) {
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}}})
	if err != nil {
		return false, err
	}
	for _, e := range cur.StateEvents {
		if hv, err := e.HistoryVisibility(); err == nil && hv == gomatrixserverlib.HistoryVisibilityWorldReadable {
			return true, nil
		}
	}
	return false, nil
}

// GetRoomVisibility is GET /directory/list/room/{roomId}.
func (rm *Rooms) GetRoomVisibility(r *http.Request) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	info, err := rm.RSAPI.QueryRoomInfo(r.Context(), &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	if !info.Exists {
		return httputil.Response{}, matrixerr.NotFound("room not found")
	}
	res, err := rm.RSAPI.QueryRoomVisibility(r.Context(), &rsapi.QueryRoomVisibilityRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	visibility := visibilityPrivate
	if res.Public {
		visibility = visibilityPublic
	}
	return httputil.OK(map[string]string{"visibility": visibility}), nil
}

// SetRoomVisibility is PUT /directory/list/room/{roomId}: for members allowed to change
// the room's m.room.canonical_alias.
func (rm *Rooms) SetRoomVisibility(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	switch body.Visibility {
	case "":
		body.Visibility = visibilityPublic // the spec's default
	case visibilityPublic, visibilityPrivate:
	default:
		return httputil.Response{}, matrixerr.InvalidParam("visibility must be public or private")
	}
	ctx := r.Context()
	info, err := rm.RSAPI.QueryRoomInfo(ctx, &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	if !info.Exists {
		return httputil.Response{}, matrixerr.NotFound("room not found")
	}
	ok, err := rm.mayEditDirectory(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	if !ok {
		return httputil.Response{}, matrixerr.Forbidden("only room moderators may change the room's visibility")
	}
	_, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: body.Visibility == visibilityPublic})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// PublicRooms is GET /publicRooms (limit, since, server). This server's directory needs no
// access token; another server's does, since asking it makes this server connect out.
//
// NOTSPEC: the spec gives GET /publicRooms no security requirement even with server
// (https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3publicrooms);
// Synapse, too, asks for a token before it queries another server.
func (rm *Rooms) PublicRooms(r *http.Request) (httputil.Response, error) {
	if server := r.URL.Query().Get("server"); server != "" && spec.ServerName(server) != rm.ServerName {
		return httputil.Authenticated(DeviceLookup(rm.UserAPI), func(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
			return rm.getPublicRooms(r)
		})(r)
	}
	return rm.getPublicRooms(r)
}

func (rm *Rooms) getPublicRooms(r *http.Request) (httputil.Response, error) {
	req, err := rsapi.ParsePublicRoomsQuery(r.URL.Query())
	if err != nil {
		return httputil.Response{}, err
	}
	return rm.publicRooms(r.Context(), r.URL.Query().Get("server"), req)
}

// PublicRoomsFiltered is POST /publicRooms (limit, since, filter.generic_search_term in the
// body; server in the query).
func (rm *Rooms) PublicRoomsFiltered(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	var body rsapi.PublicRoomsBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	return rm.publicRooms(r.Context(), r.URL.Query().Get("server"), body.Request())
}

// publicRooms lists this server's directory, or asks server's through the federationapi.
func (rm *Rooms) publicRooms(ctx context.Context, server string, req rsapi.PublicRoomsRequest) (httputil.Response, error) {
	if server == "" || spec.ServerName(server) == rm.ServerName {
		res, err := rsapi.ListPublicRooms(ctx, rm.RSAPI, req)
		if err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(res), nil
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return httputil.Response{}, matrixerr.InvalidParam("server is not a server name")
	}
	if rm.Federation == nil {
		return httputil.Response{}, matrixerr.NotFound("no published room directory at " + server)
	}
	res, err := rm.Federation.QueryPublicRooms(ctx, &fapi.QueryPublicRoomsRequest{Server: server, Limit: req.Limit, Since: req.Since, Filter: req.Filter})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// checkCanonicalAlias refuses an m.room.canonical_alias whose aliases are not valid, or,
// for this server's, do not point at the room (400 M_BAD_ALIAS, spec "m.room.canonical_alias").
// Other servers' aliases are not asked about.
func (rm *Rooms) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return matrixerr.BadJSON("alias must be a string and alt_aliases an array of strings")
	}
	names := c.AltAliases
	if c.Alias != "" {
		names = append(names, c.Alias)
	}
	for _, name := range names {
		a, err := roomalias.Parse(name)
		if err != nil {
			return matrixerr.InvalidParam("invalid room alias " + name)
		}
		if a.Server != rm.ServerName {
			continue
		}
		res, err := rm.RSAPI.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: name})
		if err != nil {
			return err
		}
		if res.RoomID != roomID {
			return matrixerr.BadAlias(name + " does not point to this room")
		}
	}
	return nil
}
