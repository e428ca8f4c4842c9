package internal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// outlierBatch is how many events of a send_join answer go to the roomserver in one
// InputRoomEvent message, so that joining a huge room never makes one huge record.
const outlierBatch = 100

// StrippedStateTypes are the state types an invite carries (the spec's stripped state), and
// m.room.guest_access, which the spec allows ("the server might include events not
// described here"): the invitee's server needs it to let a guest accept the invite.
var StrippedStateTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", "m.room.canonical_alias", "m.room.encryption",
	"m.room.guest_access"}

// Membership carries out membership changes that need another server: remote joins,
// invites of other servers' users and leaves through another server (api.ClientFederationAPI).
type Membership struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	Client     fclient.FederationClient
	// KeyRing verifies the events other servers send back.
	KeyRing *gomatrixserverlib.KeyRing
	// Inbound parses, checks and writes events to the roomserver.
	Inbound *Inbound
	Logger  *logrus.Entry
	// IdentityServers checks the identity servers' signatures of third-party invites and
	// whether their keys are still valid (nil: third-party invites are refused).
	IdentityServers *identity.Client

	// profiles are recent answers of QueryRemoteProfile.
	profiles profileCache
}

var _ api.ClientFederationAPI = (*Membership)(nil)

// joinClient adapts fclient's join calls to what gomatrixserverlib.PerformJoin takes.
type joinClient struct{ c fclient.FederationClient }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	return &res, err
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, ev gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	res, err := j.c.SendJoin(ctx, origin, s, ev)
	return &res, err
}

// localUser parses a user ID that must be of this server.
func (m *Membership) localUser(userID string) (*spec.UserID, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != m.ServerName {
		return nil, matrixerr.InvalidParam("not a user of this server: " + userID)
	}
	return uid, nil
}

// candidates lists the servers to try: the given ones, then those of extra, without
// duplicates or this server.
func (m *Membership) candidates(given []string, extra ...spec.ServerName) []spec.ServerName {
	var out []spec.ServerName
	add := func(s spec.ServerName) {
		if s != "" && s != m.ServerName && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, s := range given {
		add(spec.ServerName(s))
	}
	for _, s := range extra {
		add(s)
	}
	return out
}

// inviter is the server of the user who invited userID into roomID, if this server holds
// such an invite.
func (m *Membership) inviter(ctx context.Context, roomID, userID string) spec.ServerName {
	res, err := m.Inbound.Roomserver.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
	if err != nil || res.Membership != spec.Invite || res.EventID == "" {
		return ""
	}
	evs, err := m.Inbound.Roomserver.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{res.EventID}})
	if err != nil || len(evs.Events) == 0 {
		return ""
	}
	sender, err := spec.NewUserID(string(evs.Events[0].SenderID()), true)
	if err != nil {
		return ""
	}
	return sender.Domain()
}

// remoteFailure turns a failed request to another server into what the client is told:
// that server's 403 stays a 403, its 400 for an unsupported room version stays, and any
// other 400 with a Matrix error code is passed through with that code (the client learns
// why the room's server refused, as Synapse passes it on); any other answer or no answer
// means that server could not help (404).
func remoteFailure(err error, what string) *matrixerr.Error {
	var herr gomatrix.HTTPError
	if errors.As(err, &herr) {
		var body matrixerr.Error
		_ = json.Unmarshal(herr.Contents, &body) // a body that is not a Matrix error leaves it empty
		switch {
		case herr.Code == http.StatusForbidden:
			msg := "the room's server refused: " + body.Message
			return matrixerr.Forbidden(msg)
		case body.Code == "M_INCOMPATIBLE_ROOM_VERSION" || body.Code == "M_UNSUPPORTED_ROOM_VERSION":
			return &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "the room's version is not supported", Status: http.StatusBadRequest, RoomVersion: body.RoomVersion}
		case herr.Code == http.StatusBadRequest && strings.HasPrefix(body.Code, "M_"):
			return &matrixerr.Error{Code: body.Code, Message: "the room's server refused: " + body.Message, Status: http.StatusBadRequest}
		}
	}
	return matrixerr.NotFound(what)
}

// better keeps the more telling of two failures: a refusal over a room version over
// "not found".
func better(prev, next *matrixerr.Error) *matrixerr.Error {
	rank := func(e *matrixerr.Error) int {
		switch {
		case e == nil:
			return 0
		case e.Status == http.StatusForbidden:
			return 3
		case e.Status == http.StatusBadRequest:
			return 2
		}
		return 1
	}
	if rank(next) > rank(prev) {
		return next
	}
	return prev
}

