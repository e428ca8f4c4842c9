package routing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	asapi "github.com/matrix-org/dendrite/appservice/api"
	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	peekapi "github.com/matrix-org/dendrite/syncapi/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// maxEventBytes is the spec's limit on a whole event; content alone may not exceed it.
const maxEventBytes = 65536

// Rooms serves the room endpoints: creating rooms, membership, sending events and reading
// room state. Every event goes through the roomserver's input log; the handlers return once
// the roomserver has accepted or rejected it.
type Rooms struct {
	Cfg        *config.ClientAPI
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	RSAPI      rsapi.ClientRoomserverAPI
	UserAPI    uapi.ClientUserAPI
	// Federation joins, invites and leaves through other servers (nil: none).
	Federation fapi.ClientFederationAPI
	// AppServices are the registered application services (exclusive alias namespaces,
	// services managing their aliases); never nil.
	AppServices *config.AppServiceAPI
	// AppServiceQueries asks the services about users and aliases of their namespaces that
	// do not exist yet (nil: never).
	AppServiceQueries asapi.QueryAPI
	// IdentityServers looks up and stores third-party invites (nil: they are refused).
	IdentityServers *identity.Client
	// Placement spreads new rooms over the roomserver's partitions (nil: wherever their
	// random IDs hash).
	Placement *rsapi.Placement
	// Peeks ends the device's peek (MSC2753) when its user leaves a room they have no
	// membership of (nil: peeks are left alone).
	Peeks peekapi.PeekAPI

	joinedOnce sync.Once
	joined     *joinedCache
}

// Routes lists the room endpoints.
func (rm *Rooms) Routes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(rm.UserAPI), h)
	}
	guest := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(GuestDeviceLookup(rm.UserAPI), h)
	}
	routes := []httputil.Route{
		{Name: "createRoom", Method: http.MethodPost, Path: "/createRoom", Handler: auth(rm.CreateRoom)},
		{Name: "join", Method: http.MethodPost, Path: "/join/{roomIDOrAlias}", Handler: guest(rm.Join)},
		{Name: "knock", Method: http.MethodPost, Path: "/knock/{roomIDOrAlias}", Handler: auth(rm.Knock)},
		{Name: "upgrade", Method: http.MethodPost, Path: "/rooms/{roomID}/upgrade", Handler: auth(rm.Upgrade)},
		{Name: "roomJoin", Method: http.MethodPost, Path: "/rooms/{roomID}/join", Handler: guest(rm.Join)},
		{Name: "invite", Method: http.MethodPost, Path: "/rooms/{roomID}/invite", Handler: auth(rm.Invite)},
		{Name: "leave", Method: http.MethodPost, Path: "/rooms/{roomID}/leave", Handler: guest(rm.Leave)},
		{Name: "forget", Method: http.MethodPost, Path: "/rooms/{roomID}/forget", Handler: auth(rm.Forget)},
		{Name: "kick", Method: http.MethodPost, Path: "/rooms/{roomID}/kick", Handler: auth(rm.Kick)},
		{Name: "ban", Method: http.MethodPost, Path: "/rooms/{roomID}/ban", Handler: auth(rm.Ban)},
		{Name: "unban", Method: http.MethodPost, Path: "/rooms/{roomID}/unban", Handler: auth(rm.Unban)},
		{Name: "send", Method: http.MethodPut, Path: "/rooms/{roomID}/send/{eventType}/{txnID}", Handler: guest(rm.Send)},
		{Name: "sendWithoutTxn", Method: http.MethodPost, Path: "/rooms/{roomID}/send/{eventType}", Handler: guest(rm.Send)},
		{Name: "redact", Method: http.MethodPut, Path: "/rooms/{roomID}/redact/{eventID}/{txnID}", Handler: auth(rm.Redact)},
		{Name: "redactWithoutTxn", Method: http.MethodPost, Path: "/rooms/{roomID}/redact/{eventID}", Handler: auth(rm.Redact)},
		{Name: "putState", Method: http.MethodPut, Path: "/rooms/{roomID}/state/{eventType}", Handler: guest(rm.PutState)},
		{Name: "putStateKey", Method: http.MethodPut, Path: "/rooms/{roomID}/state/{eventType}/{stateKey:.*}", Handler: guest(rm.PutState)},
		{Name: "getState", Method: http.MethodGet, Path: "/rooms/{roomID}/state/{eventType}", Handler: guest(rm.GetStateEvent)},
		{Name: "getStateKey", Method: http.MethodGet, Path: "/rooms/{roomID}/state/{eventType}/{stateKey:.*}", Handler: guest(rm.GetStateEvent)},
		{Name: "roomState", Method: http.MethodGet, Path: "/rooms/{roomID}/state", Handler: guest(rm.GetState)},
		{Name: "members", Method: http.MethodGet, Path: "/rooms/{roomID}/members", Handler: guest(rm.Members)},
		{Name: "joinedMembers", Method: http.MethodGet, Path: "/rooms/{roomID}/joined_members", Handler: auth(rm.JoinedMembers)},
		{Name: "joinedRooms", Method: http.MethodGet, Path: "/joined_rooms", Handler: auth(rm.JoinedRooms)},
	}
	return append(clientPaths(slices.Concat(routes, rm.directoryRoutes(), rm.thirdPartyRoutes())),
		httputil.Route{Name: "appServicePing", Method: http.MethodPost, Path: "/_matrix/client/v1/appservice/{appserviceID}/ping", Handler: rm.AppServicePing},
		httputil.Route{Name: "hierarchy", Method: http.MethodGet, Path: "/_matrix/client/v1/rooms/{roomID}/hierarchy", Handler: auth(rm.Hierarchy)},
		httputil.Route{Name: "roomSummary", Method: http.MethodGet, Path: "/_matrix/client/v1/room_summary/{roomIDOrAlias}", Handler: rm.RoomSummary},
	)
}

