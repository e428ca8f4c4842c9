package internal

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

const (
	alice = "@alice:a.test" // creator, level 100 (before v12)
	mod   = "@mod:a.test"   // level 50, which may send power levels
	bob   = "@bob:a.test"   // level 0
	admin = "@admin:a.test" // level 100
)

// stateEvent is one event of a test room's state (or the event under test).
type stateEvent struct {
	sender, evType string
	stateKey       *string
	content        any
}

func member(sender, target, membership string) stateEvent {
	return stateEvent{sender, spec.MRoomMember, &target, map[string]any{"membership": membership}}
}

func state(sender, evType string, content any) stateEvent {
	return stateEvent{sender, evType, roomtest.StateKey(""), content}
}

func basePowerLevels(version gomatrixserverlib.RoomVersion) map[string]any {
	users := map[string]any{mod: 50, admin: 100}
	if !gomatrixserverlib.MustGetRoomVersion(version).PrivilegedCreators() {
		users[alice] = 100
	}
	return map[string]any{
		"users": users, "events": map[string]any{spec.MRoomPowerLevels: 50, "m.room.tombstone": 100},
		"events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "invite": 0,
	}
}

// buildRoom signs the room's state (create event first) and the event under test, and
// returns the event with the room's state as its auth events.
func buildRoom(t *testing.T, version gomatrixserverlib.RoomVersion, roomState []stateEvent, ev stateEvent) (gomatrixserverlib.PDU, *gomatrixserverlib.AuthEvents) {
	t.Helper()
	key := roomtest.NewKey(t)
	roomID := ""
	if !gomatrixserverlib.MustGetRoomVersion(version).DomainlessRoomIDs() {
		roomID = "!room:a.test"
	}
	return buildRoomFrom(t, key, roomtest.CreateEvent(t, key, "a.test", version, alice, roomID), roomState, ev)
}

// buildRoomFrom is buildRoom with the room's create event given, signed by key.
func buildRoomFrom(t *testing.T, key ed25519.PrivateKey, create gomatrixserverlib.PDU, roomState []stateEvent, ev stateEvent) (gomatrixserverlib.PDU, *gomatrixserverlib.AuthEvents) {
	t.Helper()
	version := create.Version()
	r := &roomtest.Remote{T: t, Key: key, Origin: "a.test", Version: version, RoomID: create.RoomID().String()}
	all := []gomatrixserverlib.PDU{create}
	prev := create
	for i, s := range roomState {
		pdu := r.Event(s.sender, s.evType, s.stateKey, s.content, int64(i+2), []gomatrixserverlib.PDU{prev}, nil)
		all = append(all, pdu)
		prev = pdu
	}
	pdu := r.Event(ev.sender, ev.evType, ev.stateKey, ev.content, int64(len(roomState)+2), []gomatrixserverlib.PDU{prev}, nil)
	auth, err := gomatrixserverlib.NewAuthEvents(all)
	if err != nil {
		t.Fatal(err)
	}
	return pdu, auth
}