// membershipRequest checks what every membership request names, a local user and a room
// ID, and decodes the content the client gave for the event (what: "join", "leave",
// "knock"); none is an empty object.
func (m *Membership) membershipRequest(userID, roomID string, raw json.RawMessage, what string) (*spec.UserID, *spec.RoomID, map[string]any, error) {
	uid, err := m.localUser(userID)
	if err != nil {
		return nil, nil, nil, err
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return nil, nil, nil, matrixerr.InvalidParam("invalid room ID")
	}
	var content map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &content) != nil {
		return nil, nil, nil, matrixerr.BadJSON(what + " content must be an object")
	}
	if content == nil { // none, or JSON null
		content = map[string]any{}
	}
	return uid, rid, content, nil
}

// PerformJoin implements api.ClientFederationAPI.
func (m *Membership) PerformJoin(ctx context.Context, req *api.PerformJoinRequest) (*api.PerformJoinResponse, error) {
	uid, rid, content, err := m.membershipRequest(req.UserID, req.RoomID, req.Content, "join")
	if err != nil {
		return nil, err
	}
	servers := m.candidates(req.ServerNames, m.inviter(ctx, req.RoomID, req.UserID), rid.Domain())
	log := m.Logger.WithFields(logrus.Fields{"room_id": req.RoomID, "user_id": req.UserID})
	var failure *matrixerr.Error
	for _, s := range servers {
		if err = ctx.Err(); err != nil {
			return nil, err
		}
		c := make(map[string]any, len(content))
		for k, v := range content {
			c[k] = v
		}
		res, ferr := gomatrixserverlib.PerformJoin(ctx, joinClient{m.Client}, gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: s, Content: c, PrivateKey: m.PrivateKey, KeyID: m.KeyID, KeyRing: m.KeyRing,
			EventProvider: m.eventProvider(ctx, s, req.RoomID), UserIDQuerier: userIDForSender,
		})
		if ferr != nil {
			log.WithError(ferr.Err).WithField("server", s).Info("joining through a server failed")
			failure = better(failure, remoteFailure(ferr.Err, "no server could be reached that knows the room"))
			continue
		}
		eventID, err := m.storeJoin(ctx, res)
		if err != nil {
			log.WithError(err).WithField("server", s).Warn("storing a remote join failed")
			if _, refused := ResultError(err); refused {
				failure = better(failure, matrixerr.NotFound("the room's state from "+string(s)+" was refused"))
				continue
			}
			return nil, err
		}
		log.WithField("server", s).Info("joined a room through another server")
		return &api.PerformJoinResponse{EventID: eventID, JoinedVia: string(s)}, nil
	}
	if failure == nil {
		failure = matrixerr.NotFound("no server to join the room through")
	}
	return nil, failure
}

// eventProvider fetches auth events a send_join answer lacks from the server that gave it.
func (m *Membership) eventProvider(ctx context.Context, s spec.ServerName, roomID string) gomatrixserverlib.EventProvider {
	return func(v gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		verImpl, err := gomatrixserverlib.GetRoomVersion(v)
		if err != nil {
			return nil, err
		}
		if len(ids) > maxEventFetches {
			return nil, fmt.Errorf("%d auth events missing from the answer", len(ids))
		}
		out := make([]gomatrixserverlib.PDU, 0, len(ids))
		for _, id := range ids {
			txn, err := m.Client.GetEvent(ctx, m.ServerName, s, id)
			if err != nil || len(txn.PDUs) != 1 {
				return nil, fmt.Errorf("fetch auth event %s: %v", id, err)
			}
			ev, err := m.Inbound.ParseVerified(ctx, verImpl, txn.PDUs[0])
			if err != nil || ev.EventID() != id || ev.RoomID().String() != roomID {
				return nil, fmt.Errorf("auth event %s is not the one asked for or is badly signed", id)
			}
			out = append(out, ev)
		}
		return out, nil
	}
}

