package internal

import (
	"context"
	"encoding/json"
	"errors"

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
// user, to the rooms they are for (spec server-server API, "Third-party invites": the
// invited server makes the m.room.member invite, auths it and sends it when it is in the
// room, else has the inviting server do so). An invite of a local sender is made here
// (ExchangeThirdPartyInvite). One of another server's user is made here too when one of
// our users is joined to the room and this server has its m.room.third_party_invite
// (inviteHere), and the federationsender sends it to the room's servers; otherwise it goes
// to the sender's server (exchange_third_party_invite). Every invite is tried; the first
// failure is returned.
func (m *Membership) OnBind(ctx context.Context, invites []ThirdPartyInvite) error {
	var first error
	for i := range invites {
		if err := m.bindInvite(ctx, &invites[i]); err != nil {
			m.Logger.WithError(err).WithField("room_id", invites[i].RoomID).Warn("a third-party invite could not be exchanged")
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// bindInvite makes one invite of OnBind.
func (m *Membership) bindInvite(ctx context.Context, inv *ThirdPartyInvite) error {
	sender, err := spec.NewUserID(inv.Sender, true)
	if err != nil {
		return matrixerr.InvalidParam("the invite's sender is not a user ID")
	}
	if sender.Domain() == m.ServerName {
		return m.ExchangeThirdPartyInvite(ctx, inv)
	}
	if done, err := m.inviteHere(ctx, inv); err != nil || done {
		return err
	}
	return m.Client.ExchangeThirdPartyInvite(ctx, m.ServerName, sender.Domain(), inv.memberProto(""))
}

// inviteState is what this server's copy of a room says of a third-party invite.
type inviteState struct {
	v gomatrixserverlib.IRoomVersion
	// displayName and keys are those of the m.room.third_party_invite of the invite's
	// token and sender (no keys: there is none).
	displayName string
	keys        []identity.PublicKey
	// joinedHere reports whether one of our users is joined to the room.
	joinedHere bool
}

// inviteState reads the room's current state here for inv (the token of its signed block);
// nil when the room has no timeline here.
func (m *Membership) inviteState(ctx context.Context, inv *ThirdPartyInvite, token string) (*inviteState, error) {
	v, info, err := m.Inbound.RoomVersion(ctx, inv.RoomID)
	if errors.Is(err, ErrUnknownRoom) || err == nil && len(info.LatestEventIDs) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cur, err := m.Inbound.Roomserver.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: inv.RoomID, Types: []string{mRoomThirdPartyInvite, spec.MRoomMember}})
	if err != nil {
		return nil, err
	}
	st := &inviteState{v: v}
	for _, e := range cur.StateEvents {
		switch {
		case e.Type() == mRoomThirdPartyInvite && e.StateKeyEquals(token) && string(e.SenderID()) == inv.Sender:
			var c struct {
				DisplayName string `json:"display_name"`
			}
			if json.Unmarshal(e.Content(), &c) == nil {
				st.displayName, st.keys = c.DisplayName, identity.InviteKeys(e.Content())
			}
		case e.Type() == spec.MRoomMember && e.StateKey() != nil && !st.joinedHere:
			uid, err := spec.NewUserID(*e.StateKey(), true)
			membership, _ := e.Membership()
			st.joinedHere = err == nil && uid.Domain() == m.ServerName && membership == spec.Join
		}
	}
	return st, nil
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
	token, err := inv.signedToken()
	if err != nil {
		return err
	}
	st, err := m.inviteState(ctx, inv, token)
	if err != nil {
		return err
	}
	if st == nil {
		return matrixerr.Forbidden("unknown room")
	}
	return m.completeInvite(ctx, inv, st)
}

// inviteHere makes the invite of a local user that another server's user sent, when this
// server is in the room and has the m.room.third_party_invite; it reports false, having
// done nothing, when not. The sender's server gets the event like any other of the room.
func (m *Membership) inviteHere(ctx context.Context, inv *ThirdPartyInvite) (bool, error) {
	token, err := inv.signedToken()
	if err != nil {
		return false, err
	}
	st, err := m.inviteState(ctx, inv, token)
	if err != nil || st == nil || !st.joinedHere || len(st.keys) == 0 {
		return false, err
	}
	return true, m.completeInvite(ctx, inv, st)
}

// completeInvite checks the identity server's signature of inv against the keys of its
// m.room.third_party_invite (st) and makes the m.room.member invite: here for a local
// invitee, through the invitee's server otherwise.
func (m *Membership) completeInvite(ctx context.Context, inv *ThirdPartyInvite, st *inviteState) error {
	invitee, err := spec.NewUserID(inv.MXID, true)
	if err != nil {
		return matrixerr.InvalidParam("mxid is not a user ID")
	}
	if len(st.keys) == 0 {
		return matrixerr.Forbidden("no third-party invite of this sender has this token")
	}
	if m.IdentityServers == nil {
		return matrixerr.Forbidden("this server cannot check third-party invites")
	}
	if err = m.IdentityServers.CheckInviteSigned(ctx, inv.Signed, st.keys); err != nil {
		m.Logger.WithError(err).WithField("room_id", inv.RoomID).Info("a third-party invite's signature was refused")
		return matrixerr.Forbidden("the third-party invite is not signed by a valid key of its identity server")
	}
	proto := inv.memberProto(st.displayName)
	if invitee.Domain() != m.ServerName {
		_, err = m.PerformInvite(ctx, &api.PerformInviteRequest{RoomID: inv.RoomID, Sender: inv.Sender, UserID: inv.MXID, Content: json.RawMessage(proto.Content)})
		return err
	}
	return m.Inbound.input(ctx, inv.RoomID, st.v, rsapi.InputRoomEvent{Kind: rsapi.KindNew,
		Proto: &rsapi.ProtoEvent{Sender: inv.Sender, Type: spec.MRoomMember, StateKey: proto.StateKey, Content: json.RawMessage(proto.Content)}})
}
