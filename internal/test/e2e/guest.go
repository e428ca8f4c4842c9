package e2e

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Guests is the guest access story against a server with client_api.guests_disabled false:
// a guest registers, may query keys but not create rooms or cross-signing keys, joins a room only while its m.room.guest_access
// is can_join, sends there, reads a world-readable room's state without joining, and is
// made to leave when the room's guest access is revoked.
func Guests(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "alice")
	guest := Client(t, baseURL)
	var reg mautrix.RespRegister
	if _, err := guest.MakeRequest(ctx, http.MethodPost, guest.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "register"}, map[string]string{"kind": "guest"}), struct{}{}, &reg); err != nil {
		t.Fatalf("guest registration: %v", err)
	}
	guest.UserID, guest.AccessToken, guest.DeviceID = reg.UserID, reg.AccessToken, reg.DeviceID

	_, err := guest.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	WantErrCode(t, err, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	// The guest access module opens /keys/query (with upload and claim) to guests, not
	// cross-signing.
	if _, err = guest.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}}); err != nil {
		t.Fatalf("guest /keys/query: %v", err)
	}
	_, err = guest.MakeRequest(ctx, http.MethodPost, guest.BuildClientURL("v3", "keys", "device_signing", "upload"), struct{}{}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	// The public_chat preset forbids guests with no m.room.guest_access event, whose absence
	// means forbidden (spec m.room.guest_access), as Synapse creates such rooms.
	var access map[string]any
	WantErrCode(t, alice.StateEvent(ctx, room.RoomID, event.StateGuestAccess, "", &access), http.StatusNotFound, "M_NOT_FOUND")
	_, err = guest.JoinRoomByID(ctx, room.RoomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = guest.State(ctx, room.RoomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	setState := func(typ event.Type, content map[string]any) {
		t.Helper()
		if _, err := alice.SendStateEvent(ctx, room.RoomID, typ, "", content); err != nil {
			t.Fatalf("set %s: %v", typ.Type, err)
		}
	}
	setState(event.StateHistoryVisibility, map[string]any{"history_visibility": "world_readable"})
	var name map[string]any
	if err = guest.StateEvent(ctx, room.RoomID, event.StateCreate, "", &name); err != nil {
		t.Fatalf("guest reading a world-readable room's state: %v", err)
	}

	setState(event.StateGuestAccess, map[string]any{"guest_access": "can_join"})
	if _, err = guest.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("guest join: %v", err)
	}
	if _, err = guest.SendText(ctx, room.RoomID, "hello from a guest"); err != nil {
		t.Fatalf("guest send: %v", err)
	}
	setState(event.StateGuestAccess, map[string]any{"guest_access": "forbidden"})
	if got := membership(t, alice, room.RoomID, guest.UserID); got != "leave" {
		t.Fatalf("guest membership after revocation: %s", got)
	}
	_, err = guest.JoinRoomByID(ctx, room.RoomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
}

// membership is userID's membership in the room as c reads it.
func membership(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	var m event.MemberEventContent
	if err := c.StateEvent(context.Background(), roomID, event.StateMember, userID.String(), &m); err != nil {
		t.Fatalf("membership of %s: %v", userID, err)
	}
	return string(m.Membership)
}