// storeJoin writes a checked send_join answer to the roomserver: the auth chain and state
// as outliers (auth events first, in batches), then the join with that state, which
// replaces a stale copy of the room (rsapi.KindRemoteJoin).
func (m *Membership) storeJoin(ctx context.Context, res *gomatrixserverlib.PerformJoinResponse) (string, error) {
	join := res.JoinEvent
	v := join.Version()
	verImpl, err := gomatrixserverlib.GetRoomVersion(v)
	if err != nil {
		return "", err
	}
	roomID := join.RoomID().String()
	state := res.StateSnapshot.GetStateEvents().UntrustedEvents(v)
	all := OrderByAuth(append(res.StateSnapshot.GetAuthEvents().UntrustedEvents(v), state...))
	for start := 0; start < len(all); start += outlierBatch {
		batch := all[start:min(start+outlierBatch, len(all))]
		in := make([]rsapi.InputRoomEvent, len(batch))
		for i, e := range batch {
			in[i] = rsapi.InputRoomEvent{Kind: rsapi.KindOutlier, Event: &rsapi.Event{PDU: e}}
		}
		if err = m.Inbound.inputAll(ctx, roomID, verImpl, in...); err != nil {
			return "", err
		}
	}
	stateIDs := make([]string, len(state))
	for i, e := range state {
		stateIDs[i] = e.EventID()
	}
	// A remote join: the answer's state replaces a copy of the room this server stopped
	// following when its last member left (rsapi.KindRemoteJoin).
	in := rsapi.InputRoomEvent{Kind: rsapi.KindRemoteJoin, Event: &rsapi.Event{PDU: join}, StateEventIDs: stateIDs}
	if err = m.Inbound.input(ctx, roomID, verImpl, in); err != nil {
		return "", err
	}
	return join.EventID(), nil
}

// PerformInvite implements api.ClientFederationAPI.
func (m *Membership) PerformInvite(ctx context.Context, req *api.PerformInviteRequest) (*api.PerformInviteResponse, error) {
	if _, err := m.localUser(req.Sender); err != nil {
		return nil, err
	}
	invitee, err := spec.NewUserID(req.UserID, true)
	if err != nil || invitee.Domain() == m.ServerName {
		return nil, matrixerr.InvalidParam("not a user of another server: " + req.UserID)
	}
	v, info, err := m.Inbound.RoomVersion(ctx, req.RoomID)
	if err != nil || len(info.LatestEventIDs) == 0 {
		return nil, matrixerr.Forbidden("unknown room")
	}
	content := map[string]any{}
	if len(req.Content) > 0 {
		if err = json.Unmarshal(req.Content, &content); err != nil {
			return nil, matrixerr.BadJSON("invite content must be an object")
		}
	}
	content["membership"] = spec.Invite
	cur, err := m.Inbound.Roomserver.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: req.RoomID})
	if err != nil {
		return nil, err
	}
	ev, err := m.build(v, info, req.RoomID, cur, req.Sender, req.UserID, content)
	if err != nil {
		return nil, err
	}
	var stripped []gomatrixserverlib.InviteStrippedState
	for _, e := range cur.StateEvents {
		if slices.Contains(StrippedStateTypes, e.Type()) && e.StateKeyEquals("") || e.Type() == spec.MRoomMember && e.StateKeyEquals(req.Sender) {
			stripped = append(stripped, gomatrixserverlib.NewInviteStrippedState(e.PDU))
		}
	}
	ireq, err := fclient.NewInviteV2Request(ev, stripped)
	if err != nil {
		return nil, err
	}
	res, err := m.Client.SendInviteV2(ctx, m.ServerName, invitee.Domain(), ireq)
	if err != nil {
		m.Logger.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "user_id": req.UserID}).Info("sending an invite failed")
		return nil, inviteFailure(err, req.UserID)
	}
	// An answer that is not an event of the room's version (in v6 and later rooms, JSON
	// that is not canonical: floats, out-of-range integers) is refused as bad JSON.
	signed, err := v.NewEventFromUntrustedJSON(res.Event)
	if err != nil {
		return nil, matrixerr.BadJSON("the invitee's server sent back an invalid event: " + err.Error())
	}
	if signed.EventID() != ev.EventID() || m.Inbound.Verify(ctx, signed) != nil {
		return nil, matrixerr.BadGateway("the invitee's server sent back another event")
	}
	if m.Inbound.SignedBy(ctx, signed, invitee.Domain()) != nil {
		return nil, matrixerr.BadGateway("the invitee's server did not sign the invite")
	}
	in := rsapi.InputRoomEvent{Kind: rsapi.KindFederated, Event: &rsapi.Event{PDU: signed}}
	if err = m.Inbound.input(ctx, req.RoomID, v, in); err != nil {
		return nil, err
	}
	return &api.PerformInviteResponse{EventID: signed.EventID()}, nil
}

