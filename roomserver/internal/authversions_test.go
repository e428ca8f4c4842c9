package internal

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// offeredVersions are the room versions this server offers: createRoom and /capabilities
// accept gomatrixserverlib's stable versions.
func offeredVersions(t *testing.T) []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for i := 1; i <= 12; i++ {
		v := gomatrixserverlib.RoomVersion(strconv.Itoa(i))
		if !gomatrixserverlib.StableRoomVersion(v) {
			t.Fatalf("room version %s is not offered", v)
		}
		out = append(out, v)
	}
	return out
}

// TestAuthEveryVersion runs the authorisation rules every room version shares through the
// roomserver's check (allowed) in each version offered, 1 to 12. Rule numbers are those of
// rooms v8 ("Authorization rules"); the power levels rule is 9 there, 10 from v10.
func TestAuthEveryVersion(t *testing.T) {
	msg := func(sender string) stateEvent {
		return stateEvent{sender, "m.room.message", nil, map[string]any{"body": "hi"}}
	}
	withLevels := func(v gomatrixserverlib.RoomVersion, change func(pl map[string]any)) map[string]any {
		pl := basePowerLevels(v)
		change(pl)
		return pl
	}
	cases := []struct {
		name  string
		extra []stateEvent // after alice, mod and admin joined, power levels, public join rule
		event func(v gomatrixserverlib.RoomVersion) stateEvent
		allow bool
	}{
		{name: "5: a non-member's message", event: func(gomatrixserverlib.RoomVersion) stateEvent { return msg(bob) }},
		{name: "5: a member's message", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return msg(bob) }, allow: true},
		{name: "5: a departed member's message", extra: []stateEvent{member(bob, bob, spec.Join), member(bob, bob, spec.Leave)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return msg(bob) }},
		{name: "7: state below state_default", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent {
				return state(bob, "m.room.topic", map[string]any{"topic": "t"})
			}},
		{name: "7: state at state_default", event: func(gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, "m.room.topic", map[string]any{"topic": "t"})
		}, allow: true},
		{name: "7: an events entry above the sender", event: func(gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, "m.room.tombstone", map[string]any{"body": "x", "replacement_room": "!n:a.test"})
		}},
		{name: "8: a state key of another user", event: func(gomatrixserverlib.RoomVersion) stateEvent {
			return stateEvent{mod, "m.custom", roomtest.StateKey(bob), map[string]any{}}
		}},
		{name: "8: a state key of the sender", event: func(gomatrixserverlib.RoomVersion) stateEvent {
			return stateEvent{mod, "m.custom", roomtest.StateKey(mod), map[string]any{}}
		}, allow: true},
		{name: "4.3: join of a public room", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, bob, spec.Join) }, allow: true},
		{name: "4.3.3: a banned user's join", extra: []stateEvent{member(mod, bob, spec.Ban)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, bob, spec.Join) }},
		{name: "4.3.2: a join for another user", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(mod, bob, spec.Join) }},
		{name: "4.4: invite by a non-member", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, "@eve:a.test", spec.Invite) }},
		{name: "4.4: invite of a joined user", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(mod, bob, spec.Invite) }},
		{name: "4.4: invite at the invite level", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(mod, bob, spec.Invite) }, allow: true},
		{name: "4.5: kick below the kick level", extra: []stateEvent{member(bob, bob, spec.Join), member("@eve:a.test", "@eve:a.test", spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, "@eve:a.test", spec.Leave) }},
		{name: "4.5: kick of a higher user", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(mod, admin, spec.Leave) }},
		{name: "4.6: ban at the ban level", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(mod, bob, spec.Ban) }, allow: true},
		{name: "4.6: ban below the ban level", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, mod, spec.Ban) }},
		{name: "4.8: an unknown membership", event: func(gomatrixserverlib.RoomVersion) stateEvent { return member(bob, bob, "wander") }},
		// The users_default bug: a sender at the power levels level (50) raised
		// users_default above their own level, so every later joiner had full power.
		{name: "9.3 users_default raised above the sender", event: func(v gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["users_default"] = 51 }))
		}},
		{name: "9.3 ban level raised above the sender", event: func(v gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["ban"] = 51 }))
		}},
		{name: "9.3 levels up to the sender's", event: func(v gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["users_default"] = 50; pl["ban"] = 50 }))
		}, allow: true},
		{name: "9.6 a user promoted above the sender", extra: []stateEvent{member(bob, bob, spec.Join)},
			event: func(v gomatrixserverlib.RoomVersion) stateEvent {
				return state(mod, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["users"].(map[string]any)[bob] = 60 }))
			}},
		{name: "9.7 an equal user demoted", event: func(v gomatrixserverlib.RoomVersion) stateEvent {
			return state(admin, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["users"].(map[string]any)[mod] = 0 }))
		}, allow: true},
		{name: "9.7 a higher user demoted", event: func(v gomatrixserverlib.RoomVersion) stateEvent {
			return state(mod, spec.MRoomPowerLevels, withLevels(v, func(pl map[string]any) { pl["users"].(map[string]any)[admin] = 0 }))
		}},
	}
	for _, v := range offeredVersions(t) {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v%s %s", v, tc.name), func(t *testing.T) {
				st := []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, basePowerLevels(v)),
					state(alice, spec.MRoomJoinRules, map[string]any{"join_rule": "public"}),
					member(mod, mod, spec.Join), member(admin, admin, spec.Join)}
				ev, auth := buildRoom(t, v, append(st, tc.extra...), tc.event(v))
				if err := allowed(ev, auth); (err == nil) != tc.allow {
					t.Fatalf("allowed: %v, want allowed %v", err, tc.allow)
				}
			})
		}
	}
}

