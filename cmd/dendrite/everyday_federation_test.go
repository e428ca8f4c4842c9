package main

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// syncUntil syncs c from since until cond holds for a response (deadline fedTimeout) and
// returns that response.
func syncUntil(t *testing.T, c *mautrix.Client, since *string, what string, cond func(*mautrix.RespSync) bool) *mautrix.RespSync {
	t.Helper()
	deadline := time.Now().Add(fedTimeout)
	for {
		res, err := c.SyncRequest(context.Background(), 500, *since, syncFilter, false, "")
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		*since = res.NextBatch
		if cond(res) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not seen within %s", c.UserID, what, fedTimeout)
		}
	}
}

// membershipOf polls c's view of userID's membership in room until it is want.
func membershipOf(t *testing.T, c *mautrix.Client, room id.RoomID, userID id.UserID, want string) map[string]any {
	t.Helper()
	var member map[string]any
	deadline := time.Now().Add(fedTimeout)
	for {
		member = nil
		err := c.StateEvent(context.Background(), room, event.StateMember, userID.String(), &member)
		if err == nil && member["membership"] == want {
			return member
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's membership as %s sees it: %v %v, want %s", userID, c.UserID, member, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMonolithsKnock: a user of B knocks on a room of A that B is not in (make_knock and
// send_knock through the via server); the knock shows in the knocker's /sync under
// rooms.knock with the room's name, and on A. A's invite accepts it and the knocker joins;
// a second knocker is refused with a kick. Rooms that take no knocks refuse with 403, and
// unknown rooms are 404.
func TestMonolithsKnock(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob, carol := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob"), e2e.Register(t, b.URL(), "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "knock knock", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	var bobSince string
	syncUntil(t, bob, &bobSince, "the first sync", func(*mautrix.RespSync) bool { return true })

	if _, err = bob.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Via: []string{alice.UserID.Homeserver()}, Reason: "let me in"}); err != nil {
		t.Fatalf("remote knock: %v", err)
	}
	knocked := syncUntil(t, bob, &bobSince, "the knock", func(r *mautrix.RespSync) bool { return r.Rooms.Knock[room] != nil })
	if !slices.ContainsFunc(knocked.Rooms.Knock[room].State.Events, func(e *event.Event) bool {
		return e.Type == event.StateRoomName && e.Content.Raw["name"] == "knock knock"
	}) || !slices.ContainsFunc(knocked.Rooms.Knock[room].State.Events, func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() && e.Content.Raw["membership"] == "knock"
	}) {
		t.Fatalf("knock_state: %+v", knocked.Rooms.Knock[room].State.Events)
	}
	if m := membershipOf(t, alice, room, bob.UserID, "knock"); m["reason"] != "let me in" {
		t.Fatalf("alice sees bob's knock as %v", m)
	}

	// alice accepts with an invite; bob joins.
	if _, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("accept the knock: %v", err)
	}
	syncUntil(t, bob, &bobSince, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("join after the knock: %v", err)
	}
	membershipOf(t, alice, room, bob.UserID, "join")

	// carol knocks (B is in the room now) and is refused with a kick.
	if _, err = carol.KnockRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("second knock: %v", err)
	}
	membershipOf(t, alice, room, carol.UserID, "knock")
	if _, err = alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "no"}); err != nil {
		t.Fatalf("refuse the knock: %v", err)
	}
	membershipOf(t, bob, room, carol.UserID, "leave")

	// A room that takes no knocks: A's 403. Unknown rooms: 404.
	public, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = carol.KnockRoom(ctx, public.RoomID.String(), &mautrix.ReqKnockRoom{Via: []string{alice.UserID.Homeserver()}})
	e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = carol.KnockRoom(ctx, "!nope:"+alice.UserID.Homeserver(), nil)
	e2e.WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
}

