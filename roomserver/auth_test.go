package roomserver_test

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestUsersDefaultEscalation: a user at the level that may send power levels (50) must
// not raise users_default above their own level (the spec's power levels rule, which the
// pinned gomatrixserverlib omits): refused for a local event and rejected when another
// server sends it, so that the room's state does not diverge from other servers'.
func TestUsersDefaultEscalation(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		levels := func(creator, mod string, usersDefault int) map[string]any {
			return map[string]any{"users": map[string]int{creator: 100, mod: 50}, "users_default": usersDefault,
				"events": map[string]int{spec.MRoomPowerLevels: 50}}
		}
		t.Run("local", func(t *testing.T) {
			alice, mod := "@alice:"+serverName, "@mod:"+serverName
			roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
			res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
				roomtest.Proto(mod, spec.MRoomMember, roomtest.StateKey(mod), map[string]string{"membership": "join"}),
				roomtest.Proto(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), levels(alice, mod, 0)),
			}})
			wantOK(t, "mod joins and gets 50", res)
			res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
				roomtest.Proto(mod, spec.MRoomPowerLevels, roomtest.StateKey(""), levels(alice, mod, 100))}})
			if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
				t.Fatalf("mod raised users_default to 100: %+v", res[0])
			}
			res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
				roomtest.Proto(mod, spec.MRoomPowerLevels, roomtest.StateKey(""), levels(alice, mod, 50))}})
			wantOK(t, "users_default up to the mod's own level", res)
		})
		t.Run("federated", func(t *testing.T) {
			alice, mod := "@alice:"+remoteServer, "@mod:"+remoteServer
			r := newRemoteRoom(t, alice)
			modJoin := r.Event(mod, spec.MRoomMember, roomtest.StateKey(mod), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
			pl2 := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), levels(alice, mod, 0), 6, r.pdus(modJoin), r.pdus(r.create, r.pl, r.aliceJoin))
			var in []api.InputRoomEvent
			for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, modJoin, pl2} {
				in = append(in, roomtest.Input(api.KindFederated, ev))
			}
			wantOK(t, "room with a mod", h.submitRemote(r.RoomID, r.Version, in...))
			escalate := r.Event(mod, spec.MRoomPowerLevels, roomtest.StateKey(""), levels(alice, mod, 100), 7, r.pdus(pl2), r.pdus(r.create, pl2, modJoin))
			res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, escalate))
			if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
				t.Fatalf("federated users_default escalation: %+v", res[0])
			}
			if cur := h.currentState(r.RoomID, api.StateKeyTuple{EventType: spec.MRoomPowerLevels}); cur[spec.MRoomPowerLevels+"|"] != pl2.EventID() {
				t.Fatalf("power levels now %v, want %s", cur, pl2.EventID())
			}
		})
	})
}

// TestLocalContentIsTypeChecked: a local event whose auth-relevant content has the wrong
// type is 400 M_BAD_JSON, never signed into the room nor a 403 naming a Go type.
func TestLocalContentIsTypeChecked(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		for _, tc := range []struct {
			evType  string
			content any
		}{
			{spec.MRoomJoinRules, map[string]any{"join_rule": 5}},
			{spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: "high"}}},
			{spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100}, "ban": true}},
			{spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100}, "ban": "50"}},
			{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": []int{1}}},
		} {
			res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, tc.evType, roomtest.StateKey(""), tc.content)}})
			if res[0].Err == nil || res[0].Err.Code != "M_BAD_JSON" || res[0].Err.Status != 400 {
				t.Fatalf("%s %v: %+v", tc.evType, tc.content, res[0])
			}
		}
	})
}