// createEvent is a signed m.room.create by alice with the given content (room_version is
// added).
func createEvent(t *testing.T, version gomatrixserverlib.RoomVersion, content map[string]any) (gomatrixserverlib.PDU, *roomtest.Remote) {
	t.Helper()
	key := roomtest.NewKey(t)
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	roomID := ""
	if !verImpl.DomainlessRoomIDs() {
		roomID = "!room:a.test"
	}
	content["room_version"] = string(version)
	pe := gomatrixserverlib.ProtoEvent{SenderID: alice, RoomID: roomID, Type: spec.MRoomCreate, StateKey: roomtest.StateKey(""), Depth: 1, Version: verImpl}
	if err := pe.SetContent(content); err != nil {
		t.Fatal(err)
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), "a.test", roomtest.KeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	return ev, &roomtest.Remote{T: t, Key: key}
}

// TestAuthVersionChanges: the rules that changed in room versions 11 and 12, each case in
// the version before the change and in the version that made it.
func TestAuthVersionChanges(t *testing.T) {
	v10, v11, v12 := gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12
	const carol = "@carol:a.test"
	cases := []struct {
		name    string
		version gomatrixserverlib.RoomVersion
		create  map[string]any // the create event's content
		state   []stateEvent
		event   stateEvent
		// createOnly checks the create event itself.
		createOnly bool
		allow      bool
	}{
		// v11 ("Room version 11": "Remove the creator property of m.room.create"): the
		// creator is the create event's sender, whatever content.creator says. Without
		// power levels "the room creator has power level 100" and may ban (ban level 50).
		// (Up to v10 the spec's creator is content.creator; gomatrixserverlib takes the
		// sender, which only differs for a create event whose creator is not its sender:
		// docs/auth.md.)
		{name: "content.creator is ignored, the sender is the creator", version: v11, create: map[string]any{"creator": bob},
			state: []stateEvent{member(alice, alice, spec.Join)}, event: member(alice, carol, spec.Ban), allow: true},
		// Rule 1.4 up to v10: "If content has no creator property, reject."
		{name: "a create without content.creator", version: v10, create: map[string]any{}, createOnly: true},
		{name: "a create without content.creator", version: v11, create: map[string]any{}, createOnly: true, allow: true},
		// v12: "Room creators have infinitely high power level and cannot be specified in
		// the users field of m.room.power_levels".
		{name: "the creator listed in users", version: v11, create: map[string]any{},
			state: []stateEvent{member(alice, alice, spec.Join)}, event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100}}), allow: true},
		{name: "the creator listed in users", version: v12, create: map[string]any{},
			state: []stateEvent{member(alice, alice, spec.Join)}, event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100}})},
		{name: "an additional creator listed in users", version: v12, create: map[string]any{"additional_creators": []string{carol}},
			state: []stateEvent{member(alice, alice, spec.Join)}, event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{carol: 100}})},
		{name: "the creator demotes a user at 100", version: v11, create: map[string]any{},
			state: []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100, admin: 100}})},
			event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{alice: 100, admin: 0}})},
		{name: "the creator demotes a user at 100", version: v12, create: map[string]any{},
			state: []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 100}})},
			event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 0}}), allow: true},
		{name: "the creator sets a level beyond 100", version: v12, create: map[string]any{},
			state: []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 100}})},
			event: state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 100}, "events": map[string]any{"m.room.tombstone": 1000}}), allow: true},
		{name: "an additional creator outranks a user at 100", version: v12, create: map[string]any{"additional_creators": []string{carol}},
			state: []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 100}}),
				state(alice, spec.MRoomJoinRules, map[string]any{"join_rule": "public"}), member(carol, carol, spec.Join)},
			event: state(carol, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 0}}), allow: true},
		{name: "a user at 100 cannot demote an additional creator's peer", version: v12, create: map[string]any{"additional_creators": []string{carol}},
			state: []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, map[string]any{"users": map[string]any{admin: 100}}),
				state(alice, spec.MRoomJoinRules, map[string]any{"join_rule": "public"}), member(admin, admin, spec.Join), member(carol, carol, spec.Join)},
			event: member(admin, carol, spec.Ban)},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("v%s %s", tc.version, tc.name), func(t *testing.T) {
			create, r := createEvent(t, tc.version, tc.create)
			if tc.createOnly {
				empty, _ := gomatrixserverlib.NewAuthEvents(nil)
				if err := allowed(create, empty); (err == nil) != tc.allow {
					t.Fatalf("allowed: %v, want allowed %v", err, tc.allow)
				}
				return
			}
			ev, auth := buildRoomFrom(t, r.Key, create, tc.state, tc.event)
			if err := allowed(ev, auth); (err == nil) != tc.allow {
				t.Fatalf("allowed: %v, want allowed %v", err, tc.allow)
			}
		})
	}
}
