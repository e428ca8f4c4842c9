package routing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// mRoomThirdPartyInvite is the event type of a third-party invite.
const mRoomThirdPartyInvite = "m.room.third_party_invite"

// threePIDInvite is a third-party invite's request: POST /invite's third-party form, an
// entry of createRoom's invite_3pid.
type threePIDInvite struct {
	IDServer      string `json:"id_server"`
	IDAccessToken string `json:"id_access_token"`
	Medium        string `json:"medium"`
	Address       string `json:"address"`
}

func (inv *threePIDInvite) validate() error {
	if inv.IDServer == "" || inv.Medium == "" || inv.Address == "" {
		return matrixerr.MissingParam("id_server, medium and address are required")
	}
	if !identity.ValidServerName(inv.IDServer) {
		return matrixerr.InvalidParam("id_server is not a server name")
	}
	return nil
}

// thirdPartyInviteContent is the content of m.room.third_party_invite.
type thirdPartyInviteContent struct {
	DisplayName    string               `json:"display_name"`
	KeyValidityURL string               `json:"key_validity_url"`
	PublicKey      string               `json:"public_key"`
	PublicKeys     []identity.PublicKey `json:"public_keys,omitempty"`
}

// invite3PID looks the 3PID up on the identity server: when it is bound, it returns the
// user to invite as usual. Otherwise the identity server stores the invite (and tells the
// user's server once the address is bound, through /3pid/onbind) and sender's
// m.room.third_party_invite, keyed by the identity server's token, goes into the room; it
// returns "".
func (rm *Rooms) invite3PID(r *http.Request, roomID, sender string, inv threePIDInvite) (string, error) {
	if err := inv.validate(); err != nil {
		return "", err
	}
	if rm.IdentityServers == nil {
		return "", errNoIdentityServer
	}
	ctx := r.Context()
	tp := identity.ThreePID{Medium: inv.Medium, Address: inv.Address}
	mxid, err := rm.IdentityServers.Lookup(ctx, inv.IDServer, inv.IDAccessToken, tp)
	if err != nil {
		return "", identityError(r, err)
	}
	if mxid != "" {
		if _, err := spec.NewUserID(mxid, true); err != nil {
			return "", matrixerr.BadGateway("the identity server named an invalid user ID")
		}
		return mxid, nil
	}
	stored, err := rm.IdentityServers.StoreInvite(ctx, inv.IDServer, inv.IDAccessToken, identity.InviteRequest{ThreePID: tp, RoomID: roomID, Sender: sender})
	if err != nil {
		return "", identityError(r, err)
	}
	c := thirdPartyInviteContent{DisplayName: stored.DisplayName, PublicKey: stored.PublicKey, PublicKeys: stored.PublicKeys,
		KeyValidityURL: "https://" + inv.IDServer + "/_matrix/identity/v2/pubkey/isvalid"}
	if len(c.PublicKeys) > 0 {
		if c.PublicKey == "" {
			c.PublicKey = c.PublicKeys[0].PublicKey
		}
		c.KeyValidityURL = c.PublicKeys[0].KeyValidityURL
	}
	content, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	token := stored.Token
	_, err = rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: sender, Type: mRoomThirdPartyInvite, StateKey: &token, Content: content}, nil)
	return "", err
}

// invite3PIDs sends createRoom's invite_3pid once the room exists, like inviteRemotes: every
// invite is tried, and the first failure is the answer (with room_id).
func (rm *Rooms) invite3PIDs(r *http.Request, roomID, sender string, req *createRoomRequest) error {
	for _, raw := range req.Invite3PID {
		var inv threePIDInvite
		if err := json.Unmarshal(raw, &inv); err != nil {
			return matrixerr.BadJSON("invite_3pid entries must be objects")
		}
		mxid, err := rm.invite3PID(r, roomID, sender, inv)
		if err == nil && mxid != "" {
			err = rm.inviteUser(r.Context(), roomID, sender, mxid, memberContent{Membership: "invite", IsDirect: req.IsDirect})
		}
		if err != nil {
			var merr *matrixerr.Error
			if !errors.As(err, &merr) {
				merr = matrixerr.Unknown("the room was created but an invite could not be sent")
			}
			c := *merr
			c.RoomID = roomID
			return &c
		}
	}
	return nil
}

// thirdPartySigned is /join's third_party_signed: the identity server's proof that the
// joining user owns the invited 3PID.
type thirdPartySigned struct {
	Sender     string                       `json:"sender"`
	MXID       string                       `json:"mxid"`
	Token      string                       `json:"token"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// exchangeThirdPartyInvite turns a third-party invite of a room this server is in into an
// m.room.member invite of the user the identity server signed for, sent by the third-party
// invite's sender (the auth rules check the signature against the invite's public keys).
func (rm *Rooms) exchangeThirdPartyInvite(ctx context.Context, roomID string, signed json.RawMessage) error {
	var s thirdPartySigned
	if err := json.Unmarshal(signed, &s); err != nil || s.Token == "" || s.MXID == "" || s.Sender == "" || len(s.Signatures) == 0 {
		return matrixerr.BadJSON("third_party_signed must have sender, mxid, token and signatures")
	}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID,
		Tuples: []rsapi.StateKeyTuple{{EventType: mRoomThirdPartyInvite, StateKey: s.Token}}})
	if err != nil {
		return err
	}
	if len(cur.StateEvents) == 0 {
		return matrixerr.Forbidden("no third-party invite has this token")
	}
	ev := cur.StateEvents[0]
	if string(ev.SenderID()) != s.Sender || !rm.isLocalUser(s.Sender) {
		return matrixerr.Forbidden("the third-party invite was not sent by this sender")
	}
	var c thirdPartyInviteContent
	if err := json.Unmarshal(ev.Content(), &c); err != nil {
		return matrixerr.Forbidden("the third-party invite has been revoked")
	}
	if rm.IdentityServers == nil {
		return errNoIdentityServer
	}
	if err := rm.IdentityServers.CheckInviteSigned(ctx, signed, identity.InviteKeys(ev.Content())); err != nil {
		return matrixerr.Forbidden("the third-party invite is not signed by a valid key of its identity server")
	}
	content, err := json.Marshal(map[string]any{"membership": spec.Invite,
		"third_party_invite": map[string]any{"display_name": c.DisplayName, "signed": signed}})
	if err != nil {
		return err
	}
	target := s.MXID
	_, err = rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: s.Sender, Type: spec.MRoomMember, StateKey: &target, Content: content}, nil)
	return err
}