// clientPaths mounts routes under /_matrix/client/v3 and the r0 alias.
func clientPaths(routes []httputil.Route) []httputil.Route {
	out := make([]httputil.Route, 0, 2*len(routes))
	for _, r := range routes {
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			c := r
			c.Path = prefix + r.Path
			out = append(out, c)
		}
	}
	return out
}

// submit sends events for one room to the roomserver and returns their results, turning a
// rejection of any event into the request's error.
func (rm *Rooms) submit(ctx context.Context, in rsapi.InputRoomEvents) ([]rsapi.Result, error) {
	res, err := rm.RSAPI.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: in})
	if err != nil {
		return nil, err
	}
	for _, r := range res.Results {
		if r.Err != nil {
			return nil, r.Err
		}
	}
	return res.Results, nil
}

// sendProto submits one local event and returns its ID. A membership event drops its
// target's entry in the joined cache, before and after, so no answer from before it stays.
func (rm *Rooms) sendProto(ctx context.Context, roomID string, pe *rsapi.ProtoEvent, txn *rsapi.TransactionID) (string, error) {
	if pe.Type == spec.MRoomMember && pe.StateKey != nil {
		c, target := rm.joinedCache(), *pe.StateKey
		c.forget(roomID, target)
		defer c.forget(roomID, target)
	}
	res, err := rm.submit(ctx, rsapi.InputRoomEvents{
		RoomID: roomID,
		Events: []rsapi.InputRoomEvent{{Kind: rsapi.KindNew, Proto: pe, TxnID: txn}},
	})
	if err != nil {
		return "", err
	}
	return res[0].EventID, nil
}

// membership returns the user's membership in the room, 403 if the room is unknown.
func (rm *Rooms) membership(ctx context.Context, roomID, userID string) (*rsapi.QueryMembershipForUserResponse, error) {
	res, err := rm.RSAPI.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
	if err != nil {
		return nil, err
	}
	if !res.RoomExists {
		return nil, matrixerr.Forbidden("unknown room")
	}
	return res, nil
}

// requireJoined fails unless the user is joined to the room.
func (rm *Rooms) requireJoined(ctx context.Context, roomID, userID string) error {
	m, err := rm.membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m.Membership != spec.Join {
		return matrixerr.Forbidden("you are not joined to this room")
	}
	return nil
}

