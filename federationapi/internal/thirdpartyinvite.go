package internal

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// mRoomThirdPartyInvite is the event type of a third-party invite.
const mRoomThirdPartyInvite = "m.room.third_party_invite"

// ThirdPartyInvite is one invite of an identity server's /3pid/onbind: the identity
// server's signed proof (signed: mxid, token, signatures) that the user owns the 3PID an
// m.room.third_party_invite of sender invited.
type ThirdPartyInvite struct {
	RoomID string          `json:"room_id"`
	Sender string          `json:"sender"`
	MXID   string          `json:"mxid"`
	Signed json.RawMessage `json:"signed"`
}

// signedToken is the token of a ThirdPartyInvite's signed block.
func (t *ThirdPartyInvite) signedToken() (string, error) {
	var s struct {
		MXID  string `json:"mxid"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(t.Signed, &s); err != nil || s.Token == "" || s.MXID != t.MXID {
		return "", matrixerr.BadJSON("third_party_invite.signed must hold the invitee's mxid and a token")
	}
	return s.Token, nil
}

// memberProto is the m.room.member invite the invite becomes: sent by the third-party
// invite's sender, carrying the signed block (display_name is filled in by the room's
// server, from the m.room.third_party_invite).
func (t *ThirdPartyInvite) memberProto(displayName string) gomatrixserverlib.ProtoEvent {
	content, _ := json.Marshal(map[string]any{"membership": spec.Invite, // nolint: errcheck // strings and raw JSON always marshal
		"third_party_invite": map[string]any{"display_name": displayName, "signed": t.Signed}})
	target := t.MXID
	return gomatrixserverlib.ProtoEvent{SenderID: t.Sender, RoomID: t.RoomID, Type: spec.MRoomMember, StateKey: &target, Content: content}
}

// OnBind hands the invites an identity server reports, once a 3PID is bound to a local
// user, to the servers of their rooms: each invite is exchanged here when its sender is a
// local user (the room is here then), else sent to the sender's server
// (exchange_third_party_invite). Every invite is tried; the first failure is returned.
func (m *Membership) OnBind(ctx context.Context, invites []ThirdPartyInvite) error {
	var first error
	for i := range invites {
		inv := &invites[i]
		sender, err := spec.NewUserID(inv.Sender, true)
		if err == nil {
			if sender.Domain() == m.ServerName {
				err = m.ExchangeThirdPartyInvite(ctx, inv)
			} else {
				err = m.Client.ExchangeThirdPartyInvite(ctx, m.ServerName, sender.Domain(), inv.memberProto(""))
			}
		}
		if err != nil {
			m.Logger.WithError(err).WithField("room_id", inv.RoomID).Warn("a third-party invite could not be exchanged")
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// ExchangeThirdPartyInvite turns a third-party invite of a room here, sent by a local
// user, into the m.room.member invite of the user the identity server signed for: the
// auth rules accept it when the signed block verifies with one of the
// m.room.third_party_invite's public keys. A user of another server is invited through
// their server, as PerformInvite does.
func (m *Membership) ExchangeThirdPartyInvite(ctx context.Context, inv *ThirdPartyInvite) error {
	if _, err := m.localUser(inv.Sender); err != nil {
		return err
	}
	invitee, err := spec.NewUserID(inv.MXID, true)
	if err != nil {
		return matrixerr.InvalidParam("mxid is not a user ID")
	}
	token, err := inv.signedToken()
	if err != nil {
		return err
	}
	v, info, err := m.Inbound.RoomVersion(ctx, inv.RoomID)
	if err != nil || len(info.LatestEventIDs) == 0 {
		return matrixerr.Forbidden("unknown room")
	}
	cur, err := m.Inbound.Roomserver.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: inv.RoomID})
	if err != nil {
		return err
	}
	var displayName string
	var keys []identity.PublicKey
	for _, e := range cur.StateEvents {
		if e.Type() == mRoomThirdPartyInvite && e.StateKeyEquals(token) && string(e.SenderID()) == inv.Sender {
			var c struct {
				DisplayName string `json:"display_name"`
			}
			if json.Unmarshal(e.Content(), &c) == nil {
				displayName, keys = c.DisplayName, identity.InviteKeys(e.Content())
			}
		}
	}
	if len(keys) == 0 {
		return matrixerr.Forbidden("no third-party invite of this sender has this token")
	}
	if m.IdentityServers == nil {
		return matrixerr.Forbidden("this server cannot check third-party invites")
	}
	if err = m.IdentityServers.CheckInviteSigned(ctx, inv.Signed, keys); err != nil {
		m.Logger.WithError(err).WithField("room_id", inv.RoomID).Info("a third-party invite's signature was refused")
		return matrixerr.Forbidden("the third-party invite is not signed by a valid key of its identity server")
	}
	proto := inv.memberProto(displayName)
	if invitee.Domain() != m.ServerName {
		_, err = m.PerformInvite(ctx, &api.PerformInviteRequest{RoomID: inv.RoomID, Sender: inv.Sender, UserID: inv.MXID, Content: json.RawMessage(proto.Content)})
		return err
	}
	return m.Inbound.input(ctx, inv.RoomID, v, rsapi.InputRoomEvent{Kind: rsapi.KindNew,
		Proto: &rsapi.ProtoEvent{Sender: inv.Sender, Type: spec.MRoomMember, StateKey: proto.StateKey, Content: json.RawMessage(proto.Content)}})
}
