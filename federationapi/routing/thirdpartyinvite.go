package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// maxOnBindInvites bounds the invites of one /3pid/onbind.
const maxOnBindInvites = 100

// OnBind is POST /_matrix/federation/v1/3pid/onbind: an identity server reports that a
// 3PID is now bound to a local user, with the third-party invites it stored for the 3PID.
// Each becomes an m.room.member invite (see internal.Membership.OnBind). The request is
// not authenticated: every invite carries the identity server's signature, which the
// room's auth rules check against the keys of the m.room.third_party_invite.
func (rt *Routing) OnBind(r *http.Request) (httputil.Response, error) {
	var body struct {
		MXID    string                      `json:"mxid"`
		Invites []internal.ThirdPartyInvite `json:"invites"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	uid, err := spec.NewUserID(body.MXID, true)
	if err != nil || uid.Domain() != rt.ServerName {
		return httputil.Response{}, matrixerr.InvalidParam("mxid must be a user of this server")
	}
	if len(body.Invites) > maxOnBindInvites {
		return httputil.Response{}, matrixerr.TooLarge("too many invites")
	}
	for i := range body.Invites {
		if body.Invites[i].MXID != body.MXID {
			return httputil.Response{}, matrixerr.InvalidParam("every invite must be of mxid")
		}
	}
	if err = rt.Membership.OnBind(r.Context(), body.Invites); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// ExchangeThirdPartyInvite is PUT /_matrix/federation/v1/exchange_third_party_invite/{roomID}:
// the invitee's server asks the room's server (that of the third-party invite's sender) to
// turn the invite into an m.room.member invite.
func (rt *Routing) ExchangeThirdPartyInvite(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	var ev struct {
		Type     string `json:"type"`
		RoomID   string `json:"room_id"`
		Sender   string `json:"sender"`
		StateKey string `json:"state_key"`
		Content  struct {
			Membership       string `json:"membership"`
			ThirdPartyInvite struct {
				Signed json.RawMessage `json:"signed"`
			} `json:"third_party_invite"`
		} `json:"content"`
	}
	if err := json.Unmarshal(req.Content(), &ev); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("invalid third-party invite exchange")
	}
	roomID := httputil.Vars(r)["roomID"]
	if ev.RoomID != roomID || ev.Type != spec.MRoomMember || ev.Content.Membership != spec.Invite || len(ev.Content.ThirdPartyInvite.Signed) == 0 {
		return httputil.Response{}, matrixerr.InvalidParam("not a third-party invite of this room")
	}
	invitee, err := spec.NewUserID(ev.StateKey, true)
	if err != nil || invitee.Domain() != req.Origin() {
		return httputil.Response{}, matrixerr.Forbidden("the invitee is not a user of the requesting server")
	}
	inv := internal.ThirdPartyInvite{RoomID: roomID, Sender: ev.Sender, MXID: ev.StateKey, Signed: ev.Content.ThirdPartyInvite.Signed}
	if err = rt.Membership.ExchangeThirdPartyInvite(r.Context(), &inv); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}