// decodeObject reads a JSON object body, keeping it raw.
func decodeObject(r *http.Request) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, matrixerr.BadJSON("the body must be a JSON object")
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, matrixerr.BadJSON(err.Error())
	}
	if len(raw) > maxEventBytes {
		return nil, matrixerr.TooLarge("event content is too large")
	}
	return raw, nil
}

// roomIDVar returns the validated room ID path variable.
func roomIDVar(r *http.Request) (string, error) {
	roomID := httputil.Vars(r)["roomID"]
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", matrixerr.InvalidParam("invalid room ID")
	}
	return roomID, nil
}

// Send is PUT /rooms/{roomId}/send/{eventType}/{txnId}, and POST
// /rooms/{roomId}/send/{eventType} without a transaction ID (each request a new event).
// NOTSPEC: the POST form is the r0 era's, which the spec dropped
// (https://spec.matrix.org/v1.12/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid);
// application services and sytest still use it, as Synapse serves it.
func (rm *Rooms) Send(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	content, err := decodeObject(r)
	if err != nil {
		return httputil.Response{}, err
	}
	if err = rm.requireJoinedToWrite(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	txnID := vars["txnID"]
	if r.Method == http.MethodPost {
		if txnID, err = randomHex(16); err != nil {
			return httputil.Response{}, err
		}
		txnID = "post:" + txnID
	}
	txn := &rsapi.TransactionID{UserID: dev.UserID, DeviceID: dev.DeviceID, TransactionID: txnID}
	eventID, err := rm.sendProto(r.Context(), roomID, &rsapi.ProtoEvent{Sender: dev.UserID, Type: vars["eventType"], Content: content}, txn)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"event_id": eventID}), nil
}

// Redact is PUT /rooms/{roomId}/redact/{eventId}/{txnId}, and the older POST
// /rooms/{roomId}/redact/{eventId} without a transaction ID (NOTSPEC: gone from the spec
// since r0, still used by clients and sytest), where every request redacts again.
func (rm *Rooms) Redact(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if err = rm.requireJoinedToWrite(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	info, err := rm.RSAPI.QueryRoomInfo(r.Context(), &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	target := vars["eventID"]
	if err = rm.requireEventInRoom(r.Context(), roomID, target); err != nil {
		return httputil.Response{}, err
	}
	content := map[string]any{}
	if body.Reason != "" {
		content["reason"] = body.Reason
	}
	pe := &rsapi.ProtoEvent{Sender: dev.UserID, Type: spec.MRoomRedaction, Redacts: target}
	if redactsInContent(info.RoomVersion) {
		content["redacts"] = target
	}
	if pe.Content, err = json.Marshal(content); err != nil {
		return httputil.Response{}, err
	}
	txnID := vars["txnID"]
	if r.Method == http.MethodPost {
		if txnID, err = randomHex(16); err != nil {
			return httputil.Response{}, err
		}
		txnID = "post:" + txnID
	}
	txn := &rsapi.TransactionID{UserID: dev.UserID, DeviceID: dev.DeviceID, TransactionID: "redact:" + txnID}
	eventID, err := rm.sendProto(r.Context(), roomID, pe, txn)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"event_id": eventID}), nil
}

// requireEventInRoom refuses a redaction of an event this server knows in another room (400
// M_INVALID_PARAM, as sytest's "PUT /redact disallows redaction of event in different
// room" expects). An unknown event may still be redacted: the spec lets a redaction arrive
// before the event it redacts.
func (rm *Rooms) requireEventInRoom(ctx context.Context, roomID, eventID string) error {
	res, err := rm.RSAPI.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{EventIDs: []string{eventID}})
	if err != nil {
		return err
	}
	for _, ev := range res.Events {
		if ev.RoomID().String() != roomID {
			return matrixerr.InvalidParam("the event to redact is not in this room")
		}
	}
	return nil
}

// redactsInContent reports whether the room version carries "redacts" in content (v11+).
func redactsInContent(version string) bool {
	switch gomatrixserverlib.RoomVersion(version) {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
		gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
		gomatrixserverlib.RoomVersionV10:
		return false
	}
	return true
}

