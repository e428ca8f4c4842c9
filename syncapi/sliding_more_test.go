package syncapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// deleteDevice produces the key change the userapi writes when it deletes a device.
func (h *harness) deleteDevice(userID, deviceID string, streamID int64) {
	h.t.Helper()
	b, _ := json.Marshal(uapi.OutputKeyChangeEvent{Type: uapi.OutputKeyChangeTypeDeviceKeys, // plain structs always encode
		DeviceKeys: &uapi.DeviceKeyChange{UserID: userID, DeviceID: deviceID, StreamID: streamID, Deleted: true}})
	if _, err := h.log.Produce(context.Background(), keyTopic, eventlog.Message{Key: []byte(userID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
	h.waitConsumed()
}

// TestSlidingDeletedDeviceForgotten: deleting a device forgets its sliding sync
// connections (their pos answers M_UNKNOWN_POS); deleting another device of the same user
// leaves them alone.
func TestSlidingDeletedDeviceForgotten(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		h.newRoom(alice)
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1}}
		pos := h.sliding(alice, slidingReq{ConnID: "main", Lists: list}).Pos

		h.deleteDevice(alice, "OTHERDEVICE", 1)
		pos = h.sliding(alice, slidingReq{ConnID: "main", Pos: pos, Lists: list}).Pos

		h.deleteDevice(alice, "DEValice", 2)
		h.wantSlidingError(alice, slidingReq{ConnID: "main", Pos: pos, Lists: list}, http.StatusBadRequest, "M_UNKNOWN_POS")
	})
}

// removeState produces, as the roomserver does after state resolution dropped entries of
// a room's state, a new message whose state delta removes eventIDs without replacing them.
func (h *harness) removeState(roomID, sender string, eventIDs ...string) {
	h.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: "m.room.message", Depth: 100, Version: verImpl}
	if err := pe.SetContent(map[string]string{"msgtype": "m.text", "body": "after resolution"}); err != nil {
		h.t.Fatal(err)
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), serverName, "ed25519:test", h.key)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &rsapi.OutputNewRoomEvent{ // plain structs always encode
		Event: rsapi.Event{PDU: ev}, RemovesStateEventIDs: eventIDs, HistoryVisibility: "shared"}})
	if _, err = h.log.Produce(context.Background(), outTopic, eventlog.Message{Key: []byte(roomID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
	h.waitConsumed()
}

// TestSlidingStateStubs: state that state resolution removes (not replaced) comes as a
// StateStub (type and state key, no content) in the next response, for the entries the
// room's required_state asks for only; an initial response never carries stubs.
func TestSlidingStateStubs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice, roomtest.Proto(alice, spec.MRoomTopic, roomtest.StateKey(""), map[string]string{"topic": "old topic"}))
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1,
			RequiredState: [][]string{{spec.MRoomTopic, ""}, {spec.MRoomName, ""}}}}
		res := h.sliding(alice, slidingReq{ConnID: "c", Lists: list})
		r := res.Rooms[roomID]
		if r == nil || len(r.RequiredState) != 1 || r.RequiredState[0].Type != spec.MRoomTopic || r.RequiredState[0].Stub {
			t.Fatalf("first response: %+v", r)
		}
		topicID := r.RequiredState[0].EventID
		joinRulesID := ""
		full := h.sliding(alice, slidingReq{ConnID: "other", Lists: map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1,
			RequiredState: [][]string{{spec.MRoomJoinRules, ""}}}}})
		if jr := full.Rooms[roomID]; jr != nil && len(jr.RequiredState) == 1 {
			joinRulesID = jr.RequiredState[0].EventID
		}
		if joinRulesID == "" {
			t.Fatalf("no join rules: %+v", full.Rooms[roomID])
		}

		h.removeState(roomID, alice, topicID, joinRulesID)
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: res.Pos, Lists: list})
		r = res.Rooms[roomID]
		if r == nil || r.Initial || !slices.Equal(timelineBodies(r), []string{"after resolution"}) || !slices.Equal(stateKeys(r), []string{"m.room.topic|"}) || !r.RequiredState[0].Stub {
			t.Fatalf("after the removal: %+v", r)
		}
		raw, _ := json.Marshal(r.RequiredState[0]) // a stub always encodes
		if string(raw) != `{"type":"m.room.topic","state_key":""}` {
			t.Fatalf("stub encodes as %s", raw)
		}
		// A new connection is sent the room whole, without the removed entries or stubs.
		fresh := h.sliding(alice, slidingReq{ConnID: "fresh", Lists: list})
		if r := fresh.Rooms[roomID]; r == nil || len(r.RequiredState) != 0 {
			t.Fatalf("fresh connection: %+v", r)
		}
	})
}

