package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const tombstoneType = "m.room.tombstone"

// upgradeCopiedState is the state an upgrade copies to the new room (spec "Server
// behaviour" of room upgrades), besides the power levels and bans.
var upgradeCopiedState = []string{"m.room.server_acl", encryptionType, spec.MRoomName, "m.room.avatar", spec.MRoomTopic,
	"m.room.guest_access", spec.MRoomHistoryVisibility, spec.MRoomJoinRules, mRoomCanonicalAlias, "m.room.pinned_events"}

// upgradeState is the old room's state an upgrade needs.
type upgradeState struct {
	version string
	create  gomatrixserverlib.PDU
	levels  gomatrixserverlib.PDU
	copied  []rsapi.Event
	banned  []string
}

// Upgrade is POST /rooms/{roomId}/upgrade: a new room of new_version with the old room's
// important state, power levels and bans, a tombstone in the old room pointing at it (the
// new create event's predecessor), the old room's power levels raised so that only
// moderators speak, and the local aliases and the directory entry moved. The user must be
// joined and allowed to send m.room.tombstone.
func (rm *Rooms) Upgrade(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		NewVersion string `json:"new_version"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.NewVersion == "" {
		return httputil.Response{}, matrixerr.MissingParam("new_version is required")
	}
	if !supportedRoomVersion(gomatrixserverlib.RoomVersion(body.NewVersion)) {
		return httputil.Response{}, matrixerr.UnsupportedRoomVersion("unsupported room version " + body.NewVersion)
	}
	ctx := r.Context()
	old, err := rm.upgradeState(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(body.NewVersion))
	partition, err := rm.Placement.Reserve(ctx)
	if err != nil {
		return httputil.Response{}, err
	}
	created := false
	defer func() {
		if !created {
			rm.Placement.Release(partition)
		}
	}()
	newID := ""
	predecessor := map[string]string{"room_id": roomID}
	if !verImpl.DomainlessRoomIDs() {
		if newID, err = rm.newRoomID(partition); err != nil {
			return httputil.Response{}, err
		}
		if predecessor["event_id"], err = rm.tombstone(ctx, roomID, dev.UserID, newID); err != nil {
			return httputil.Response{}, err
		}
	}
	var oldCreate map[string]any
	if err = json.Unmarshal(old.create.Content(), &oldCreate); err != nil {
		return httputil.Response{}, err
	}
	createContent := map[string]any{"predecessor": predecessor}
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := oldCreate[k]; ok {
			createContent[k] = v
		}
	}
	extra, err := json.Marshal(createContent)
	if err != nil {
		return httputil.Response{}, err
	}
	create, newID, err := rm.buildCreate(dev.UserID, newID, partition, verImpl, extra)
	if err != nil {
		return httputil.Response{}, err
	}
	protos, err := rm.upgradeEvents(ctx, dev.UserID, old, verImpl)
	if err != nil {
		return httputil.Response{}, err
	}
	input := rsapi.InputRoomEvents{RoomID: newID, RoomVersion: body.NewVersion, Atomic: true,
		Events: []rsapi.InputRoomEvent{{Kind: rsapi.KindNew, Event: &rsapi.Event{PDU: create}}}}
	for i := range protos {
		input.Events = append(input.Events, rsapi.InputRoomEvent{Kind: rsapi.KindNew, Proto: &protos[i]})
	}
	if _, err = rm.submit(ctx, input); err != nil {
		return httputil.Response{}, err
	}
	created = true
	if verImpl.DomainlessRoomIDs() {
		if _, err = rm.tombstone(ctx, roomID, dev.UserID, newID); err != nil {
			return httputil.Response{}, err
		}
	}
	if err = rm.afterUpgrade(ctx, roomID, newID, dev.UserID, old); err != nil {
		return httputil.Response{}, err
	}
	if err = rm.copyDirect(ctx, roomID, newID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"replacement_room": newID}), nil
}

// upgradeState reads the old room's state and checks that the user may upgrade it.
func (rm *Rooms) upgradeState(ctx context.Context, roomID, userID string) (*upgradeState, error) {
	tuples := []rsapi.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}}
	for _, t := range upgradeCopiedState {
		tuples = append(tuples, rsapi.StateKeyTuple{EventType: t})
	}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: tuples, Types: []string{spec.MRoomMember}})
	if err != nil {
		return nil, err
	}
	if !cur.RoomExists {
		return nil, matrixerr.NotFound("unknown room")
	}
	st := &upgradeState{version: cur.RoomVersion}
	joined := false
	for _, e := range cur.StateEvents {
		switch e.Type() {
		case spec.MRoomCreate:
			st.create = e.PDU
		case spec.MRoomPowerLevels:
			st.levels = e.PDU
		case spec.MRoomMember:
			m, _ := e.Membership()
			if *e.StateKey() == userID {
				joined = m == spec.Join
			}
			if m == spec.Ban {
				st.banned = append(st.banned, *e.StateKey())
			}
		default:
			st.copied = append(st.copied, e)
		}
	}
	if !joined || st.create == nil {
		return nil, matrixerr.Forbidden("you are not joined to this room")
	}
	if creators(st.create, cur.RoomVersion)[userID] {
		return st, nil
	}
	if st.levels == nil {
		if string(st.create.SenderID()) == userID {
			return st, nil
		}
		return nil, matrixerr.Forbidden("you may not upgrade this room")
	}
	levels, err := gomatrixserverlib.NewPowerLevelContentFromEvent(st.levels)
	if err != nil || levels.UserLevel(spec.SenderID(userID)) < levels.EventLevel(tombstoneType, true) {
		return nil, matrixerr.Forbidden("you may not upgrade this room")
	}
	return st, nil
}

// upgradeEvents are the new room's events after its create event: the upgrader's join, the
// old power levels (the upgrader at 100 at least, or, from version 12, out of the users map
// as a creator), the copied state and the bans.
func (rm *Rooms) upgradeEvents(ctx context.Context, sender string, old *upgradeState, verImpl gomatrixserverlib.IRoomVersion) ([]rsapi.ProtoEvent, error) {
	var out []rsapi.ProtoEvent
	add := func(evType, stateKey string, content []byte) {
		sk := stateKey
		out = append(out, rsapi.ProtoEvent{Sender: sender, Type: evType, StateKey: &sk, Content: content})
	}
	join := memberContent{Membership: spec.Join}
	if err := rm.profileContent(ctx, sender, &join); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(join)
	if err != nil {
		return nil, err
	}
	add(spec.MRoomMember, sender, raw)
	pl := map[string]any{}
	if old.levels != nil {
		if err = json.Unmarshal(old.levels.Content(), &pl); err != nil {
			return nil, err
		}
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	if verImpl.PrivilegedCreators() {
		delete(users, sender)
		for u := range creators(old.create, old.version) {
			delete(users, u)
		}
	} else if lvl, _ := users[sender].(float64); lvl < 100 {
		users[sender] = 100
	}
	pl["users"] = users
	if raw, err = json.Marshal(pl); err != nil {
		return nil, err
	}
	add(spec.MRoomPowerLevels, "", raw)
	guests := false
	for _, e := range old.copied {
		add(e.Type(), *e.StateKey(), e.Content())
		guests = guests || e.Type() == mRoomGuestAccess && *e.StateKey() == ""
	}
	if !guests {
		// The old room forbids guests by having no m.room.guest_access; the new room
		// states it, as clients (and sytest's upgrade tests) expect the event there.
		add(mRoomGuestAccess, "", []byte(`{"guest_access":"forbidden"}`))
	}
	for _, u := range old.banned {
		add(spec.MRoomMember, u, []byte(`{"membership":"ban"}`))
	}
	return out, nil
}

// tombstone sends the old room's m.room.tombstone pointing at the new room.
func (rm *Rooms) tombstone(ctx context.Context, roomID, sender, replacement string) (string, error) {
	content, err := json.Marshal(map[string]string{"body": "This room has been replaced", "replacement_room": replacement})
	if err != nil {
		return "", err
	}
	empty := ""
	return rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: sender, Type: tombstoneType, StateKey: &empty, Content: content}, nil)
}

// afterUpgrade restricts the old room (events_default and invite at 50, or above
// users_default), empties its canonical alias, then moves the local aliases and the
// directory entry to the new room.
func (rm *Rooms) afterUpgrade(ctx context.Context, oldID, newID, sender string, old *upgradeState) error {
	if old.levels != nil {
		pl := map[string]any{}
		if err := json.Unmarshal(old.levels.Content(), &pl); err != nil {
			return err
		}
		usersDefault, _ := pl["users_default"].(float64)
		restricted := max(50, usersDefault+1)
		pl["events_default"], pl["invite"] = restricted, restricted
		content, err := json.Marshal(pl)
		if err != nil {
			return err
		}
		empty := ""
		if _, err = rm.sendProto(ctx, oldID, &rsapi.ProtoEvent{Sender: sender, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: content}, nil); err != nil {
			return err
		}
	}
	for _, e := range old.copied {
		if e.Type() == mRoomCanonicalAlias && string(e.Content()) != "{}" {
			empty := ""
			if _, err := rm.sendProto(ctx, oldID, &rsapi.ProtoEvent{Sender: sender, Type: mRoomCanonicalAlias, StateKey: &empty, Content: []byte("{}")}, nil); err != nil {
				return err
			}
		}
	}
	aliases, err := rm.RSAPI.QueryAliasesForRoom(ctx, &rsapi.QueryAliasesForRoomRequest{RoomID: oldID})
	if err != nil {
		return err
	}
	for _, a := range aliases.Aliases {
		if _, err = rm.RSAPI.PerformRemoveRoomAlias(ctx, &rsapi.PerformRemoveRoomAliasRequest{Alias: a}); err != nil {
			return err
		}
		if _, err = rm.RSAPI.PerformSetRoomAlias(ctx, &rsapi.PerformSetRoomAliasRequest{Alias: a, RoomID: newID, Creator: sender}); err != nil {
			return err
		}
	}
	vis, err := rm.RSAPI.QueryRoomVisibility(ctx, &rsapi.QueryRoomVisibilityRequest{RoomID: oldID})
	if err != nil || !vis.Public {
		return err
	}
	if _, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: newID, Public: true}); err != nil {
		return err
	}
	_, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: oldID, Public: false})
	return err
}

// predecessor is the room ID the room's create event names as the room it replaced, "" for
// none.
func (rm *Rooms) predecessor(ctx context.Context, roomID string) (string, error) {
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomCreate}}})
	if err != nil || len(cur.StateEvents) == 0 {
		return "", err
	}
	var c struct {
		Predecessor struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if json.Unmarshal(cur.StateEvents[0].Content(), &c) != nil {
		return "", nil // a create event this server stored has an object content
	}
	return c.Predecessor.RoomID, nil
}

// adoptPredecessorDirectory moves this server's aliases and directory entry from the room a
// joined room replaced to it, as the upgrading server does for its own: on another server
// they follow when its first user joins the new room (sytest "/upgrade moves remote aliases
// to the new room", "Local and remote users' homeservers remove a room from their public
// directory on upgrade"). Only when the old room's current state here has the tombstone
// naming the new room: a create event alone could name any room as its predecessor.
func (rm *Rooms) adoptPredecessorDirectory(ctx context.Context, roomID string) error {
	oldID, err := rm.predecessor(ctx, roomID)
	if err != nil || oldID == "" {
		return err
	}
	tomb, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: oldID, Tuples: []rsapi.StateKeyTuple{{EventType: tombstoneType}}})
	if err != nil || len(tomb.StateEvents) == 0 {
		return err
	}
	var t struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	if json.Unmarshal(tomb.StateEvents[0].Content(), &t) != nil || t.ReplacementRoom != roomID {
		return nil
	}
	aliases, err := rm.RSAPI.QueryAliasesForRoom(ctx, &rsapi.QueryAliasesForRoomRequest{RoomID: oldID})
	if err != nil {
		return err
	}
	for _, a := range aliases.Aliases {
		owner, err := rm.RSAPI.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: a})
		if err != nil {
			return err
		}
		if _, err = rm.RSAPI.PerformRemoveRoomAlias(ctx, &rsapi.PerformRemoveRoomAliasRequest{Alias: a}); err != nil {
			return err
		}
		if _, err = rm.RSAPI.PerformSetRoomAlias(ctx, &rsapi.PerformSetRoomAliasRequest{Alias: a, RoomID: roomID, Creator: owner.Creator}); err != nil {
			return err
		}
	}
	vis, err := rm.RSAPI.QueryRoomVisibility(ctx, &rsapi.QueryRoomVisibilityRequest{RoomID: oldID})
	if err != nil || !vis.Public {
		return err
	}
	if _, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: true}); err != nil {
		return err
	}
	_, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: oldID, Public: false})
	return err
}

// copyDirect adds newID to every list of the user's m.direct account data that holds oldID,
// so that an upgraded direct chat stays one (sytest "/upgrade preserves direct room state").
func (rm *Rooms) copyDirect(ctx context.Context, oldID, newID, userID string) error {
	res, err := rm.UserAPI.QueryAccountData(ctx, &uapi.QueryAccountDataRequest{UserID: userID, DataType: directType})
	if err != nil {
		return err
	}
	raw, ok := res.Global[directType]
	if !ok {
		return nil
	}
	var direct map[string][]string
	if json.Unmarshal(raw, &direct) != nil {
		return nil // content not of the event's shape names no direct rooms
	}
	changed := false
	for u, rooms := range direct {
		if slices.Contains(rooms, oldID) && !slices.Contains(rooms, newID) {
			direct[u], changed = append(rooms, newID), true
		}
	}
	if !changed {
		return nil
	}
	data, err := json.Marshal(direct)
	if err != nil {
		return err
	}
	_, err = rm.UserAPI.PerformAccountData(ctx, &uapi.PerformAccountDataRequest{UserID: userID, DataType: directType, Data: data})
	return err
}

// directType is the account data listing a user's direct chats by the other user.
const directType = "m.direct"

// copyPredecessorTags gives the user, joining a room that replaced another, the tags they
// had on the old room, unless they tagged the new room already, and marks the new room
// direct where the old one was.
func (rm *Rooms) copyPredecessorTags(ctx context.Context, roomID, userID string) error {
	oldID, err := rm.predecessor(ctx, roomID)
	if err != nil || oldID == "" {
		return err
	}
	if err = rm.copyDirect(ctx, oldID, roomID, userID); err != nil {
		return err
	}
	have, err := rm.UserAPI.QueryAccountData(ctx, &uapi.QueryAccountDataRequest{UserID: userID, RoomID: roomID, DataType: roomTagType})
	if err != nil || len(have.Rooms[roomID]) > 0 {
		return err
	}
	old, err := rm.UserAPI.QueryAccountData(ctx, &uapi.QueryAccountDataRequest{UserID: userID, RoomID: oldID, DataType: roomTagType})
	if err != nil {
		return err
	}
	tags, ok := old.Rooms[oldID][roomTagType]
	if !ok {
		return nil
	}
	_, err = rm.UserAPI.PerformAccountData(ctx, &uapi.PerformAccountDataRequest{UserID: userID, RoomID: roomID, DataType: roomTagType, Data: tags})
	return err
}
