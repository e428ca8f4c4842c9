package routing_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

func TestProfile(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, aliceTok := e.register("alice", "pw")
		_, bobTok := e.register("bob", "pw")
		path := v3 + "/profile/" + url.PathEscape(alice)
		if p := e.want("GET", path, "", nil, 200, ""); p["displayname"] != "alice" || p["avatar_url"] != nil {
			t.Fatalf("initial profile %v", p)
		}
		e.want("PUT", path+"/displayname", aliceTok, map[string]any{"displayname": "Alice A."}, 200, "")
		e.want("PUT", path+"/avatar_url", aliceTok, map[string]any{"avatar_url": "mxc://x/y"}, 200, "")
		e.want("PUT", path+"/avatar_url", aliceTok, map[string]any{"avatar_url": "mxc://x/y"}, 200, "") // unchanged
		e.want("PUT", path+"/displayname", bobTok, map[string]any{"displayname": "Mallory"}, 403, "M_FORBIDDEN")
		e.want("PUT", path+"/displayname", "", map[string]any{"displayname": "Mallory"}, 401, "M_MISSING_TOKEN")
		e.want("PUT", path+"/displayname", aliceTok, map[string]any{}, 400, "M_MISSING_PARAM")
		e.want("PUT", path+"/displayname", aliceTok, map[string]any{"displayname": 7}, 400, "M_BAD_JSON")
		e.want("PUT", path+"/displayname", aliceTok, "nope", 400, "M_NOT_JSON")
		e.want("PUT", path+"/displayname", aliceTok, map[string]any{"displayname": strings.Repeat("é", 257)}, 400, "M_INVALID_PARAM")
		if p := e.want("GET", path+"/displayname", "", nil, 200, ""); p["displayname"] != "Alice A." {
			t.Fatalf("display name %v", p)
		}
		if p := e.want("GET", path+"/avatar_url", "", nil, 200, ""); p["avatar_url"] != "mxc://x/y" {
			t.Fatalf("avatar %v", p)
		}
		e.mu.Lock()
		changed := strings.Join(e.changed, ",")
		e.mu.Unlock()
		if changed != alice+","+alice {
			t.Fatalf("ProfileChanged calls: %q", changed)
		}
		for _, unknown := range []string{"@nobody:" + serverName, "@alice:elsewhere", "not-a-user"} {
			e.want("GET", v3+"/profile/"+url.PathEscape(unknown), "", nil, 404, "M_NOT_FOUND")
			e.want("GET", v3+"/profile/"+url.PathEscape(unknown)+"/displayname", "", nil, 404, "M_NOT_FOUND")
		}
	})
}

func TestAccountData(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, tok := e.register("alice", "pw")
		bob, bobTok := e.register("bob", "pw")
		global := v3 + "/user/" + url.PathEscape(alice) + "/account_data/m.direct"
		room := v3 + "/user/" + url.PathEscape(alice) + "/rooms/" + url.PathEscape("!room:x") + "/account_data/m.tag"
		e.want("GET", global, tok, nil, 404, "M_NOT_FOUND")
		e.want("PUT", global, tok, map[string]any{"@bob:x": []string{"!r:x"}}, 200, "")
		if got := e.want("GET", global, tok, nil, 200, ""); got["@bob:x"] == nil {
			t.Fatalf("global account data %v", got)
		}
		e.want("GET", room, tok, nil, 404, "M_NOT_FOUND")
		e.want("PUT", room, tok, map[string]any{"tags": map[string]any{"u.work": map[string]any{}}}, 200, "")
		if got := e.want("GET", room, tok, nil, 200, ""); got["tags"] == nil {
			t.Fatalf("room account data %v", got)
		}
		// The room's data is not the global data of the same type, nor another room's.
		e.want("GET", v3+"/user/"+url.PathEscape(alice)+"/account_data/m.tag", tok, nil, 404, "M_NOT_FOUND")
		e.want("GET", v3+"/user/"+url.PathEscape(alice)+"/rooms/"+url.PathEscape("!other:x")+"/account_data/m.tag", tok, nil, 404, "M_NOT_FOUND")

		e.want("PUT", global, tok, `["array"]`, 400, "M_BAD_JSON")
		e.want("PUT", global, tok, `{bad`, 400, "M_NOT_JSON")
		e.want("PUT", global, bobTok, map[string]any{}, 403, "M_FORBIDDEN")
		e.want("GET", global, bobTok, nil, 403, "M_FORBIDDEN")
		e.want("PUT", v3+"/user/"+url.PathEscape(alice)+"/account_data/m.push_rules", tok, map[string]any{}, 405, "M_BAD_JSON")
		e.want("PUT", v3+"/user/"+url.PathEscape(alice)+"/rooms/"+url.PathEscape("!room:x")+"/account_data/m.fully_read", tok, map[string]any{"event_id": "$x"}, 405, "M_BAD_JSON")
		e.want("PUT", v3+"/user/"+url.PathEscape(alice)+"/rooms/not-a-room/account_data/m.tag", tok, map[string]any{}, 400, "M_INVALID_PARAM")
		// Nothing of the refused requests was stored.
		e.want("GET", v3+"/user/"+url.PathEscape(bob)+"/account_data/m.direct", bobTok, nil, 404, "M_NOT_FOUND")
		if got := e.want("GET", global, tok, nil, 200, ""); got["@bob:x"] == nil {
			t.Fatalf("global account data after refusals %v", got)
		}
	})
}