// inviteFailure is the client's error for an invite the invitee's server did not sign: its
// refusal (403, keeping M_INVITE_BLOCKED), an unknown invitee (404), a room version it
// does not support (400 M_UNSUPPORTED_ROOM_VERSION, as createRoom's spec names it), or 502
// when it could not be reached or failed otherwise.
func inviteFailure(err error, userID string) *matrixerr.Error {
	var herr gomatrix.HTTPError
	if !errors.As(err, &herr) {
		return matrixerr.BadGateway("the invitee's server could not be reached")
	}
	var body matrixerr.Error
	_ = json.Unmarshal(herr.Contents, &body) // a body that is not a Matrix error leaves it empty
	switch {
	case herr.Code == http.StatusForbidden:
		msg := "the invitee's server refused the invite"
		if body.Message != "" {
			msg += ": " + body.Message
		}
		f := matrixerr.Forbidden(msg)
		if body.Code == "M_INVITE_BLOCKED" {
			f.Code = body.Code
		}
		return f
	case herr.Code == http.StatusNotFound:
		return matrixerr.NotFound("the invitee's server does not know " + userID)
	case body.Code == "M_INCOMPATIBLE_ROOM_VERSION" || body.Code == "M_UNSUPPORTED_ROOM_VERSION":
		return matrixerr.UnsupportedRoomVersion("the invitee's server does not support the room's version")
	}
	return matrixerr.BadGateway("the invitee's server did not accept the invite")
}

// build makes and signs sender's member event about target on the room's current
// extremities and state, checked against the auth rules.
func (m *Membership) build(v gomatrixserverlib.IRoomVersion, info *rsapi.QueryRoomInfoResponse, roomID string, cur *rsapi.QueryCurrentStateResponse, sender, target string, content map[string]any) (gomatrixserverlib.PDU, error) {
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: spec.MRoomMember, StateKey: &target,
		PrevEvents: info.LatestEventIDs, Depth: info.Depth + 1, Version: v,
	}
	if err := proto.SetContent(content); err != nil {
		return nil, matrixerr.BadJSON(err.Error())
	}
	state := make([]gomatrixserverlib.PDU, len(cur.StateEvents))
	for i, e := range cur.StateEvents {
		state[i] = e.PDU
	}
	auth, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return nil, err
	}
	eb := v.NewEventBuilderFromProtoEvent(&proto)
	if err = eb.AddAuthEvents(auth); err != nil {
		return nil, matrixerr.Forbidden(err.Error())
	}
	ev, err := eb.Build(time.Now(), m.ServerName, m.KeyID, m.PrivateKey)
	if err != nil {
		return nil, matrixerr.BadJSON(err.Error())
	}
	if _, thirdParty := content["third_party_invite"]; thirdParty {
		// gomatrixserverlib verifies a third-party invite's signed block without the keys it
		// does not know (sender), so it refuses real blocks: ExchangeThirdPartyInvite checked
		// the block, and the roomserver's auth rules check the event when it is input.
		return ev, nil
	}
	if err = gomatrixserverlib.Allowed(ev, auth, userIDForSender); err != nil {
		return nil, matrixerr.Forbidden(err.Error())
	}
	return ev, nil
}

// PerformLeave implements api.ClientFederationAPI.
func (m *Membership) PerformLeave(ctx context.Context, req *api.PerformLeaveRequest) (*api.PerformLeaveResponse, error) {
	_, rid, content, err := m.membershipRequest(req.UserID, req.RoomID, req.Content, "leave")
	if err != nil {
		return nil, err
	}
	content["membership"] = spec.Leave
	var failure *matrixerr.Error
	for _, s := range m.candidates(req.ServerNames, m.inviter(ctx, req.RoomID, req.UserID), rid.Domain()) {
		ev, err := m.leaveThrough(ctx, s, req, content)
		if err != nil {
			m.Logger.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "server": s}).Info("leaving through a server failed")
			failure = better(failure, remoteFailure(err, "no server could be reached that knows the room"))
			continue
		}
		verImpl := gomatrixserverlib.MustGetRoomVersion(ev.Version())
		in := rsapi.InputRoomEvent{Kind: rsapi.KindRemoteMembership, Event: &rsapi.Event{PDU: ev}}
		if err = m.Inbound.input(ctx, req.RoomID, verImpl, in); err != nil {
			return nil, err
		}
		return &api.PerformLeaveResponse{EventID: ev.EventID()}, nil
	}
	// An invite no server can take back is rejected here alone: the user must be able to
	// get rid of it when its room's servers are gone or refuse (the spec's leave endpoint
	// rejects invites; Synapse does the same).
	if res, err := m.rejectInviteLocally(ctx, req, content); res != nil || err != nil {
		return res, err
	}
	if failure == nil {
		failure = matrixerr.NotFound("no server to leave the room through")
	}
	return nil, failure
}

