package e2e

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// MemberState is the story of PUT /rooms/{roomId}/state/m.room.member/{userId}: a member
// sets a per-room display name without touching their profile, a user joins a public room
// with one, and nobody may change another member's display name.
func MemberState(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "alice"), Register(t, baseURL, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	put := func(c *mautrix.Client, target id.UserID, content map[string]any) error {
		_, err := c.SendStateEvent(ctx, room.RoomID, event.StateMember, target.String(), content)
		return err
	}
	if err = put(alice, alice.UserID, map[string]any{"membership": "join", "displayname": "Overridden"}); err != nil {
		t.Fatalf("per-room display name: %v", err)
	}
	if got := memberName(t, alice, room.RoomID, alice.UserID); got != "Overridden" {
		t.Fatalf("alice's room display name %q", got)
	}
	if p, err := alice.GetDisplayName(ctx, alice.UserID); err != nil || p.DisplayName != "alice" {
		t.Fatalf("alice's profile changed: %+v %v", p, err)
	}
	if err = put(bob, bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby"}); err != nil {
		t.Fatalf("join with a display name: %v", err)
	}
	if got := membership(t, alice, room.RoomID, bob.UserID); got != "join" {
		t.Fatalf("bob's membership %s", got)
	}
	if got := memberName(t, alice, room.RoomID, bob.UserID); got != "Bobby" {
		t.Fatalf("bob's room display name %q", got)
	}
	err = put(bob, alice.UserID, map[string]any{"membership": "join", "displayname": "Mallory"})
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	if got := memberName(t, bob, room.RoomID, alice.UserID); got != "Overridden" {
		t.Fatalf("alice's room display name after bob's attempt %q", got)
	}
}

// memberName is userID's display name in the room as c reads it.
func memberName(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	var m event.MemberEventContent
	if err := c.StateEvent(context.Background(), roomID, event.StateMember, userID.String(), &m); err != nil {
		t.Fatalf("member event of %s: %v", userID, err)
	}
	return m.Displayname
}
