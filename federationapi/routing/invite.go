package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// inviteV2Body is the body of PUT /_matrix/federation/v2/invite.
type inviteV2Body struct {
	RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
	Event           json.RawMessage               `json:"event"`
	InviteRoomState []json.RawMessage             `json:"invite_room_state"`
}

// InviteV2 is PUT /_matrix/federation/v2/invite/{roomID}/{eventID}: another server invites
// one of our users. The invite must name a local user, come from a user of the requesting
// server and carry that server's valid signature; we add ours, store it (with the room's
// stripped state in its unsigned invite_room_state, which /sync shows) as an outlier the
// invitee sees in /sync's invite section, and send it back.
func (rt *Routing) InviteV2(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	var body inviteV2Body
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("invalid invite request")
	}
	if body.RoomVersion == "" {
		body.RoomVersion = gomatrixserverlib.RoomVersionV1
	}
	signed, err := rt.invite(r, req, body)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(fclient.RespInviteV2{Event: signed.JSON()}), nil
}

// InviteV1 is the deprecated PUT /_matrix/federation/v1/invite/{roomID}/{eventID}: the body
// is the invite itself, with the stripped state in its unsigned invite_room_state, and the
// answer is [200, {"event": ...}]. The spec has the room's version be 1 or 2: it is the
// room's own when this server knows the room, else 1 (both have the same event format).
func (rt *Routing) InviteV1(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	var ev struct {
		Unsigned struct {
			InviteRoomState []json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(req.Content(), &ev); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("invalid invite request")
	}
	body := inviteV2Body{RoomVersion: gomatrixserverlib.RoomVersionV1, Event: req.Content(), InviteRoomState: ev.Unsigned.InviteRoomState}
	if v, _, err := rt.Inbound.RoomVersion(r.Context(), httputil.Vars(r)["roomID"]); err == nil {
		body.RoomVersion = v.Version()
	}
	if gomatrixserverlib.MustGetRoomVersion(body.RoomVersion).EventFormat() != gomatrixserverlib.EventFormatV1 {
		return httputil.Response{}, &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "the room's version needs the v2 invite API",
			Status: http.StatusBadRequest, RoomVersion: string(body.RoomVersion)}
	}
	signed, err := rt.invite(r, req, body)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK([]any{http.StatusOK, fclient.RespInviteV2{Event: signed.JSON()}}), nil
}

// invite checks, countersigns and stores an invite of a local user and returns it signed.
func (rt *Routing) invite(r *http.Request, req *fclient.FederationRequest, body inviteV2Body) (gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomID"], vars["eventID"]
	v, err := gomatrixserverlib.GetRoomVersion(body.RoomVersion)
	if err != nil {
		return nil, &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "this server does not support the room's version",
			Status: http.StatusBadRequest, RoomVersion: string(body.RoomVersion)}
	}
	ev, err := v.NewEventFromUntrustedJSON(body.Event)
	if err != nil {
		return nil, matrixerr.BadJSON("invalid event: " + err.Error())
	}
	m, merr := ev.Membership()
	sender, serr := spec.NewUserID(string(ev.SenderID()), true)
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != roomID:
		return nil, matrixerr.BadJSON("the event is not the one named in the path")
	case ev.Type() != spec.MRoomMember || merr != nil || m != spec.Invite || ev.StateKey() == nil:
		return nil, matrixerr.BadJSON("the event is not an invite")
	case serr != nil || sender.Domain() != req.Origin():
		return nil, matrixerr.Forbidden("the inviter is not a user of the requesting server")
	}
	// A room we are in: its ACL applies first, whatever the invite (an ACL-denied server
	// learns nothing about our users), and a user already joined cannot be invited.
	if cur, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID}); err == nil && cur.RoomExists {
		if err = internal.CheckACL(cur.StateEvents, req.Origin()); err != nil {
			return nil, err
		}
	}
	if err = rt.Inbound.SignedBy(ctx, ev, req.Origin()); err != nil {
		return nil, matrixerr.Forbidden(err.Error())
	}
	invitee, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || invitee.Domain() != rt.ServerName {
		return nil, matrixerr.Forbidden("the invitee is not a user of this server")
	}
	// A user without an account is invited all the same, as Synapse does (the spec's
	// /invite answers no 404).
	mem, err := rt.Rooms.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: invitee.String()})
	if err != nil {
		return nil, err
	}
	if mem.Membership == spec.Join {
		return nil, matrixerr.Forbidden("the user is already joined to the room")
	}
	signed := ev.Sign(string(rt.ServerName), rt.Keys.KeyID, rt.Keys.PrivateKey)
	stored := signed
	if len(body.InviteRoomState) > 0 {
		if stored, err = signed.SetUnsigned(map[string]any{"invite_room_state": body.InviteRoomState}); err != nil {
			return nil, matrixerr.BadJSON("invalid invite_room_state")
		}
	}
	res, err := rt.Inbound.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{
		RoomID: roomID, RoomVersion: string(v.Version()),
		Events: []rsapi.InputRoomEvent{{Kind: rsapi.KindRemoteMembership, Event: &rsapi.Event{PDU: stored}}},
	}})
	if err != nil {
		return nil, err
	}
	if e := res.Results[0].Err; e != nil {
		return nil, matrixerr.Forbidden(e.Message)
	}
	return signed, nil
}
