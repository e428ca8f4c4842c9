package routing

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// MakeJoin is GET /_matrix/federation/v1/make_join/{roomID}/{userID}?ver=...: a join event
// template for a user of the requesting server, built on the room's current forward
// extremities and state.
func (rt *Routing) MakeJoin(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	supported := r.URL.Query()["ver"]
	if len(supported) == 0 {
		supported = []string{"1"}
	}
	proto, v, err := rt.makeMember(r, req, spec.Join, supported)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(fclient.RespMakeJoin{JoinEvent: proto, RoomVersion: v}), nil
}

// MakeKnock is GET /_matrix/federation/v1/make_knock/{roomID}/{userID}?ver=...: a knock
// event template for a user of the requesting server. ver is required (knocking exists
// from room version 7 on, so no default version could be right): none is 400
// M_MISSING_PARAM, a room version not among them 400 M_INCOMPATIBLE_ROOM_VERSION, a room
// whose join rule does not allow knocking (or a banned user) 403.
func (rt *Routing) MakeKnock(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	supported := r.URL.Query()["ver"]
	if len(supported) == 0 {
		return httputil.Response{}, matrixerr.MissingParam("ver is required")
	}
	proto, v, err := rt.makeMember(r, req, spec.Knock, supported)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(fclient.RespMakeKnock{KnockEvent: proto, RoomVersion: v}), nil
}

// MakeLeave is GET /_matrix/federation/v1/make_leave/{roomID}/{userID}: a leave event
// template for a user of the requesting server (who is joined or invited).
func (rt *Routing) MakeLeave(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	proto, v, err := rt.makeMember(r, req, spec.Leave, nil)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(fclient.RespMakeLeave{LeaveEvent: proto, RoomVersion: v}), nil
}

// makeMember builds a membership template for a user of the requesting server on the
// room's current extremities and state, after checking that the event would be allowed
// (and, when supported is not nil, that the requesting server supports the room version).
func (rt *Routing) makeMember(r *http.Request, req *fclient.FederationRequest, membership string, supported []string) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	ctx := r.Context()
	var none gomatrixserverlib.ProtoEvent
	vars := httputil.Vars(r)
	roomID, userID := vars["roomID"], vars["userID"]
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != req.Origin() {
		return none, "", matrixerr.Forbidden("the user is not a user of the requesting server")
	}
	v, info, err := rt.Inbound.RoomVersion(ctx, roomID)
	if err != nil || len(info.LatestEventIDs) == 0 {
		return none, "", matrixerr.NotFound("unknown room")
	}
	if supported != nil && !slices.Contains(supported, string(v.Version())) {
		return none, "", &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "the room's version is not supported by your server",
			Status: http.StatusBadRequest, RoomVersion: string(v.Version())}
	}
	cur, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return none, "", err
	}
	if err = internal.CheckACL(cur.StateEvents, req.Origin()); err != nil {
		return none, "", err
	}
	// A join goes through a server that is in the room: one whose users have all left
	// cannot vouch for the room's state any more (Synapse answers 404 too).
	if membership == spec.Join && !rt.hasJoinedUser(cur.StateEvents) {
		return none, "", matrixerr.NotFound("no user of this server is in the room")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: info.LatestEventIDs, Depth: info.Depth + 1, Version: v,
	}
	state := make([]gomatrixserverlib.PDU, len(cur.StateEvents))
	for i, e := range cur.StateEvents {
		state[i] = e.PDU
	}
	content := map[string]string{"membership": membership}
	if membership == spec.Join {
		via, err := rt.joinAuthoriser(ctx, state, userID)
		if err != nil {
			return none, "", err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	if err = proto.SetContent(content); err != nil {
		return none, "", err
	}
	auth, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return none, "", err
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return none, "", matrixerr.BadJSON(err.Error())
	}
	proto.AuthEvents = authEventIDs(auth, needed)
	// Check that the join would be allowed now, with an unsigned build of the template.
	ev, err := v.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), rt.ServerName, rt.Keys.KeyID, rt.Keys.PrivateKey)
	if err != nil {
		return none, "", matrixerr.BadJSON(err.Error())
	}
	if err = gomatrixserverlib.Allowed(ev, auth, userIDForSender); err != nil {
		return none, "", matrixerr.Forbidden("the user may not " + membership + ": " + err.Error())
	}
	if v.EventFormat() == gomatrixserverlib.EventFormatV1 {
		if err = rt.referenceTemplate(ctx, &proto, info.LatestEventIDs, state); err != nil {
			return none, "", err
		}
	}
	return proto, v.Version(), nil
}

