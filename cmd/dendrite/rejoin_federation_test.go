package main

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsRejoinAfterLastLocalMemberLeft: alice, A's only member of a room of B,
// leaves it; B renames the room and invites her again; her join through B replaces A's
// stale copy of the room (the join was soft-failed against that copy before, and the
// room never came back): A shows her joined, with the name set while she was away.
func TestMonolithsRejoinAfterLastLocalMemberLeft(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "rejoin-alice"), e2e.Register(t, b.URL(), "rejoin-bob")
	created, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "first", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err = alice.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(b.name)}}); err != nil {
		t.Fatalf("first join: %v", err)
	}
	if _, err = alice.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	membershipOf(t, bob, room, alice.UserID, "leave")
	if _, err = bob.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]string{"name": "second"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(fedTimeout)
	for {
		_, err = bob.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: alice.UserID})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invite again: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err = alice.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	membershipOf(t, alice, room, alice.UserID, "join")
	var name map[string]string
	if err = alice.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name["name"] != "second" {
		t.Fatalf("room name at A after the rejoin: %v %v", name, err)
	}
	since := ""
	syncUntil(t, alice, &since, "the room joined again in alice's sync", func(res *mautrix.RespSync) bool {
		_, ok := res.Rooms.Join[room]
		return ok
	})
}
