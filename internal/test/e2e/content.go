package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// StateContent checks that the content of auth-relevant state events from a client is
// type-checked (400 M_BAD_JSON, a message naming no Go type) in state PUTs and in every
// part of createRoom, that a power levels change above the sender's level is 403, and that
// valid content still works. The server must be fresh (it registers alice and mod).
func StateContent(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "alice")
	mod := Register(t, baseURL, "mod")
	status, res := call(t, alice, http.MethodPost, baseURL+"/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID.String(): 100, mod.UserID.String(): 50}, "events": map[string]any{"m.room.power_levels": 50}}})
	if status != http.StatusOK {
		t.Fatalf("createRoom: %d %v", status, res)
	}
	room := id.RoomID(res["room_id"])
	if _, err := mod.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	put := func(c *mautrix.Client, evType, stateKey string, content any) (int, map[string]string) {
		t.Helper()
		u := baseURL + "/_matrix/client/v3/rooms/" + url.PathEscape(room.String()) + "/state/" + url.PathEscape(evType) + "/" + url.PathEscape(stateKey)
		return call(t, c, http.MethodPut, u, content)
	}
	bad := []struct {
		evType  string
		content any
	}{
		{"m.room.join_rules", map[string]any{"join_rule": 5}},
		{"m.room.join_rules", map[string]any{}},
		{"m.room.power_levels", map[string]any{"users": map[string]any{alice.UserID.String(): "high"}}},
		{"m.room.power_levels", map[string]any{"users": map[string]any{alice.UserID.String(): 100}, "ban": true}},
		{"m.room.power_levels", map[string]any{"users": map[string]any{alice.UserID.String(): 100}, "kick": "50"}},
		{"m.room.history_visibility", map[string]any{"history_visibility": 1}},
		{"m.room.guest_access", map[string]any{"guest_access": "sometimes"}},
		{"m.room.server_acl", map[string]any{"allow": "*"}},
		{"m.room.encryption", map[string]any{"rotation_period_ms": 5}},
		{"m.room.canonical_alias", map[string]any{"alias": 5}},
		{"m.room.create", map[string]any{"m.federate": "no"}},
	}
	for _, tc := range bad {
		status, res := put(alice, tc.evType, "", tc.content)
		wantBadJSON(t, tc.evType, status, res)
	}
	// Escalation through users_default (the spec's power levels rule) is refused.
	status, res = put(mod, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.UserID.String(): 100, mod.UserID.String(): 50},
		"events": map[string]any{"m.room.power_levels": 50}, "users_default": 100})
	if status != http.StatusForbidden || res["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("users_default escalation: %d %v", status, res)
	}
	if status, res = put(alice, "m.room.join_rules", "", map[string]any{"join_rule": "invite"}); status != http.StatusOK {
		t.Fatalf("valid join rules: %d %v", status, res)
	}
	// createRoom: initial_state, power_level_content_override and creation_content.
	create := baseURL + "/_matrix/client/v3/createRoom"
	for name, body := range map[string]map[string]any{
		"initial_state":                {"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": 5}}}},
		"power_level_content_override": {"power_level_content_override": map[string]any{"users_default": "lots"}},
		"creation_content":             {"creation_content": map[string]any{"m.federate": "no"}},
		"stringy level in v10":         {"room_version": "10", "power_level_content_override": map[string]any{"ban": "50"}},
	} {
		status, res := call(t, alice, http.MethodPost, create, body)
		wantBadJSON(t, "createRoom "+name, status, res)
	}
	// Rooms v1-9 accept levels as strings holding integers.
	if status, res := call(t, alice, http.MethodPost, create, map[string]any{"room_version": "9", "power_level_content_override": map[string]any{"ban": "50"}}); status != http.StatusOK {
		t.Fatalf("stringy level in v9: %d %v", status, res)
	}
}

func wantBadJSON(t *testing.T, what string, status int, res map[string]string) {
	t.Helper()
	if status != http.StatusBadRequest || res["errcode"] != "M_BAD_JSON" {
		t.Fatalf("%s: %d %v, want 400 M_BAD_JSON", what, status, res)
	}
	for _, leak := range []string{"Go ", "int64", "json:", "unmarshal", "eventauth"} {
		if strings.Contains(res["error"], leak) {
			t.Fatalf("%s: message %q leaks %q", what, res["error"], leak)
		}
	}
}

// call sends a JSON request with the client's token and returns the status and the body.
func call(t *testing.T, c *mautrix.Client, method, u string, body any) (int, map[string]string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // nolint: errcheck // read-only
	out := map[string]string{}
	var raw map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&raw) // a body that is not JSON fails the status checks
	for k, v := range raw {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return resp.StatusCode, out
}