// joinAuthoriser is, for a join of userID to a restricted (or knock_restricted) room whose
// current state is state, the user of this server who vouches for it
// (join_authorised_via_users_server); "" when the room is not restricted or the user is
// invited or joined already. The spec's errors: 400 M_UNABLE_TO_AUTHORISE_JOIN when this
// server is in none of the allowed rooms, 403 when the user is joined to none of those it
// is in, 400 M_UNABLE_TO_GRANT_JOIN when none of our users in the room may invite.
func (rt *Routing) joinAuthoriser(ctx context.Context, state []gomatrixserverlib.PDU, userID string) (string, error) {
	var rule rsapi.JoinRule
	for _, e := range state {
		switch {
		case e.Type() == spec.MRoomJoinRules && e.StateKeyEquals(""):
			rule = rsapi.ParseJoinRule(e.Content())
		case e.Type() == spec.MRoomMember && e.StateKeyEquals(userID):
			if m, _ := e.Membership(); m == spec.Join || m == spec.Invite {
				return "", nil
			}
		}
	}
	if !rule.Restricted() {
		return "", nil
	}
	known := false
	for _, a := range rule.AllowedRooms {
		cur, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: a, Types: []string{spec.MRoomMember}})
		if err != nil {
			return "", err
		}
		if !cur.RoomExists || !rt.hasJoinedUser(cur.StateEvents) {
			continue
		}
		known = true
		if slices.ContainsFunc(cur.StateEvents, func(e rsapi.Event) bool {
			m, _ := e.Membership()
			return e.StateKeyEquals(userID) && m == spec.Join
		}) {
			if via := rsapi.JoinAuthoriser(state, rt.ServerName); via != "" {
				return via, nil
			}
			return "", &matrixerr.Error{Code: "M_UNABLE_TO_GRANT_JOIN", Message: "no user of this server may authorise the join", Status: http.StatusBadRequest}
		}
	}
	if !known {
		return "", &matrixerr.Error{Code: "M_UNABLE_TO_AUTHORISE_JOIN", Message: "this server is in none of the rooms the join rule allows", Status: http.StatusBadRequest}
	}
	return "", matrixerr.Forbidden("the user is not a member of a room the join rule allows")
}

// signAuthorisedJoin adds this server's signature to a restricted join whose
// join_authorised_via_users_server is one of our users, after checking, as make_join did,
// that the joining user may join (the auth rules then check that the authoriser may
// invite). Other joins are returned as they are.
func (rt *Routing) signAuthorisedJoin(ctx context.Context, ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Via == "" {
		return ev, nil
	}
	via, err := spec.NewUserID(c.Via, true)
	if err != nil || via.Domain() != rt.ServerName {
		return ev, nil
	}
	cur, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: ev.RoomID().String(),
		Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}, {EventType: spec.MRoomJoinRules}},
		Types:  []string{spec.MRoomMember}})
	if err != nil {
		return nil, err
	}
	state := make([]gomatrixserverlib.PDU, len(cur.StateEvents))
	for i, e := range cur.StateEvents {
		state[i] = e.PDU
	}
	authoriser, err := rt.joinAuthoriser(ctx, state, string(ev.SenderID()))
	if err != nil {
		return nil, err
	}
	if authoriser == "" {
		return nil, matrixerr.Forbidden("this server does not authorise the join")
	}
	return ev.Sign(string(rt.ServerName), rt.Keys.KeyID, rt.Keys.PrivateKey), nil
}

// hasJoinedUser reports whether state has a local user whose membership is join.
func (rt *Routing) hasJoinedUser(state []rsapi.Event) bool {
	for _, e := range state {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil {
			continue
		}
		uid, err := spec.NewUserID(*e.StateKey(), true)
		if m, _ := e.Membership(); err == nil && m == spec.Join && uid.Domain() == rt.ServerName {
			return true
		}
	}
	return false
}