func TestFilters(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, tok := e.register("alice", "pw")
		bob, bobTok := e.register("bob", "pw")
		base := v3 + "/user/" + url.PathEscape(alice) + "/filter"
		filter := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}}, "x.custom": true}
		id, _ := e.want("POST", base, tok, filter, 200, "")["filter_id"].(string)
		if id == "" || strings.Trim(id, "0123456789") != "" {
			t.Fatalf("filter ID %q", id)
		}
		got := e.want("GET", base+"/"+id, tok, nil, 200, "")
		want, _ := json.Marshal(filter)
		if b, _ := json.Marshal(got); string(b) != string(want) {
			t.Fatalf("filter %s, want %s", b, want)
		}
		e.want("GET", base+"/"+id, bobTok, nil, 403, "M_FORBIDDEN")
		e.want("POST", base, bobTok, filter, 403, "M_FORBIDDEN")
		e.want("GET", v3+"/user/"+url.PathEscape(bob)+"/filter/"+id, bobTok, nil, 404, "M_NOT_FOUND")
		e.want("GET", base+"/12345", tok, nil, 404, "M_NOT_FOUND")
		e.want("POST", base, tok, `{"room": {"timeline": {"limit": "ten"}}}`, 400, "M_BAD_JSON")
		e.want("POST", base, tok, `{"event_format": "xml"}`, 400, "M_BAD_JSON")
		for _, neg := range []string{`{"room": {"timeline": {"limit": -1}}}`, `{"room": {"state": {"limit": -5}}}`, `{"room": {"ephemeral": {"limit": -1}}}`,
			`{"room": {"account_data": {"limit": -1}}}`, `{"presence": {"limit": -1}}`, `{"account_data": {"limit": -9223372036854775808}}`} {
			e.want("POST", base, tok, neg, 400, "M_BAD_JSON")
		}
		e.want("POST", base, tok, `{"room": {"timeline": {"limit": 9223372036854775807}}}`, 200, "")
		e.want("POST", base, tok, `[]`, 400, "M_BAD_JSON")
		// Room and sender lists hold room and user IDs (sytest "Check creating invalid filters returns 4xx").
		for _, bad := range []string{`{"room": {"timeline": {"rooms": ["not_a_room_id"]}}}`, `{"room": {"not_rooms": ["x"]}}`,
			`{"room": {"state": {"senders": ["not_a_sender_id"]}}}`, `{"presence": {"not_senders": ["@"]}}`} {
			e.want("POST", base, tok, bad, 400, "M_BAD_JSON")
		}
		e.want("POST", base, tok, `{"room": {"rooms": ["!r:x"], "timeline": {"senders": ["@a:x"], "not_rooms": ["!s:x"]}}}`, 200, "")
		e.want("POST", base, tok, `{`, 400, "M_NOT_JSON")
	})
}

func TestServerInfo(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, tok := e.register("alice", "pw")
		versions := e.want("GET", "/_matrix/client/versions", "", nil, 200, "")["versions"].([]any)
		if versions[len(versions)-1] != "v1.12" {
			t.Fatalf("versions %v", versions)
		}
		e.want("GET", v3+"/capabilities", "", nil, 401, "M_MISSING_TOKEN")
		caps := e.want("GET", v3+"/capabilities", tok, nil, 200, "")["capabilities"].(map[string]any)
		rv := caps["m.room_versions"].(map[string]any)
		avail := rv["available"].(map[string]any)
		if rv["default"] != "10" || avail["10"] != "stable" || avail["11"] != "stable" || avail["1"] != "stable" {
			t.Fatalf("room versions %v", rv)
		}
		if caps["m.change_password"].(map[string]any)["enabled"] != true || caps["m.set_displayname"].(map[string]any)["enabled"] != true {
			t.Fatalf("capabilities %v", caps)
		}

		all := e.want("GET", v3+"/pushrules/", tok, nil, 200, "")
		global := e.want("GET", v3+"/pushrules/global/", tok, nil, 200, "")
		a, _ := json.Marshal(all["global"])
		g, _ := json.Marshal(global)
		if string(a) != string(g) {
			t.Fatal("/pushrules/ and /pushrules/global/ differ")
		}
		var rules map[string][]struct {
			RuleID     string            `json:"rule_id"`
			Default    bool              `json:"default"`
			Enabled    bool              `json:"enabled"`
			Conditions []json.RawMessage `json:"conditions"`
			Actions    []json.RawMessage `json:"actions"`
		}
		if err := json.Unmarshal(g, &rules); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
			if _, ok := rules[kind]; !ok {
				t.Fatalf("no %s rules", kind)
			}
		}
		ids := map[string]bool{}
		for _, kind := range []string{"override", "underride"} {
			for _, r := range rules[kind] {
				if !r.Default || r.Conditions == nil || r.Actions == nil {
					t.Fatalf("rule %+v", r)
				}
				ids[r.RuleID] = r.Enabled
			}
		}
		if rules["override"][0].RuleID != ".m.rule.master" || ids[".m.rule.master"] {
			t.Fatal(".m.rule.master must come first and be disabled")
		}
		for _, id := range []string{".m.rule.invite_for_me", ".m.rule.is_user_mention", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"} {
			if !ids[id] {
				t.Fatalf("rule %s missing or disabled", id)
			}
		}
		if !strings.Contains(string(g), `"pattern":"`+alice+`"`) {
			t.Fatal("invite_for_me does not name the user")
		}
		code, _ := e.do(http.MethodOptions, v3+"/pushrules/", "", nil)
		if code != 200 {
			t.Fatalf("CORS preflight %d", code)
		}
	})
}
