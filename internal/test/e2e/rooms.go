package e2e

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// RoomFeatures checks what createRoom's options set up, redaction, profiles reflected into
// member events, kicks and forgetting a room, with a real Matrix client.
func RoomFeatures(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "alice"), Register(t, baseURL, "bob")
	eventsDefault := 50
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat", RoomVersion: id.RoomVersion("11"),
		InitialState: []*event.Event{{Type: event.NewEventType("org.example.colour"), StateKey: ptr(""),
			Content: event.Content{Raw: map[string]any{"colour": "green"}}}},
		PowerLevelOverride: &event.PowerLevelsEventContent{EventsDefault: eventsDefault, Users: map[id.UserID]int{}},
	})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	var colour map[string]any
	if err = alice.StateEvent(ctx, roomID, event.NewEventType("org.example.colour"), "", &colour); err != nil || colour["colour"] != "green" {
		t.Fatalf("initial_state: %v (%v)", colour, err)
	}
	var create map[string]any
	if err = alice.StateEvent(ctx, roomID, event.StateCreate, "", &create); err != nil || create["room_version"] != "11" {
		t.Fatalf("room version: %v (%v)", create, err)
	}
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	// The override raised events_default above bob's power level: only alice (100) may talk.
	_, err = bob.SendText(ctx, roomID, "may I?")
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	sent, err := alice.SendText(ctx, roomID, "secret")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if _, err = alice.RedactEvent(ctx, roomID, sent.EventID, mautrix.ReqRedact{Reason: "oops"}); err != nil {
		t.Fatalf("redact: %v", err)
	}
	redacted, err := bob.GetEvent(ctx, roomID, sent.EventID)
	if err != nil {
		t.Fatalf("get redacted event: %v", err)
	}
	if len(redacted.Content.Raw) != 0 {
		t.Fatalf("redacted event still has content %v", redacted.Content.Raw)
	}
	// History shows the redacted event with the redaction that emptied it.
	msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	found := false
	for _, e := range msgs.Chunk {
		if e.ID == sent.EventID {
			found = true
			if e.Unsigned.RedactedBecause == nil || e.Unsigned.RedactedBecause.Content.Raw["reason"] != "oops" || len(e.Content.Raw) != 0 {
				t.Fatalf("redacted event in /messages: content %v, redacted_because %+v", e.Content.Raw, e.Unsigned.RedactedBecause)
			}
		}
	}
	if !found {
		t.Fatal("the redacted event is missing from /messages")
	}

	if err = alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatalf("set display name: %v", err)
	}
	var member map[string]any
	if err = bob.StateEvent(ctx, roomID, event.StateMember, alice.UserID.String(), &member); err != nil || member["displayname"] != "Alice Liddell" {
		t.Fatalf("alice's member event after the profile change: %v (%v)", member, err)
	}

	if _, err = alice.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
		t.Fatalf("kick: %v", err)
	}
	if err = alice.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &member); err != nil || member["membership"] != "leave" {
		t.Fatalf("bob after the kick: %v (%v)", member, err)
	}
	if _, err = bob.ForgetRoom(ctx, roomID); err != nil {
		t.Fatalf("forget: %v", err)
	}
	joined, err := bob.JoinedRooms(ctx)
	if err != nil || len(joined.JoinedRooms) != 0 {
		t.Fatalf("bob's joined rooms after forgetting: %v (%v)", joined, err)
	}
}

func ptr(s string) *string { return &s }
