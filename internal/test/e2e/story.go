package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Story drives two users through a room's life with a real Matrix client, with a restart
// of the server in the middle: nothing is lost or repeated.
func Story(t *testing.T, hs Homeserver) {
	ctx := context.Background()
	alice, bob := Register(t, hs.URL(), "alice"), Register(t, hs.URL(), "bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Story", Topic: "first", Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	var bobTL, aliceTL Timeline
	// The sync API's read-your-writes wait is bounded (5 s); on a machine busy with other
	// tests the invite may come in a later sync.
	deadline := time.Now().Add(time.Minute)
	for res := bobTL.Sync(t, bob, roomID); res.Rooms.Invite[roomID] == nil; res = bobTL.Sync(t, bob, roomID) {
		if time.Now().After(deadline) {
			t.Fatalf("bob's sync has no invite for %s", roomID)
		}
	}
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	aliceTL.Sync(t, alice, roomID)
	for i := 0; i < 3; i++ {
		if _, err = alice.SendText(ctx, roomID, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if _, err = alice.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]string{"topic": "second"}); err != nil {
		t.Fatalf("topic: %v", err)
	}
	bobTL.Sync(t, bob, roomID)
	if got := strings.Join(bobTL.Bodies(), ","); got != "a0,a1,a2" {
		t.Fatalf("bob sees %q", got)
	}
	var topic event.TopicEventContent
	if err = bob.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "second" {
		t.Fatalf("topic is %q (%v)", topic.Topic, err)
	}
	// A state change carries what it replaced. Bob joined since his last sync, so his timeline
	// holds the room's recent history too, the initial topic (which replaced nothing) with it.
	topics := 0
	for _, e := range bobTL.Events {
		if e.Type != event.StateTopic || e.Content.Raw["topic"] == "first" {
			continue
		}
		topics++
		if e.Unsigned.PrevContent == nil || e.Unsigned.PrevContent.Raw["topic"] != "first" || e.Unsigned.PrevSender != alice.UserID {
			t.Fatalf("topic change without prev_content first from alice: %+v", e.Unsigned)
		}
	}
	if topics != 1 {
		t.Fatalf("bob saw %d topic changes, want 1", topics)
	}

	// Restart in the middle: the same clients keep their tokens and sync positions.
	hs.Restart(t)
	alice.HomeserverURL, bob.HomeserverURL = MustParse(t, hs.URL()), MustParse(t, hs.URL())

	if _, err = bob.SendText(ctx, roomID, "b0"); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	// Right after a restart the syncapi may still be catching up past its read-your-writes
	// bound: sync until b0 comes (or a minute passes), then check nothing was lost or doubled.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		aliceTL.Sync(t, alice, roomID)
		if slices.Contains(aliceTL.Bodies(), "b0") || time.Now().After(deadline) {
			break
		}
	}
	if got := strings.Join(aliceTL.Bodies(), ","); got != "a0,a1,a2,b0" {
		t.Fatalf("alice sees %q", got)
	}
	members, err := alice.JoinedMembers(ctx, roomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("joined members: %+v %v", members, err)
	}
	// History, backwards, holds every message exactly once.
	msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	var back []string
	for _, e := range msgs.Chunk {
		if e.Type == event.EventMessage {
			back = append([]string{e.Content.Raw["body"].(string)}, back...)
		}
	}
	if got := strings.Join(back, ","); got != "a0,a1,a2,b0" {
		t.Fatalf("/messages holds %q", got)
	}

	// Bob leaves: he can no longer send, and alice sees the leave.
	if _, err = bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("leave: %v", err)
	}
	_, err = bob.SendText(ctx, roomID, "ghost")
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	aliceTL.Sync(t, alice, roomID)
	left := false
	for _, e := range aliceTL.Events {
		if e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() && e.Content.Raw["membership"] == string(event.MembershipLeave) {
			left = true
		}
	}
	if !left {
		t.Fatal("alice did not see bob leave")
	}
	// Alice bans and unbans bob.
	if _, err = alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "test"}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	_, err = bob.JoinRoomByID(ctx, roomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err = alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("unban: %v", err)
	}
}