// rejectInviteLocally rejects the user's pending invite to the room with a leave built
// here on the invite (its only prev and auth event), signed by this server and stored like
// a leave settled with another server (KindRemoteMembership): the user's membership
// becomes leave and the user is told, and no other server is asked. It returns nil, nil
// when the user has no invite to the room.
func (m *Membership) rejectInviteLocally(ctx context.Context, req *api.PerformLeaveRequest, content map[string]any) (*api.PerformLeaveResponse, error) {
	cur, err := m.Inbound.Roomserver.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: req.RoomID, UserID: req.UserID})
	if err != nil || cur.Membership != spec.Invite || cur.EventID == "" {
		return nil, err
	}
	evs, err := m.Inbound.Roomserver.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: req.RoomID, EventIDs: []string{cur.EventID}})
	if err != nil || len(evs.Events) == 0 {
		return nil, err
	}
	invite := evs.Events[0].PDU
	verImpl, err := gomatrixserverlib.GetRoomVersion(invite.Version())
	if err != nil {
		return nil, err
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: req.UserID, RoomID: req.RoomID, Type: spec.MRoomMember, StateKey: &req.UserID,
		PrevEvents: []string{invite.EventID()}, AuthEvents: []string{invite.EventID()}, Depth: invite.Depth() + 1, Version: verImpl,
	}
	if err = proto.SetContent(content); err != nil {
		return nil, matrixerr.BadJSON(err.Error())
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), m.ServerName, m.KeyID, m.PrivateKey)
	if err != nil {
		return nil, err
	}
	in := rsapi.InputRoomEvent{Kind: rsapi.KindRemoteMembership, Event: &rsapi.Event{PDU: ev}}
	if err = m.Inbound.input(ctx, req.RoomID, verImpl, in); err != nil {
		return nil, err
	}
	m.Logger.WithFields(logrus.Fields{"room_id": req.RoomID, "user_id": req.UserID}).Info("invite rejected locally: no server could take the leave")
	return &api.PerformLeaveResponse{EventID: ev.EventID()}, nil
}

// leaveThrough does make_leave and send_leave with server s and returns the leave.
func (m *Membership) leaveThrough(ctx context.Context, s spec.ServerName, req *api.PerformLeaveRequest, content map[string]any) (gomatrixserverlib.PDU, error) {
	ml, err := m.Client.MakeLeave(ctx, m.ServerName, s, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	_, ev, err := m.signTemplate(ml.RoomVersion, ml.LeaveEvent, req.UserID, req.RoomID, content, "make_leave")
	if err != nil {
		return nil, err
	}
	if err = m.Client.SendLeave(ctx, m.ServerName, s, ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// PerformKnock implements api.ClientFederationAPI.
func (m *Membership) PerformKnock(ctx context.Context, req *api.PerformKnockRequest) (*api.PerformKnockResponse, error) {
	_, rid, content, err := m.membershipRequest(req.UserID, req.RoomID, req.Content, "knock")
	if err != nil {
		return nil, err
	}
	content["membership"] = spec.Knock
	var failure *matrixerr.Error
	for _, s := range m.candidates(req.ServerNames, rid.Domain()) {
		if err = ctx.Err(); err != nil {
			return nil, err
		}
		ev, err := m.knockThrough(ctx, s, req, content)
		if err != nil {
			m.Logger.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "server": s}).Info("knocking through a server failed")
			failure = better(failure, remoteFailure(err, "no server could be reached that knows the room"))
			continue
		}
		verImpl := gomatrixserverlib.MustGetRoomVersion(ev.Version())
		in := rsapi.InputRoomEvent{Kind: rsapi.KindRemoteMembership, Event: &rsapi.Event{PDU: ev}}
		if err = m.Inbound.input(ctx, req.RoomID, verImpl, in); err != nil {
			return nil, err
		}
		return &api.PerformKnockResponse{EventID: ev.EventID(), KnockedVia: string(s)}, nil
	}
	if failure == nil {
		failure = matrixerr.NotFound("no server to knock on the room through")
	}
	return nil, failure
}

// signTemplate checks that a make_leave or make_knock (what) template is the membership
// event of userID in roomID, and builds and signs it with content.
func (m *Membership) signTemplate(version gomatrixserverlib.RoomVersion, proto gomatrixserverlib.ProtoEvent, userID, roomID string, content map[string]any, what string) (gomatrixserverlib.IRoomVersion, gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, nil, err
	}
	if proto.Type != spec.MRoomMember || proto.SenderID != userID || proto.StateKey == nil || *proto.StateKey != userID || proto.RoomID != roomID {
		return nil, nil, fmt.Errorf("%s answered with another event", what)
	}
	proto.Redacts = ""
	if err = proto.SetContent(content); err != nil {
		return nil, nil, err
	}
	if err = proto.SetUnsigned(struct{}{}); err != nil {
		return nil, nil, err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), m.ServerName, m.KeyID, m.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return verImpl, ev, nil
}