// PutState is PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (rm *Rooms) PutState(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	content, err := decodeObject(r)
	if err != nil {
		return httputil.Response{}, err
	}
	stateKey := vars["stateKey"]
	eventType := vars["eventType"]
	if eventType == spec.MRoomMember {
		return rm.putMemberState(r.Context(), dev, roomID, stateKey, content)
	}
	if err = rm.requireJoinedToWrite(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	if eventType == mRoomCanonicalAlias && stateKey == "" {
		if err = rm.checkCanonicalAlias(r.Context(), roomID, content); err != nil {
			return httputil.Response{}, err
		}
	}
	if eventID, err := rm.sameState(r.Context(), roomID, dev.UserID, eventType, stateKey, content); err != nil || eventID != "" {
		return httputil.OK(map[string]string{"event_id": eventID}), err
	}
	eventID, err := rm.sendProto(r.Context(), roomID, &rsapi.ProtoEvent{Sender: dev.UserID, Type: eventType, StateKey: &stateKey, Content: content}, nil)
	if err != nil {
		return httputil.Response{}, err
	}
	if eventType == mRoomGuestAccess && stateKey == "" {
		if err = rm.removeGuests(r.Context(), roomID); err != nil {
			return httputil.Response{}, err
		}
	}
	return httputil.OK(map[string]string{"event_id": eventID}), nil
}

// sameState is the ID of the current state event at (eventType, stateKey) when sender sent
// it with the same content, so that setting a state twice makes one event (as Synapse and
// sytest's "Setting state twice is idempotent" expect); "" when a new event is needed.
func (rm *Rooms) sameState(ctx context.Context, roomID, sender, eventType, stateKey string, content json.RawMessage) (string, error) {
	res, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: eventType, StateKey: stateKey}}})
	if err != nil || len(res.StateEvents) != 1 {
		return "", err
	}
	cur := res.StateEvents[0]
	if string(cur.SenderID()) != sender {
		return "", nil
	}
	a, errA := gomatrixserverlib.CanonicalJSON(cur.Content())
	b, errB := gomatrixserverlib.CanonicalJSON(content)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		return "", nil
	}
	return cur.EventID(), nil
}

// readableState returns the state a user may read: current state while joined, the state
// when they left, current state of a world-readable room otherwise. A banned user did not
// leave (the spec's "left the room"): like Synapse, they read only a world-readable room
// (sytest "Remote banned user is kicked and may not rejoin until unbanned").
func (rm *Rooms) readableState(ctx context.Context, roomID, userID string, tuples []rsapi.StateKeyTuple) ([]rsapi.Event, error) {
	m, err := rm.membership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	switch m.Membership {
	case spec.Join:
		res, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: tuples})
		if err != nil {
			return nil, err
		}
		return res.StateEvents, nil
	case spec.Leave:
		res, err := rm.RSAPI.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: roomID, EventID: m.EventID, After: true, Tuples: tuples})
		if err != nil {
			return nil, err
		}
		return res.StateEvents, nil
	}
	res, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID,
		Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}}})
	if err != nil {
		return nil, err
	}
	if len(res.StateEvents) == 1 && historyVisibility(res.StateEvents[0]) == worldReadable {
		cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: tuples})
		if err != nil {
			return nil, err
		}
		return cur.StateEvents, nil
	}
	return nil, matrixerr.Forbidden("you are not a member of this room")
}

// worldReadable is the history visibility that lets anyone read a room's state and history.
const worldReadable = "world_readable"

// historyVisibility is the value of an m.room.history_visibility event.
func historyVisibility(ev rsapi.Event) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return ""
	}
	return c.HistoryVisibility
}

// GetStateEvent is GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (rm *Rooms) GetStateEvent(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	evs, err := rm.readableState(r.Context(), roomID, dev.UserID, []rsapi.StateKeyTuple{{EventType: vars["eventType"], StateKey: vars["stateKey"]}})
	if err != nil {
		return httputil.Response{}, err
	}
	if len(evs) == 0 {
		return httputil.Response{}, matrixerr.NotFound("no such state event")
	}
	if r.URL.Query().Get("format") == "event" {
		return clientEventResponse(evs[0].PDU)
	}
	return httputil.OK(json.RawMessage(evs[0].Content())), nil
}