// TestSlidingDirectInvite: an invite with is_direct is a DM (flagged is_dm, matched by the
// is_dm filter) before the room is in the user's m.direct; one without is not. Once the
// user joins and m.direct does not name the room, the next response says is_dm false.
func TestSlidingDirectInvite(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		direct, group := h.newRoom(bob), h.newRoom(bob)
		h.submit(direct, roomtest.Proto(bob, spec.MRoomMember, roomtest.StateKey(alice), map[string]any{"membership": spec.Invite, "is_direct": true}))
		h.member(group, bob, alice, spec.Invite)
		h.waitConsumed()
		lists := map[string]slidingList{
			"dms": {Range: []int{0, 9}, TimelineLimit: 1, Filters: map[string]any{"is_dm": true}},
			"all": {Range: []int{0, 9}, TimelineLimit: 1},
		}
		res := h.sliding(alice, slidingReq{ConnID: "c", Lists: lists})
		if res.Lists["dms"].Count != 1 || res.Lists["all"].Count != 2 {
			t.Fatalf("counts %+v", res.Lists)
		}
		if r := res.Rooms[direct]; r == nil || r.IsDM == nil || !*r.IsDM || !slices.Contains(r.Lists, "dms") {
			t.Fatalf("direct invite: %+v", r)
		}
		if r := res.Rooms[group]; r == nil || r.IsDM != nil {
			t.Fatalf("group invite: %+v", r)
		}
		h.member(direct, alice, alice, spec.Join)
		h.waitConsumed()
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: res.Pos, Lists: lists})
		if r := res.Rooms[direct]; r == nil || r.IsDM == nil || *r.IsDM || res.Lists["dms"].Count != 0 {
			t.Fatalf("after joining: %+v, counts %+v", r, res.Lists)
		}
	})
}

// TestSlidingLazyMembersOnce: with lazy members, a sender's member event goes out once on
// a connection; a new sender's goes out when they first speak; after a limited timeline
// (when MSC4186 has the client forget its members) they go out again, as they do on a new
// connection.
func TestSlidingLazyMembersOnce(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol := h.user("alice"), h.user("bob"), h.user("carol")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.member(roomID, carol, carol, spec.Join)
		h.send(roomID, bob, "one")
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1,
			RequiredState: map[string]any{"include": []any{map[string]any{"type": spec.MRoomCreate}}, "lazy_members": true}}}
		step := func(what, pos string, want []string) string {
			t.Helper()
			h.waitConsumed()
			res := h.sliding(alice, slidingReq{ConnID: "c", Pos: pos, Lists: list})
			r := res.Rooms[roomID]
			if r == nil || !slices.Equal(stateKeys(r), want) {
				t.Fatalf("%s: required state %v, want %v (room %+v)", what, stateKeys(r), want, r)
			}
			return res.Pos
		}
		pos := step("first", "", []string{"m.room.create|", "m.room.member|" + bob})
		h.send(roomID, bob, "two")
		pos = step("bob again", pos, nil)
		h.send(roomID, carol, "three")
		pos = step("carol", pos, []string{"m.room.member|" + carol})
		for _, body := range []string{"four", "five", "six"} {
			h.send(roomID, bob, body)
		}
		step("after a gap", pos, []string{"m.room.member|" + bob})
	})
}

// TestSlidingFiltersFollowState: the is_encrypted and room type filters, whose facts the
// sync API keeps in memory, see a room turn encrypted in the next response.
func TestSlidingFiltersFollowState(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.newRoom(alice)
		h.waitConsumed()
		lists := map[string]slidingList{
			"plain":     {Range: []int{0, 9}, TimelineLimit: 0, Filters: map[string]any{"is_encrypted": false, "not_room_types": []string{"m.space"}}},
			"encrypted": {Range: []int{0, 9}, TimelineLimit: 0, Filters: map[string]any{"is_encrypted": true}},
		}
		res := h.sliding(alice, slidingReq{ConnID: "c", Lists: lists})
		if res.Lists["plain"].Count != 2 || res.Lists["encrypted"].Count != 0 {
			t.Fatalf("before: %+v", res.Lists)
		}
		h.submit(roomID, roomtest.Proto(alice, "m.room.encryption", roomtest.StateKey(""), map[string]string{"algorithm": "m.megolm.v1.aes-sha2"}))
		h.waitConsumed()
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: res.Pos, Lists: lists})
		if res.Lists["plain"].Count != 1 || res.Lists["encrypted"].Count != 1 {
			t.Fatalf("after encryption: %+v", res.Lists)
		}
		if r := res.Rooms[roomID]; r == nil || !slices.Contains(r.Lists, "encrypted") {
			t.Fatalf("encrypted room: %+v", r)
		}
	})
}
