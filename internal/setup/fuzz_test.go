package setup

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// FuzzAuthenticatedBodies sends arbitrary bodies, as a logged-in member of a room, to the
// endpoints that decode a body into a room, ephemeral or account change: every answer must
// be a success or a client error, never a server error.
func FuzzAuthenticatedBodies(f *testing.F) {
	url := benchMonolith(f)
	alice := e2e.Register(f, url, "fuzzer")
	created, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		f.Fatal(err)
	}
	room := created.RoomID.String()
	sent, err := alice.SendText(context.Background(), created.RoomID, "target")
	if err != nil {
		f.Fatal(err)
	}
	v3 := "/_matrix/client/v3"
	targets := []struct{ method, path string }{
		{http.MethodPut, v3 + "/rooms/" + room + "/typing/" + alice.UserID.String()},
		{http.MethodPost, v3 + "/rooms/" + room + "/receipt/m.read/" + sent.EventID.String()},
		{http.MethodPost, v3 + "/rooms/" + room + "/read_markers"},
		{http.MethodPut, v3 + "/sendToDevice/m.test/fuzz"},
		{http.MethodPut, v3 + "/presence/" + alice.UserID.String() + "/status"},
		{http.MethodPost, v3 + "/delete_devices"},
		{http.MethodPost, v3 + "/account/password"},
		{http.MethodPut, v3 + "/rooms/" + room + "/send/m.room.message/fuzz"},
		{http.MethodPut, v3 + "/rooms/" + room + "/state/m.room.topic"},
		{http.MethodPost, v3 + "/search"},
	}
	seeds := []string{
		``, `{`, `[]`, `null`, `"x"`, `{}`, `{"typing": true, "timeout": -1}`, `{"typing": "yes"}`,
		`{"thread_id": ""}`, `{"thread_id": 5}`, `{"m.fully_read": 5, "m.read": "$nope"}`,
		`{"messages": {"@a:b": {"*": []}}}`, `{"messages": {"not a user": {}}}`, `{"messages": []}`,
		`{"presence": "sleeping"}`, `{"presence": "online", "status_msg": 7}`,
		`{"devices": "x"}`, `{"devices": [], "auth": {"type": "m.login.password", "identifier": {"user": 5}}}`,
		`{"new_password": "", "auth": null}`, `{"new_password": "x", "auth": {"type": "m.login.password", "password": "y", "user": "@x:y"}}`,
		`{"body": "hi", "msgtype": "m.text"}`, `{"topic": {"nested": [1, 2]}}`,
		`{"search_categories": {"room_events": {"search_term": "target*\\\" NEAR(", "order_by": "recent", "filter": {"limit": 1e30}}}}`,
		`{"search_categories": {"room_events": {"search_term": "t", "event_context": {"before_limit": -1}, "groupings": {"group_by": [{"key": 5}]}}}}`,
	}
	for _, s := range seeds {
		for i := range targets {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		tg := targets[int(which)%len(targets)]
		req, err := http.NewRequest(tg.method, url+tg.path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close() // only the status matters
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s %q: status %d", tg.method, tg.path, body, res.StatusCode)
		}
	})
}
