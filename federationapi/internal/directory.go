package internal

import (
	"context"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
)

// QueryRoomAlias implements api.ClientFederationAPI: GET /query/directory on the alias's
// server.
func (m *Membership) QueryRoomAlias(ctx context.Context, req *api.QueryRoomAliasRequest) (*api.QueryRoomAliasResponse, error) {
	alias, err := roomalias.Parse(req.Alias)
	if err != nil {
		return nil, matrixerr.InvalidParam("invalid room alias")
	}
	if alias.Server == m.ServerName {
		return nil, matrixerr.InvalidParam("the alias is of this server")
	}
	res, err := m.Client.LookupRoomAlias(ctx, m.ServerName, alias.Server, req.Alias)
	if err != nil {
		return nil, askFailure(err, alias.Server, "room alias not found: "+req.Alias)
	}
	if _, err := spec.NewRoomID(res.RoomID); err != nil {
		return nil, matrixerr.BadGateway(string(alias.Server) + " answered with an invalid room ID")
	}
	out := &api.QueryRoomAliasResponse{RoomID: res.RoomID, Servers: make([]string, 0, len(res.Servers)+1)}
	for _, s := range res.Servers {
		out.Servers = append(out.Servers, string(s))
	}
	if len(out.Servers) == 0 {
		out.Servers = append(out.Servers, string(alias.Server))
	}
	return out, nil
}

// QueryPublicRooms implements api.ClientFederationAPI: POST /publicRooms on the server.
func (m *Membership) QueryPublicRooms(ctx context.Context, req *api.QueryPublicRoomsRequest) (*api.QueryPublicRoomsResponse, error) {
	server := spec.ServerName(req.Server)
	res, err := m.Client.GetPublicRoomsFiltered(ctx, m.ServerName, server, req.Limit, req.Since, req.Filter, false, "")
	if err != nil {
		return nil, askFailure(err, server, "no published room directory at "+req.Server)
	}
	if res.Chunk == nil {
		res.Chunk = []fclient.PublicRoom{}
	}
	return &api.QueryPublicRoomsResponse{RespPublicRooms: res}, nil
}

// QueryRoomHierarchy implements api.ClientFederationAPI: GET /hierarchy on each server in
// turn (never this one) until one answers with the room asked for.
func (m *Membership) QueryRoomHierarchy(ctx context.Context, req *api.QueryRoomHierarchyRequest) (*api.QueryRoomHierarchyResponse, error) {
	for _, s := range m.candidates(req.Servers) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := m.Client.RoomHierarchy(ctx, m.ServerName, s, req.RoomID, req.SuggestedOnly)
		if err != nil || res.Room.RoomID != req.RoomID {
			m.Logger.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "server": s}).Debug("asking a server for a space's rooms failed")
			continue
		}
		return &api.QueryRoomHierarchyResponse{RoomHierarchyResponse: res}, nil
	}
	return nil, matrixerr.NotFound("no server could describe the room")
}

// askFailure is what the client is told when another server's answer is not a success:
// its 404 is notFound, and anything else (no answer, an error of its own) a 502.
func askFailure(err error, server spec.ServerName, notFound string) *matrixerr.Error {
	var herr gomatrix.HTTPError
	if errors.As(err, &herr) && herr.Code == http.StatusNotFound {
		return matrixerr.NotFound(notFound)
	}
	return matrixerr.BadGateway("could not ask " + string(server))
}