// eventRef is an [event ID, {"sha256": reference hash}] pair, how events of room versions
// 1 and 2 name their prev_events and auth_events.
type eventRef struct {
	ID   string
	Hash spec.Base64Bytes
}

// MarshalJSON writes the pair.
func (r eventRef) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{r.ID, map[string]spec.Base64Bytes{"sha256": r.Hash}})
}

// referenceTemplate turns a template's prev_events and auth_events (event IDs) into the
// [id, {hashes}] pairs of the v1 event format, with each event's reference hash; the
// auth events are among state, the prev events are fetched.
func (rt *Routing) referenceTemplate(ctx context.Context, proto *gomatrixserverlib.ProtoEvent, prevIDs []string, state []gomatrixserverlib.PDU) error {
	known := make(map[string]gomatrixserverlib.PDU, len(state))
	for _, e := range state {
		known[e.EventID()] = e
	}
	res, err := rt.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: proto.RoomID, EventIDs: prevIDs})
	if err != nil {
		return err
	}
	for _, e := range res.Events {
		known[e.EventID()] = e.PDU
	}
	refs := func(ids []string) ([]eventRef, error) {
		out := make([]eventRef, len(ids))
		for i, id := range ids {
			e := known[id]
			if e == nil {
				return nil, fmt.Errorf("event %s of the template is not stored", id)
			}
			h, err := referenceHash(e)
			if err != nil {
				return nil, err
			}
			out[i] = eventRef{ID: id, Hash: h}
		}
		return out, nil
	}
	if proto.PrevEvents, err = refs(prevIDs); err != nil {
		return err
	}
	proto.AuthEvents, err = refs(proto.AuthEvents.([]string))
	return err
}

// referenceHash is an event's reference hash: the SHA-256 of the canonical JSON of the
// redacted event without signatures and unsigned (for room versions 3 and later, the
// event ID is its unpadded base64).
func referenceHash(ev gomatrixserverlib.PDU) (spec.Base64Bytes, error) {
	redacted, err := gomatrixserverlib.MustGetRoomVersion(ev.Version()).RedactEventJSON(ev.JSON())
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err = json.Unmarshal(redacted, &fields); err != nil {
		return nil, err
	}
	delete(fields, "signatures")
	delete(fields, "unsigned")
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	return sum[:], nil
}

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// authEventIDs selects from the current state the auth events an event needs.
func authEventIDs(auth *gomatrixserverlib.AuthEvents, needed gomatrixserverlib.StateNeeded) []string {
	ids := []string{}
	add := func(ev gomatrixserverlib.PDU, _ error) {
		if ev != nil {
			ids = append(ids, ev.EventID())
		}
	}
	if needed.Create {
		add(auth.Create())
	}
	if needed.PowerLevels {
		add(auth.PowerLevels())
	}
	if needed.JoinRules {
		add(auth.JoinRules())
	}
	for _, m := range needed.Member {
		add(auth.Member(spec.SenderID(m)))
	}
	return ids
}

// SendJoin is PUT /_matrix/federation/v2/send_join/{roomID}/{eventID}: the signed join of
// a user of the requesting server is checked and written to the roomserver like a
// received PDU; the answer is the state before it with its auth chain.
func (rt *Routing) SendJoin(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	out, err := rt.sendJoin(r, req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(out), nil
}

// SendJoinV1 is the deprecated PUT /_matrix/federation/v1/send_join/{roomID}/{eventID}:
// SendJoin with its answer in a [200, answer] pair.
func (rt *Routing) SendJoinV1(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	out, err := rt.sendJoin(r, req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK([]any{http.StatusOK, out}), nil
}

func (rt *Routing) sendJoin(r *http.Request, req *fclient.FederationRequest) (*fclient.RespSendJoin, error) {
	ctx := r.Context()
	ev, err := rt.receiveMember(r, req, spec.Join)
	if err != nil {
		return nil, err
	}
	roomID, eventID := ev.RoomID().String(), ev.EventID()
	st, err := rt.Rooms.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: roomID, EventID: eventID})
	if err != nil {
		return nil, err
	}
	state := make([]gomatrixserverlib.PDU, len(st.StateEvents))
	out := &fclient.RespSendJoin{StateEvents: gomatrixserverlib.EventJSONs{}, AuthEvents: gomatrixserverlib.EventJSONs{}, Origin: rt.ServerName, Event: ev.JSON()}
	for i, e := range st.StateEvents {
		state[i] = e.PDU
		out.StateEvents = append(out.StateEvents, e.JSON())
	}
	chain, err := AuthChain(ctx, rt.Rooms, roomID, state)
	if err != nil {
		return nil, err
	}
	for _, e := range chain {
		out.AuthEvents = append(out.AuthEvents, e.JSON())
	}
	return out, nil
}