// BadInput checks the spec's errors for bad requests. The server must be fresh (it
// registers alice and bob).
func BadInput(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "alice")
	stranger := Client(t, baseURL)
	stranger.AccessToken = "not-a-token"
	_, err := stranger.JoinedRooms(ctx)
	WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	stranger.AccessToken = ""
	_, err = stranger.JoinedRooms(ctx)
	WantErrCode(t, err, http.StatusUnauthorized, "M_MISSING_TOKEN")

	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "999"})
	WantErrCode(t, err, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, map[string]string{"body": strings.Repeat("x", 70000)})
	WantErrCode(t, err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	_, err = alice.SendText(ctx, "!unknown:e2e.test", "hi")
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	bob := Register(t, baseURL, "bob")
	_, err = bob.SendText(ctx, created.RoomID, "not a member")
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	for _, tc := range []struct {
		body, code string
	}{{"{not json", "M_NOT_JSON"}, {`["an","array"]`, "M_BAD_JSON"}} {
		req, _ := http.NewRequest(http.MethodPost, baseURL+"/_matrix/client/v3/createRoom", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // status is what is checked
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("body %q: status %d", tc.body, resp.StatusCode)
		}
	}
	rawBadInput(t, baseURL, alice.AccessToken, created.RoomID.String())
	_, err = Client(t, baseURL).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong"})
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = Client(t, baseURL).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "whatever"})
	WantErrCode(t, err, http.StatusBadRequest, "M_USER_IN_USE")
	_, err = Client(t, baseURL).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Not Valid!", Password: "whatever"})
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_USERNAME")
	federationBadInput(t, baseURL)
}

// rawBadInput checks, on every process that answers clients (the polylith's sync API
// included), what no route serves and text the server would otherwise rewrite: unknown
// endpoints 404 M_UNRECOGNIZED, wrong methods 405 M_UNRECOGNIZED, preflights 200 without a
// token, the CORS headers on each answer, bodies that are not UTF-8 400 M_NOT_JSON and path
// variables that are not UTF-8 400 M_INVALID_PARAM.
func rawBadInput(t *testing.T, baseURL, token, roomID string) {
	v3 := "/_matrix/client/v3"
	room := url.PathEscape(roomID)
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{http.MethodGet, v3 + "/no_such_endpoint", "", http.StatusNotFound, "M_UNRECOGNIZED"},
		{http.MethodGet, "/_matrix/no_such_api/v1/x", "", http.StatusNotFound, "M_UNRECOGNIZED"},
		{http.MethodGet, "/_matrix/federation/v1/no_such_endpoint", "", http.StatusNotFound, "M_UNRECOGNIZED"},
		{http.MethodDelete, v3 + "/createRoom", "", http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		{http.MethodPost, v3 + "/sync", "", http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		{http.MethodOptions, v3 + "/sync", "", http.StatusOK, ""},
		{http.MethodOptions, v3 + "/rooms/" + room + "/send/m.room.message/1", "", http.StatusOK, ""},
		{http.MethodOptions, v3 + "/no_such_endpoint", "", http.StatusOK, ""},
		{http.MethodPost, v3 + "/createRoom", "{\"name\":\"\xff\"}", http.StatusBadRequest, "M_NOT_JSON"},
		{http.MethodPut, v3 + "/rooms/" + room + "/send/m.room.message/raw1", `{"body":"\udc00"}`, http.StatusBadRequest, "M_NOT_JSON"},
		{http.MethodPut, v3 + "/rooms/" + room + "/state/m.x%00/", `{}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{http.MethodGet, v3 + "/rooms/%FF/messages", "", http.StatusBadRequest, "M_INVALID_PARAM"},
	} {
		req, err := http.NewRequest(tc.method, baseURL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if tc.method != http.MethodOptions {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read
		if resp.StatusCode != tc.status || (tc.code != "" && !strings.Contains(string(body), `"errcode":"`+tc.code+`"`)) {
			t.Fatalf("%s %s: %d %s, want %d %s", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.code)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("%s %s: no CORS headers: %v", tc.method, tc.path, resp.Header)
		}
	}
}

// federationBadInput checks the federation and key routes behind baseURL's plain HTTP
// listener (or proxy): the signed key document names the server, /version answers
// unsigned, and a federation request without an X-Matrix signature gets 401.
func federationBadInput(t *testing.T, baseURL string) {
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/_matrix/key/v2/server", http.StatusOK, `"server_name":"e2e.test"`},
		{"/_matrix/federation/v1/version", http.StatusOK, `"name":"Dendrite"`},
		{"/_matrix/federation/v1/query/profile?user_id=@alice:e2e.test", http.StatusUnauthorized, `"M_UNAUTHORIZED"`},
	} {
		resp, err := http.Get(baseURL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read-only
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Fatalf("%s: %d %s, want %d with %s", tc.path, resp.StatusCode, body, tc.status, tc.want)
		}
	}
}