// TestSpecAuth runs the spec's authorisation rules where the pinned gomatrixserverlib
// departs from them. Each case is one rule (docs/auth.md); gmslAccepts marks the cases
// gomatrixserverlib.Allowed alone lets through, which is the bug allowed() fixes.
func TestSpecAuth(t *testing.T) {
	joined := func(v gomatrixserverlib.RoomVersion, joinRule string, extra ...stateEvent) []stateEvent {
		s := []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, basePowerLevels(v)),
			state(alice, spec.MRoomJoinRules, map[string]any{"join_rule": joinRule}),
			member(mod, mod, spec.Join), member(admin, admin, spec.Join)}
		return append(s, extra...)
	}
	withLevels := func(v gomatrixserverlib.RoomVersion, change func(pl map[string]any)) map[string]any {
		pl := basePowerLevels(v)
		change(pl)
		return pl
	}
	v6, v9, v10, v12 := gomatrixserverlib.RoomVersionV6, gomatrixserverlib.RoomVersionV9, gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV12
	cases := []struct {
		name       string
		version    gomatrixserverlib.RoomVersion
		state      []stateEvent
		event      stateEvent
		allow      bool
		gmslAccept bool
		badJSON    bool
	}{
		// Power levels: "For the properties users_default, events_default, state_default,
		// ban, redact, kick, invite check if they were added, changed or removed".
		{name: "mod raises users_default above their level", version: v10, state: joined(v10, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["users_default"] = 100 })), gmslAccept: true},
		{name: "mod raises users_default to their level", version: v10, state: joined(v10, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["users_default"] = 50 })), allow: true},
		{name: "admin raises users_default", version: v10, state: joined(v10, "public"),
			event: state(admin, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["users_default"] = 100 })), allow: true},
		{name: "stringy users_default in v9", version: v9, state: joined(v9, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v9, func(pl map[string]any) { pl["users_default"] = "100" })), gmslAccept: true},
		{name: "v12 mod raises users_default", version: v12, state: joined(v12, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v12, func(pl map[string]any) { pl["users_default"] = 100 })), gmslAccept: true},
		{name: "v12 creator raises users_default beyond 100", version: v12, state: joined(v12, "public"),
			event: state(alice, spec.MRoomPowerLevels, withLevels(v12, func(pl map[string]any) { pl["users_default"] = 1000 })), allow: true},
		// "For each entry being changed in, or removed from, the events property: if the
		// current value is greater than the sender's current power level, reject."
		{name: "mod removes an events entry above them equal to events_default", version: v10,
			state: joined(v10, "public", state(alice, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["events_default"] = 100 }))),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) {
				pl["events_default"] = 100
				pl["events"] = map[string]any{spec.MRoomPowerLevels: 50}
			})), gmslAccept: true},
		{name: "mod lowers an events entry at their level", version: v10, state: joined(v10, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) {
				pl["events"] = map[string]any{spec.MRoomPowerLevels: 50, "m.room.tombstone": 100, "m.room.topic": 0}
			})), allow: true},
		// "For each entry being changed in, or removed from, the users property, other
		// than the sender's own entry: if the current value is greater than or equal to
		// the sender's current power level, reject."
		{name: "mod demotes another mod's equal level", version: v10,
			state: joined(v10, "public", state(alice, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) {
				pl["users"].(map[string]any)[bob] = 50
			}))),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) {})), allow: false},
		{name: "mod demotes themselves", version: v10, state: joined(v10, "public"),
			event: state(mod, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["users"].(map[string]any)[mod] = 10 })), allow: true},
		{name: "v10 string level is bad JSON", version: v10, state: joined(v10, "public"),
			event: state(admin, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["ban"] = "50" })), badJSON: true},
		{name: "v10 word user level is bad JSON", version: v10, state: joined(v10, "public"),
			event: state(admin, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["users"].(map[string]any)[bob] = "high" })), badJSON: true},
		// "If type is m.room.third_party_invite: allow if and only if sender's current
		// power level is greater than or equal to the invite level."
		{name: "third party invite below the invite level", version: v10,
			state: joined(v10, "public", state(alice, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["invite"] = 100 }))),
			event: stateEvent{mod, spec.MRoomThirdPartyInvite, roomtest.StateKey("tok"), map[string]any{"display_name": "x", "public_key": "abc", "key_validity_url": "https://x"}}},
		{name: "third party invite at the invite level", version: v10, state: joined(v10, "public"),
			event: stateEvent{mod, spec.MRoomThirdPartyInvite, roomtest.StateKey("tok"), map[string]any{"display_name": "x", "public_key": "abc", "key_validity_url": "https://x"}},
			allow: true},
		// "If membership is leave: if the sender matches state_key, allow if and only if
		// that user's current membership state is invite, join, or knock."
		{name: "leave from leave", version: v10, state: joined(v10, "public"), event: member(bob, bob, spec.Leave), gmslAccept: true},
		{name: "leave from join", version: v10, state: joined(v10, "public", member(bob, bob, spec.Join)), event: member(bob, bob, spec.Leave), allow: true},
		// "If the target user's current membership state is ban, and the sender's power
		// level is less than the ban level, reject. If the sender's power level is greater
		// than or equal to the kick level, and the target user's power level is less than
		// the sender's power level, allow."
		{name: "unban below the kick level", version: v10,
			state: joined(v10, "public", state(alice, spec.MRoomPowerLevels, withLevels(v10, func(pl map[string]any) { pl["kick"] = 100 })), member(alice, bob, spec.Ban)),
			event: member(mod, bob, spec.Leave), gmslAccept: true},
		{name: "unban of a higher user", version: v10,
			state: joined(v10, "public", member(alice, admin, spec.Ban)), event: member(mod, admin, spec.Leave), gmslAccept: true},
		{name: "unban by a mod", version: v10,
			state: joined(v10, "public", member(alice, bob, spec.Ban)), event: member(mod, bob, spec.Leave), allow: true},
		// "If the join_rule is invite or knock then allow if membership state is invite
		// or join ... If the join_rule is public, allow. Otherwise, reject."
		{name: "invited join under private", version: v10, state: joined(v10, "private", member(alice, bob, spec.Invite)),
			event: member(bob, bob, spec.Join), gmslAccept: true},
		{name: "invited join under knock in v6", version: v6, state: joined(v6, "knock", member(alice, bob, spec.Invite)),
			event: member(bob, bob, spec.Join), gmslAccept: true},
		{name: "invited join under knock_restricted in v9", version: v9, state: joined(v9, "knock_restricted", member(alice, bob, spec.Invite)),
			event: member(bob, bob, spec.Join), gmslAccept: true},
		{name: "invited join under invite", version: v10, state: joined(v10, "invite", member(alice, bob, spec.Invite)),
			event: member(bob, bob, spec.Join), allow: true},
		{name: "join of a public room", version: v10, state: joined(v10, "public"), event: member(bob, bob, spec.Join), allow: true},
		// "If membership is knock: if the join_rule is anything other than knock
		// [knock_restricted from v10], reject."
		{name: "knock on knock_restricted in v9", version: v9, state: joined(v9, "knock_restricted"), event: member(bob, bob, spec.Knock), gmslAccept: true},
		{name: "knock on knock_restricted in v10", version: v10, state: joined(v10, "knock_restricted"), event: member(bob, bob, spec.Knock), allow: true},
		// From v6, m.room.aliases has no rule of its own: "If the sender's current
		// membership state is not join, reject."
		{name: "aliases from a stranger in v10", version: v10, state: joined(v10, "public"),
			event: stateEvent{bob, spec.MRoomAliases, roomtest.StateKey("a.test"), map[string]any{"aliases": []string{"#x:a.test"}}}, gmslAccept: true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("v%s %s", tc.version, tc.name), func(t *testing.T) {
			ev, auth := buildRoom(t, tc.version, tc.state, tc.event)
			err := allowed(ev, auth)
			if tc.allow != (err == nil) {
				t.Fatalf("allowed: %v, want allowed %v", err, tc.allow)
			}
			var merr *matrixerr.Error
			if tc.badJSON && (!errors.As(err, &merr) || merr.Code != "M_BAD_JSON") {
				t.Fatalf("want M_BAD_JSON, got %v", err)
			}
			if tc.gmslAccept {
				if gerr := gomatrixserverlib.Allowed(ev, auth, userIDForSender); gerr != nil {
					t.Fatalf("gomatrixserverlib now refuses this (%v): the spec check may be redundant", gerr)
				}
			}
		})
	}
}