// TestMonolithsRestrictedJoin: A's room is restricted to A's space. bob of B joins the
// space, then the room through A (B is not in it): A's make_join names alice as the
// authoriser and A signs the join. carol of B joins the space, then the room: B is in the
// room now but none of its users may invite, so the join goes through A the same way.
// dave of B, in no allowed room, is refused (403).
func TestMonolithsRestrictedJoin(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice := e2e.Register(t, a.URL(), "alice")
	bob, carol, dave := e2e.Register(t, b.URL(), "bob"), e2e.Register(t, b.URL(), "carol"), e2e.Register(t, b.URL(), "dave")
	serverA := alice.UserID.Homeserver()
	inviteLevel := 50
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "members of the space", RoomVersion: "10",
		PowerLevelOverride: &event.PowerLevelsEventContent{InvitePtr: &inviteLevel, Users: map[id.UserID]int{alice.UserID: 100}},
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []map[string]string{{"type": "m.room_membership", "room_id": space.RoomID.String()}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dave.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{serverA}})
	e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	for _, u := range []*mautrix.Client{bob, carol} {
		if _, err = u.JoinRoom(ctx, space.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{serverA}}); err != nil {
			t.Fatalf("%s joins the space: %v", u.UserID, err)
		}
		membershipOf(t, alice, space.RoomID, u.UserID, "join")
		if _, err = u.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{serverA}}); err != nil {
			t.Fatalf("%s joins the restricted room: %v", u.UserID, err)
		}
		if m := membershipOf(t, alice, room.RoomID, u.UserID, "join"); m["join_authorised_via_users_server"] != alice.UserID.String() {
			t.Fatalf("%s's join as A sees it: %v", u.UserID, m)
		}
		membershipOf(t, u, room.RoomID, u.UserID, "join")
	}
	_, err = dave.JoinRoom(ctx, room.RoomID.String(), nil)
	e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
}

// TestMonolithsHierarchy: a space of A holds a room of A, an invite-only room of A and a
// sub-space of A with a room of its own. bob of B joins the space; B's /hierarchy then
// describes the rooms B is not in through A's federation /hierarchy (the sub-space's room
// from the sub-space's answer), leaving out the invite-only room.
func TestMonolithsHierarchy(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	serverA := alice.UserID.Homeserver()
	mk := func(name, preset string, space bool) id.RoomID {
		t.Helper()
		req := &mautrix.ReqCreateRoom{Preset: preset, Name: name}
		if space {
			req.CreationContent = map[string]any{"type": "m.space"}
		}
		res, err := alice.CreateRoom(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res.RoomID
	}
	addChild := func(parent, child id.RoomID) {
		t.Helper()
		if _, err := alice.SendStateEvent(ctx, parent, event.Type{Type: "m.space.child", Class: event.StateEventType}, child.String(),
			map[string]any{"via": []string{serverA}}); err != nil {
			t.Fatal(err)
		}
	}
	space, room, secret := mk("space", "public_chat", true), mk("room", "public_chat", false), mk("secret", "private_chat", false)
	sub, subRoom := mk("sub-space", "public_chat", true), mk("sub-room", "public_chat", false)
	addChild(space, room)
	addChild(space, secret)
	addChild(space, sub)
	addChild(sub, subRoom)
	if _, err := bob.JoinRoom(ctx, space.String(), &mautrix.ReqJoinRoom{Via: []string{serverA}}); err != nil {
		t.Fatal(err)
	}
	want := []string{space.String(), room.String(), sub.String(), subRoom.String()}
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(fedTimeout)
	for {
		res, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
		if err != nil {
			t.Fatalf("hierarchy: %v", err)
		}
		got = got[:0]
		for _, r := range res.Rooms {
			got = append(got, r.RoomID.String())
			if r.RoomID == sub && len(r.ChildrenState) != 1 {
				t.Fatalf("the sub-space's children_state: %+v", r.ChildrenState)
			}
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's hierarchy %v, want %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMonolithsGuestAcceptsRemoteInvite: a guest of B invited to an invite-only room of A
// whose guest access is can_join accepts the invite (B learns the guest access from the
// invite's stripped state, which A fills in); a room of A without guest access stays closed
// to B's invited guest (403, as B knows nothing that allows it).
func TestMonolithsGuestAcceptsRemoteInvite(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice := e2e.Register(t, a.URL(), "alice")
	guest := e2e.Client(t, b.URL())
	var reg mautrix.RespRegister
	if _, err := guest.MakeRequest(ctx, http.MethodPost, guest.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "register"}, map[string]string{"kind": "guest"}), struct{}{}, &reg); err != nil {
		t.Fatalf("guest registration: %v", err)
	}
	guest.UserID, guest.AccessToken, guest.DeviceID = reg.UserID, reg.AccessToken, reg.DeviceID

	for _, c := range []struct {
		access string
		joins  bool
	}{{"can_join", true}, {"forbidden", false}} {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{
			{Type: event.StateGuestAccess, StateKey: new(string), Content: event.Content{Raw: map[string]any{"guest_access": c.access}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = alice.InviteUser(ctx, created.RoomID, &mautrix.ReqInviteUser{UserID: guest.UserID}); err != nil {
			t.Fatalf("invite the guest: %v", err)
		}
		_, err = guest.JoinRoom(ctx, created.RoomID.String(), nil)
		if !c.joins {
			e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
			continue
		}
		if err != nil {
			t.Fatalf("the guest accepts the invite to a room with guest access %s: %v", c.access, err)
		}
		membershipOf(t, alice, created.RoomID, guest.UserID, "join")
	}
}
