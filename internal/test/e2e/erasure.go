package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Erasure checks account erasure with real clients: alice's message, sent while bob was in
// the room and before carol joined, reaches carol through GET /event redacted (content {})
// once alice deactivates her account with erase: true, and bob still whole. The sync API
// asks the userapi, in another process in the polylith.
func Erasure(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "eraser"), Register(t, baseURL, "erasewitness"), Register(t, baseURL, "erasejoiner")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "erased soon")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if _, err = carol.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	if body := eventBody(t, carol, room.RoomID, sent.EventID); body != "erased soon" {
		t.Fatalf("carol before the erasure: body %q", body)
	}
	_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "account", "deactivate"), map[string]any{"erase": true,
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": alice.UserID.String()}, "password": "password-eraser"}}, nil)
	if err != nil {
		t.Fatalf("deactivate with erase: %v", err)
	}
	if body := eventBody(t, bob, room.RoomID, sent.EventID); body != "erased soon" {
		t.Fatalf("bob, joined when it was sent: body %q", body)
	}
	if body := eventBody(t, carol, room.RoomID, sent.EventID); body != "" {
		t.Fatalf("carol, joined after it was sent: body %q, want the redacted event", body)
	}
}

// eventBody reads an event through GET /rooms/{roomId}/event/{eventId}, waiting (with a
// deadline) until the sync API has the reader's join, and returns its body: "" for the
// redacted form, whose content must then be empty.
func eventBody(t *testing.T, c *mautrix.Client, roomID id.RoomID, eventID id.EventID) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ev, err := c.GetEvent(context.Background(), roomID, eventID)
		if err == nil {
			if ev.Type != event.EventMessage {
				t.Fatalf("event %s has type %s", eventID, ev.Type)
			}
			body, _ := ev.Content.Raw["body"].(string) // absent from the redacted form
			if body == "" && len(ev.Content.Raw) != 0 {
				t.Fatalf("event %s: content %v neither whole nor redacted", eventID, ev.Content.Raw)
			}
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot read %s: %v", c.UserID, eventID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