// SendLeave is PUT /_matrix/federation/v2/send_leave/{roomID}/{eventID}: the signed leave
// of a user of the requesting server is checked and written to the roomserver like a
// received PDU. The answer is empty.
func (rt *Routing) SendLeave(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	if _, err := rt.receiveMember(r, req, spec.Leave); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// SendLeaveV1 is the deprecated PUT /_matrix/federation/v1/send_leave/{roomID}/{eventID}:
// SendLeave answering [200, {}].
func (rt *Routing) SendLeaveV1(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	if _, err := rt.receiveMember(r, req, spec.Leave); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK([]any{http.StatusOK, struct{}{}}), nil
}

// SendKnock is PUT /_matrix/federation/v1/send_knock/{roomID}/{eventID}: the signed knock
// of a user of the requesting server is checked and written to the roomserver like a
// received PDU. The answer's knock_room_state holds the room's current create, join rules,
// name, avatar, canonical alias and encryption events, whole (the spec asks for PDUs
// formatted for the room version since v1.16; servers that want stripped state take the
// keys they need from them).
func (rt *Routing) SendKnock(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ev, err := rt.receiveMember(r, req, spec.Knock)
	if err != nil {
		return httputil.Response{}, err
	}
	roomID := ev.RoomID().String()
	tuples := make([]rsapi.StateKeyTuple, len(internal.StrippedStateTypes))
	for i, t := range internal.StrippedStateTypes {
		tuples[i] = rsapi.StateKeyTuple{EventType: t}
	}
	cur, err := rt.Rooms.QueryCurrentState(r.Context(), &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: tuples})
	if err != nil {
		return httputil.Response{}, err
	}
	state := make([]json.RawMessage, 0, len(cur.StateEvents))
	for _, e := range cur.StateEvents {
		state = append(state, e.JSON())
	}
	return httputil.OK(map[string]any{"knock_room_state": state}), nil
}

// receiveMember checks a signed membership event of a user of the requesting server about
// themselves (the one named in the path) and places it like a received PDU.
func (rt *Routing) receiveMember(r *http.Request, req *fclient.FederationRequest, membership string) (gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomID"], vars["eventID"]
	v, info, err := rt.Inbound.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, matrixerr.NotFound("unknown room")
	}
	if err = internal.RoomACL(ctx, rt.Rooms, roomID, req.Origin()); err != nil {
		return nil, err
	}
	ev, err := v.NewEventFromUntrustedJSON(req.Content())
	if err != nil {
		return nil, matrixerr.BadJSON("invalid event: " + err.Error())
	}
	if membership == spec.Join {
		if ev, err = rt.signAuthorisedJoin(ctx, ev); err != nil {
			return nil, err
		}
	}
	// An event its sender's server did not sign is not that server's to send.
	if err = rt.Inbound.Verify(ctx, ev); err != nil {
		return nil, matrixerr.Forbidden(err.Error())
	}
	m, merr := ev.Membership()
	sender, serr := spec.NewUserID(string(ev.SenderID()), true)
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != roomID:
		return nil, matrixerr.BadJSON("the event is not the one named in the path")
	case ev.Type() != spec.MRoomMember || merr != nil || m != membership || !ev.StateKeyEquals(string(ev.SenderID())):
		return nil, matrixerr.BadJSON("the event is not a " + membership)
	case serr != nil || sender.Domain() != req.Origin():
		return nil, matrixerr.Forbidden("the user is not a user of the requesting server")
	}
	if err = rt.Inbound.Receive(ctx, req.Origin(), v, info, ev); err != nil {
		if msg, safe := internal.ResultError(err); safe {
			return nil, matrixerr.Forbidden(msg)
		}
		return nil, err
	}
	return ev, nil
}
