package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsDirectMessage is how every client starts a DM with a user of another
// server: alice of A creates a room with is_direct and bob of B in invite (the
// trusted_private_chat preset, as Element does). The invite goes to B (federation invite
// v2): bob sees it in his /sync on B with is_direct and the room's stripped state, joins
// (through A, with no hint) and both exchange messages.
func TestMonolithsDirectMessage(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "trusted_private_chat", IsDirect: true, Name: "just us", Invite: []id.UserID{bob.UserID},
	})
	if err != nil {
		t.Fatalf("createRoom with a remote invitee: %v", err)
	}
	room := created.RoomID
	va, vb := newView("alice", alice, room), newView("bob", bob, room)

	vb.until(t, "the invite", func(v *view) bool { return v.invite != nil })
	var invite *event.Event
	for _, e := range vb.invite.State.Events {
		if e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() {
			invite = e
		}
	}
	if invite == nil || invite.Content.Raw["membership"] != "invite" || invite.Content.Raw["is_direct"] != true || invite.Sender != alice.UserID {
		t.Fatalf("bob's invite in his sync: %+v", invite)
	}
	if !slices.ContainsFunc(vb.invite.State.Events, func(e *event.Event) bool {
		return e.Type == event.StateRoomName && e.Content.Raw["name"] == "just us"
	}) {
		t.Fatalf("invite_state without the room name: %+v", vb.invite.State.Events)
	}

	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("bob joins the DM: %v", err)
	}
	va.until(t, "bob's join", func(v *view) bool { return v.has(event.StateMember.Type, bob.UserID.String(), "join") })
	for _, m := range []struct {
		from *mautrix.Client
		body string
	}{{alice, "hello bob"}, {bob, "hello alice"}} {
		if _, err = m.from.SendText(ctx, room, m.body); err != nil {
			t.Fatalf("send %q: %v", m.body, err)
		}
		va.until(t, m.body, hasBody(m.body))
		vb.until(t, m.body, hasBody(m.body))
	}
	// bob has the power of the creator (trusted_private_chat), in A's copy of the room.
	var pl event.PowerLevelsEventContent
	if err = alice.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil || pl.Users[bob.UserID] != 100 {
		t.Fatalf("power levels: %+v %v", pl.Users, err)
	}
}

// TestMonolithsDirectMessageFailedInvites: an invitee of createRoom whose server cannot be
// reached does not undo the room, and the creator learns of it: the room is created, every
// invite is tried (an unknown user of B, whose server accepts the invite as the spec's
// /invite and Synapse do, and bob of B, both before it, are invited), and createRoom answers
// the failure's error with the room's ID in room_id. A third-party invite (invite_3pid, and
// the third-party /invite) whose identity server cannot be reached fails the same way: 502
// with the room's ID, the room created.
func TestMonolithsDirectMessageFailedInvites(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	unknown := id.UserID("@nobody:" + string(b.name))
	unreachable := id.UserID("@carol:" + e2e.FreeAddr(t)) // nothing listens there

	_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{IsDirect: true, Invite3PID: []mautrix.ReqInvite3PID{
		{IDServer: "id.example.org", Medium: "email", Address: "carol@example.org"},
	}})
	e2e.WantErrCode(t, err, http.StatusBadGateway, "M_UNKNOWN")
	var httpErr mautrix.HTTPError
	errors.As(err, &httpErr)
	room3PID, _ := httpErr.RespError.ExtraData["room_id"].(string)

	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{IsDirect: true, Invite: []id.UserID{unknown, bob.UserID, unreachable}})
	e2e.WantErrCode(t, err, http.StatusBadGateway, "M_UNKNOWN")
	errors.As(err, &httpErr)
	roomID, _ := httpErr.RespError.ExtraData["room_id"].(string)
	room := id.RoomID(roomID)
	if joined, err := alice.JoinedRooms(ctx); err != nil || len(joined.JoinedRooms) != 2 || !slices.Contains(joined.JoinedRooms, room) ||
		!slices.Contains(joined.JoinedRooms, id.RoomID(room3PID)) {
		t.Fatalf("alice's rooms %v (%v), want the ones in the errors' room_id %q and %q", joined, err, room3PID, roomID)
	}
	members, err := alice.Members(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range members.Chunk {
		got[e.GetStateKey()] = string(e.Content.AsMember().Membership)
	}
	if len(got) != 3 || got[alice.UserID.String()] != "join" || got[bob.UserID.String()] != "invite" || got[unknown.String()] != "invite" {
		t.Fatalf("members %v: alice joined, bob and %s invited, nobody else", got, unknown)
	}
	// The third-party form of /invite fails as createRoom's invite_3pid does.
	_, err = alice.InviteUserByThirdParty(ctx, room, &mautrix.ReqInvite3PID{IDServer: "id.example.org", Medium: "email", Address: "carol@example.org"})
	e2e.WantErrCode(t, err, http.StatusBadGateway, "M_UNKNOWN")
	vb := newView("bob", bob, room)
	vb.until(t, "the invite", func(v *view) bool { return v.invite != nil })
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}

	// Only an unreachable invitee: 502, and the room exists all the same.
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{IsDirect: true, Invite: []id.UserID{unreachable}})
	e2e.WantErrCode(t, err, http.StatusBadGateway, "M_UNKNOWN")
	if joined, err := alice.JoinedRooms(ctx); err != nil || len(joined.JoinedRooms) != 3 {
		t.Fatalf("alice's rooms after an unreachable invitee: %v %v", joined, err)
	}
	a.stop() // the log is complete once the process has exited
	if !strings.Contains(a.logs.String(), unreachable.String()) {
		t.Fatalf("the failed invite of %s is not logged:\n%s", unreachable, a.logs)
	}
}