// GetState is GET /rooms/{roomId}/state.
func (rm *Rooms) GetState(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	evs, err := rm.readableState(r.Context(), roomID, dev.UserID, nil)
	if err != nil {
		return httputil.Response{}, err
	}
	out, err := clientEvents(evs)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(out), nil
}

// canSee applies the history visibility rules to one event for one user.
func (rm *Rooms) canSee(ctx context.Context, roomID, eventID, userID string) (bool, error) {
	state, err := rm.RSAPI.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: roomID, EventID: eventID, Tuples: []rsapi.StateKeyTuple{
		{EventType: spec.MRoomHistoryVisibility}, {EventType: spec.MRoomMember, StateKey: userID},
	}})
	if err != nil {
		return false, err
	}
	visibility := gomatrixserverlib.HistoryVisibilityShared
	membershipAtEvent := ""
	for _, e := range state.StateEvents {
		switch e.Type() {
		case spec.MRoomHistoryVisibility:
			if hv, err := e.HistoryVisibility(); err == nil {
				visibility = hv
			}
		case spec.MRoomMember:
			membershipAtEvent, _ = e.Membership()
		}
	}
	if visibility == gomatrixserverlib.HistoryVisibilityWorldReadable || membershipAtEvent == spec.Join {
		return true, nil
	}
	if visibility == gomatrixserverlib.HistoryVisibilityInvited && membershipAtEvent == spec.Invite {
		return true, nil
	}
	if visibility == gomatrixserverlib.HistoryVisibilityShared {
		m, err := rm.membership(ctx, roomID, userID)
		if err != nil {
			return false, err
		}
		return m.Membership == spec.Join, nil
	}
	return false, nil
}

// Members is GET /rooms/{roomId}/members.
func (rm *Rooms) Members(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	evs, err := rm.readableState(r.Context(), roomID, dev.UserID, nil)
	if err != nil {
		return httputil.Response{}, err
	}
	q := r.URL.Query()
	chunk := []clientevent.Event{}
	for _, e := range evs {
		if e.Type() != spec.MRoomMember {
			continue
		}
		m, _ := e.Membership()
		if want := q.Get("membership"); want != "" && m != want {
			continue
		}
		if not := q.Get("not_membership"); not != "" && m == not {
			continue
		}
		c, err := clientevent.FromPDU(e.PDU)
		if err != nil {
			return httputil.Response{}, err
		}
		chunk = append(chunk, c)
	}
	return httputil.OK(map[string]any{"chunk": chunk}), nil
}

// JoinedMembers is GET /rooms/{roomId}/joined_members.
func (rm *Rooms) JoinedMembers(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	if err = rm.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	res, err := rm.RSAPI.QueryCurrentState(r.Context(), &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return httputil.Response{}, err
	}
	type member struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	joined := map[string]member{}
	for _, e := range res.StateEvents {
		if e.Type() != spec.MRoomMember {
			continue
		}
		if m, _ := e.Membership(); m != spec.Join {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(e.Content(), &c) // a member event with odd content still counts as joined
		joined[*e.StateKey()] = member{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return httputil.OK(map[string]any{"joined": joined}), nil
}

// JoinedRooms is GET /joined_rooms.
func (rm *Rooms) JoinedRooms(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	res, err := rm.RSAPI.QueryRoomsForUser(r.Context(), &rsapi.QueryRoomsForUserRequest{UserID: dev.UserID, Membership: spec.Join})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"joined_rooms": res.RoomIDs}), nil
}

// clientEventResponse answers with one event in the client format.
func clientEventResponse(pdu gomatrixserverlib.PDU) (httputil.Response, error) {
	c, err := clientevent.FromPDU(pdu)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(c), nil
}

// clientEvents converts events to the client format.
func clientEvents(evs []rsapi.Event) ([]clientevent.Event, error) {
	out := make([]clientevent.Event, len(evs))
	for i, e := range evs {
		c, err := clientevent.FromPDU(e.PDU)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

func asMatrixErr(err error, target **matrixerr.Error) bool {
	return errors.As(err, target)
}