// knockThrough does make_knock and send_knock with server s and returns the knock, with
// the room state s answered in its unsigned knock_room_state.
func (m *Membership) knockThrough(ctx context.Context, s spec.ServerName, req *api.PerformKnockRequest, content map[string]any) (gomatrixserverlib.PDU, error) {
	var versions []gomatrixserverlib.RoomVersion
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if impl.Stable() {
			versions = append(versions, v)
		}
	}
	slices.Sort(versions)
	mk, err := m.Client.MakeKnock(ctx, m.ServerName, s, req.RoomID, req.UserID, versions)
	if err != nil {
		return nil, err
	}
	verImpl, ev, err := m.signTemplate(mk.RoomVersion, mk.KnockEvent, req.UserID, req.RoomID, content, "make_knock")
	if err != nil {
		return nil, err
	}
	res, err := m.sendKnock(ctx, s, ev)
	if err != nil {
		return nil, err
	}
	state := make([]gomatrixserverlib.InviteStrippedState, 0, len(res.KnockRoomState))
	for _, raw := range res.KnockRoomState {
		st, err := m.verifiedRoomState(ctx, verImpl, req.RoomID, raw)
		if err != nil {
			m.Logger.WithError(err).WithFields(logrus.Fields{"room_id": req.RoomID, "server": s}).Warn("dropped an entry of knock_room_state")
			continue
		}
		state = append(state, gomatrixserverlib.NewInviteStrippedState(st))
	}
	return ev.SetUnsigned(map[string]any{"knock_room_state": state})
}

// sendKnock is PUT /_matrix/federation/v1/send_knock to server s. The answer's
// knock_room_state stays raw JSON: gomatrixserverlib's RespSendKnock keeps only the
// stripped fields, which drops the signatures verifiedRoomState checks.
func (m *Membership) sendKnock(ctx context.Context, s spec.ServerName, ev gomatrixserverlib.PDU) (*sendKnockResponse, error) {
	path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(ev.RoomID().String()) + "/" + url.PathEscape(ev.EventID())
	fr := fclient.NewFederationRequest(http.MethodPut, m.ServerName, s, path)
	if err := fr.SetContent(json.RawMessage(ev.JSON())); err != nil {
		return nil, err
	}
	if err := fr.Sign(m.ServerName, m.KeyID, m.PrivateKey); err != nil {
		return nil, err
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	var res sendKnockResponse
	if err = m.Client.DoRequestAndParseResponse(ctx, hr, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

type sendKnockResponse struct {
	KnockRoomState []json.RawMessage `json:"knock_room_state"`
}

// verifiedRoomState parses one entry of a send_knock answer's knock_room_state as a state
// event of the room, of its version, whose content hash and signatures hold. The spec
// (server-server API, send_knock) says entries improperly signed or formatted SHOULD be
// removed before they reach clients; a stripped-only entry (no signatures) is one of those.
func (m *Membership) verifiedRoomState(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	st, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if st.Redacted() {
		return nil, fmt.Errorf("event %s: content hash does not match", st.EventID())
	}
	if st.RoomID().String() != roomID || st.StateKey() == nil {
		return nil, fmt.Errorf("event %s is no state event of the room", st.EventID())
	}
	if err = gomatrixserverlib.VerifyEventSignatures(ctx, st, m.KeyRing, userIDForSender); err != nil {
		return nil, fmt.Errorf("event %s: %w", st.EventID(), err)
	}
	return st, nil
}
