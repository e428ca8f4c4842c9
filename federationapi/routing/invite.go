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
	uapi "github.com/matrix-org/dendrite/userapi/api"
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
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomID"], vars["eventID"]
	var body inviteV2Body
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("invalid invite request")
	}
	if body.RoomVersion == "" {
		body.RoomVersion = gomatrixserverlib.RoomVersionV1
	}
	v, err := gomatrixserverlib.GetRoomVersion(body.RoomVersion)
	if err != nil {
		return httputil.Response{}, &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "this server does not support the room's version",
			Status: http.StatusBadRequest, RoomVersion: string(body.RoomVersion)}
	}
	ev, err := v.NewEventFromUntrustedJSON(body.Event)
	if err != nil {
		return httputil.Response{}, matrixerr.BadJSON("invalid event: " + err.Error())
	}
	m, merr := ev.Membership()
	sender, serr := spec.NewUserID(string(ev.SenderID()), true)
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != roomID:
		return httputil.Response{}, matrixerr.BadJSON("the event is not the one named in the path")
	case ev.Type() != spec.MRoomMember || merr != nil || m != spec.Invite || ev.StateKey() == nil:
		return httputil.Response{}, matrixerr.BadJSON("the event is not an invite")
	case serr != nil || sender.Domain() != req.Origin():
		return httputil.Response{}, matrixerr.Forbidden("the inviter is not a user of the requesting server")
	}
	if err = rt.Inbound.SignedBy(ctx, ev, req.Origin()); err != nil {
		return httputil.Response{}, matrixerr.Forbidden(err.Error())
	}
	invitee, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || invitee.Domain() != rt.ServerName {
		return httputil.Response{}, matrixerr.Forbidden("the invitee is not a user of this server")
	}
	// An unknown user is the userapi's 404.
	if _, err = rt.Users.QueryProfile(ctx, &uapi.QueryProfileRequest{UserID: invitee.String()}); err != nil {
		return httputil.Response{}, err
	}
	// A room we are in: its ACL applies, and a user already joined cannot be invited.
	if cur, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID}); err == nil && cur.RoomExists {
		if err = internal.CheckACL(cur.StateEvents, req.Origin()); err != nil {
			return httputil.Response{}, err
		}
	}
	mem, err := rt.Rooms.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: invitee.String()})
	if err != nil {
		return httputil.Response{}, err
	}
	if mem.Membership == spec.Join {
		return httputil.Response{}, matrixerr.Forbidden("the user is already joined to the room")
	}
	signed := ev.Sign(string(rt.ServerName), rt.Keys.KeyID, rt.Keys.PrivateKey)
	stored := signed
	if len(body.InviteRoomState) > 0 {
		if stored, err = signed.SetUnsigned(map[string]any{"invite_room_state": body.InviteRoomState}); err != nil {
			return httputil.Response{}, matrixerr.BadJSON("invalid invite_room_state")
		}
	}
	res, err := rt.Inbound.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{
		RoomID: roomID, RoomVersion: string(v.Version()),
		Events: []rsapi.InputRoomEvent{{Kind: rsapi.KindRemoteMembership, Event: &rsapi.Event{PDU: stored}}},
	}})
	if err != nil {
		return httputil.Response{}, err
	}
	if e := res.Results[0].Err; e != nil {
		return httputil.Response{}, matrixerr.Forbidden(e.Message)
	}
	return httputil.OK(fclient.RespInviteV2{Event: signed.JSON()}), nil
}