// TestAuthEventsSelection: a federated event's auth_events hold no duplicates; an entry the
// auth rules do not select is ignored, as Synapse does (checkAuthEventsSelection's NOTSPEC).
func TestAuthEventsSelection(t *testing.T) {
	v := gomatrixserverlib.RoomVersionV10
	key := roomtest.NewKey(t)
	create := roomtest.CreateEvent(t, key, "a.test", v, alice, "!sel:a.test")
	r := &roomtest.Remote{T: t, Key: key, Origin: "a.test", Version: v, RoomID: create.RoomID().String()}
	join := r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]any{"membership": "join"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
	pl := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), basePowerLevels(v), 3, []gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, join})
	name := r.Event(alice, spec.MRoomName, roomtest.StateKey(""), map[string]any{"name": "n"}, 4, []gomatrixserverlib.PDU{pl}, []gomatrixserverlib.PDU{create, join, pl})
	pl2 := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), basePowerLevels(v), 5, []gomatrixserverlib.PDU{name}, []gomatrixserverlib.PDU{create, join, pl})
	for _, tc := range []struct {
		name string
		auth []gomatrixserverlib.PDU
		ok   bool
	}{
		{"selected", []gomatrixserverlib.PDU{create, join, pl}, true},
		{"a subset", []gomatrixserverlib.PDU{create, join}, true},
		{"an unselected name event", []gomatrixserverlib.PDU{create, join, pl, name}, true},
		{"two power levels events", []gomatrixserverlib.PDU{create, join, pl, pl2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkAuthEventsSelection(tc.auth); (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestThirdPartyInviteSigned: an invite completing a third-party invite is allowed when a
// key of the m.room.third_party_invite signed the whole signed block, whatever keys it holds
// besides mxid and token (/join's third_party_signed and identity servers' blocks carry
// sender; gomatrixserverlib alone refuses those), and refused when another key signed it,
// the block was changed after signing, mxid is not the invited user, the invite's sender is
// not the third-party invite's, or the room does not federate with the sender's server.
func TestThirdPartyInviteSigned(t *testing.T) {
	v := gomatrixserverlib.RoomVersionV10
	isPub, isPriv, _ := ed25519.GenerateKey(nil)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	sign := func(priv ed25519.PrivateKey, block map[string]string) json.RawMessage {
		b, _ := json.Marshal(block)
		signed, err := gomatrixserverlib.SignJSON("id.test", "ed25519:0", priv, b)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	roomState := []stateEvent{member(alice, alice, spec.Join), state(alice, spec.MRoomPowerLevels, basePowerLevels(v)),
		state(alice, spec.MRoomJoinRules, map[string]any{"join_rule": "invite"}), member(mod, mod, spec.Join),
		{alice, spec.MRoomThirdPartyInvite, roomtest.StateKey("tok"), map[string]any{"display_name": "c...",
			"key_validity_url": "https://id.test/_matrix/identity/v2/pubkey/isvalid", "public_key": base64.RawStdEncoding.EncodeToString(isPub)}}}
	invite := func(sender, target string, signed json.RawMessage) stateEvent {
		return stateEvent{sender, spec.MRoomMember, &target, map[string]any{"membership": spec.Invite,
			"third_party_invite": map[string]any{"display_name": "c...", "signed": signed}}}
	}
	block := map[string]string{"mxid": bob, "sender": alice, "token": "tok"}
	good := sign(isPriv, block)
	changed := json.RawMessage(strings.Replace(string(good), `"sender":"@alice:a.test"`, `"sender":"@mod:a.test"`, 1))
	for _, tc := range []struct {
		name       string
		ev         stateEvent
		allow      bool
		gmslRefuse bool
	}{
		{"signed block with sender", invite(alice, bob, good), true, true},
		{"signed by another key", invite(alice, bob, sign(otherPriv, block)), false, false},
		{"changed after signing", invite(alice, bob, changed), false, false},
		{"mxid is not the target", invite(alice, admin, good), false, false},
		{"sender is not the third-party invite's", invite(mod, bob, good), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, auth := buildRoom(t, v, roomState, tc.ev)
			if err := allowed(ev, auth); (err == nil) != tc.allow {
				t.Fatalf("allowed: %v, want allowed %v", err, tc.allow)
			}
			if tc.gmslRefuse && gomatrixserverlib.Allowed(ev, auth, userIDForSender) == nil {
				t.Fatal("gomatrixserverlib now accepts this: thirdPartyInviteAllowed may be redundant")
			}
		})
	}
	t.Run("room that does not federate", func(t *testing.T) {
		key := roomtest.NewKey(t)
		r := &roomtest.Remote{T: t, Key: key, Origin: "b.test", Version: v, RoomID: "!nofed:a.test"}
		create := r.Event(alice, spec.MRoomCreate, roomtest.StateKey(""), map[string]any{"creator": alice, "room_version": string(v), "m.federate": false}, 1, nil, nil)
		remote := "@carol:b.test"
		ev, auth := buildRoomFrom(t, key, create, append(roomState[:len(roomState)-1],
			stateEvent{remote, spec.MRoomThirdPartyInvite, roomtest.StateKey("tok"), roomState[len(roomState)-1].content}),
			invite(remote, bob, good))
		if err := thirdPartyInviteAllowed(ev, auth, eventcontent.ThirdPartySigned(ev)); err == nil || !strings.Contains(err.Error(), "federate") {
			t.Fatalf("a third-party invite from another server into a room that does not federate: %v", err)
		}
	})
}
