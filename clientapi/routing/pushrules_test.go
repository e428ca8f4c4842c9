package routing_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// roomRuleIDs returns the IDs of the user's room rules in order.
func roomRuleIDs(e *env, tok string) []string {
	e.t.Helper()
	all := e.want("GET", v3+"/pushrules/", tok, nil, 200, "")
	var ids []string
	for _, r := range all["global"].(map[string]any)["room"].([]any) {
		ids = append(ids, r.(map[string]any)["rule_id"].(string))
	}
	return ids
}

func TestPushRulesEdit(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, tok := e.register("alice", "pw")
		rule := func(id string) string { return v3 + "/pushrules/global/room/" + url.PathEscape(id) }
		notify := map[string]any{"actions": []any{"notify"}}
		e.want("PUT", rule("#a:x"), tok, notify, 200, "")
		e.want("PUT", rule("#b:x"), tok, notify, 200, "")
		e.want("PUT", rule("#c:x")+"?before="+url.QueryEscape("#a:x"), tok, notify, 200, "")
		e.want("PUT", rule("#d:x")+"?after="+url.QueryEscape("#b:x"), tok, notify, 200, "")
		e.want("PUT", rule("#b:x"), tok, notify, 200, "") // replacing keeps the place
		if got := roomRuleIDs(e, tok); len(got) != 4 || got[0] != "#b:x" || got[1] != "#d:x" || got[2] != "#c:x" || got[3] != "#a:x" {
			t.Fatalf("room rules %v", got)
		}
		e.want("PUT", rule("#e:x")+"?before=nope", tok, notify, 400, "M_UNKNOWN")
		e.want("PUT", v3+"/pushrules/global/override/x?before=.m.rule.message", tok, map[string]any{"actions": []any{}, "conditions": []any{}}, 400, "M_UNKNOWN")

		got := e.want("GET", rule("#a:x"), tok, nil, 200, "")
		if got["enabled"] != true || got["default"] != false || got["rule_id"] != "#a:x" {
			t.Fatalf("rule %v", got)
		}
		e.want("PUT", rule("#a:x")+"/enabled", tok, map[string]any{"enabled": false}, 200, "")
		if got := e.want("GET", rule("#a:x")+"/enabled", tok, nil, 200, ""); got["enabled"] != false {
			t.Fatalf("enabled %v", got)
		}
		tweak := []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}}
		e.want("PUT", rule("#a:x")+"/actions", tok, map[string]any{"actions": tweak}, 200, "")
		want, _ := json.Marshal(map[string]any{"actions": tweak})
		if got, _ := json.Marshal(e.want("GET", rule("#a:x")+"/actions", tok, nil, 200, "")); string(got) != string(want) {
			t.Fatalf("actions %s", got)
		}
		e.want("DELETE", rule("#a:x"), tok, nil, 200, "")
		e.want("DELETE", rule("#a:x"), tok, nil, 404, "M_NOT_FOUND")
		e.want("GET", rule("#a:x"), tok, nil, 404, "M_NOT_FOUND")

		master := v3 + "/pushrules/global/override/.m.rule.master"
		e.want("PUT", master+"/enabled", tok, map[string]any{"enabled": true}, 200, "")
		e.want("PUT", master+"/actions", tok, map[string]any{"actions": []any{"dont_notify"}}, 200, "")
		if got := e.want("GET", master, tok, nil, 200, ""); got["enabled"] != true || got["default"] != true {
			t.Fatalf("master %v", got)
		}
		e.want("DELETE", master, tok, nil, 400, "M_UNKNOWN")
		e.want("PUT", master, tok, map[string]any{"actions": []any{}, "conditions": []any{}}, 400, "M_INVALID_PARAM")
		e.want("PUT", v3+"/pushrules/global/override/.nope/enabled", tok, map[string]any{"enabled": true}, 404, "M_NOT_FOUND")

		content := v3 + "/pushrules/global/content/" + url.PathEscape("тест")
		e.want("PUT", content, tok, map[string]any{"actions": []any{"notify"}, "pattern": "тест"}, 200, "")
		if got := e.want("GET", content, tok, nil, 200, ""); got["pattern"] != "тест" {
			t.Fatalf("content rule %v", got)
		}

		// The rules are the user's m.push_rules account data, which /sync delivers.
		ad := e.want("GET", v3+"/user/"+url.PathEscape(alice)+"/account_data/m.push_rules", tok, nil, 200, "")
		raw, _ := json.Marshal(ad)
		var stored struct {
			Global struct {
				Override []struct {
					RuleID  string `json:"rule_id"`
					Enabled bool   `json:"enabled"`
				} `json:"override"`
				Room []struct {
					RuleID string `json:"rule_id"`
				} `json:"room"`
			} `json:"global"`
		}
		if err := json.Unmarshal(raw, &stored); err != nil || len(stored.Global.Room) != 3 ||
			stored.Global.Override[0].RuleID != ".m.rule.master" || !stored.Global.Override[0].Enabled {
			t.Fatalf("account data %s", raw)
		}
	})
}

func TestPushRulesBadInput(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		_, tok := e.register("alice", "pw")
		p := v3 + "/pushrules"
		notify := []any{"notify"}
		for _, c := range []struct {
			method, path string
			body         any
			status       int
			code         string
		}{
			{"PUT", p + "/", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/not_a_scope/room/x", map[string]any{"actions": notify}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room/", map[string]any{"actions": notify}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/not_a_kind/foo", map[string]any{"actions": notify}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room/a%2Fb", map[string]any{"actions": notify}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room/a%5Cb", map[string]any{"actions": notify}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/override/my_id", map[string]any{"actions": notify}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/underride/my_id", map[string]any{"actions": notify, "conditions": []any{map[string]any{}}}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/underride/my_id", map[string]any{"actions": notify, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "two"}}}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/underride/my_id", map[string]any{"actions": notify, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "a", "value": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/underride/my_id", map[string]any{"actions": notify, "conditions": "x"}, 400, "M_BAD_JSON"},
			{"PUT", p + "/global/content/my_id", map[string]any{"actions": notify}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/room/r", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/room/r", map[string]any{"actions": []any{"not_an_action"}}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room/r", map[string]any{"actions": []any{map[string]any{"value": 1}}}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/room/r", "not json", 400, "M_NOT_JSON"},
			{"PUT", p + "/global/override/.m.rule.master/not_an_attr", map[string]any{"enabled": true}, 400, "M_INVALID_PARAM"},
			{"PUT", p + "/global/override/.m.rule.master/enabled", map[string]any{"enabled": "yes"}, 400, "M_BAD_JSON"},
			{"PUT", p + "/global/override/.m.rule.master/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", p + "/global/override/.m.rule.master/actions", map[string]any{"actions": []any{"x"}}, 400, "M_INVALID_PARAM"},
			{"GET", p + "/global", nil, 400, "M_INVALID_PARAM"},
			{"GET", p + "/global/room", nil, 400, "M_INVALID_PARAM"},
			{"GET", p + "/not_a_scope/", nil, 400, "M_INVALID_PARAM"},
			{"GET", p + "/global/not_a_kind/", nil, 400, "M_INVALID_PARAM"},
			{"GET", p + "/global/override/.m.rule.master/not_an_attr", nil, 400, "M_INVALID_PARAM"},
			{"GET", p + "/global/override/not_a_rule", nil, 404, "M_NOT_FOUND"},
			{"GET", p, nil, 404, ""}, // the production router answers M_UNRECOGNIZED
			{"DELETE", p + "/global/room/", nil, 400, "M_INVALID_PARAM"},
			{"DELETE", p + "/global/room/nope", nil, 404, "M_NOT_FOUND"},
			{"GET", p + "/", nil, 401, "M_MISSING_TOKEN"},
		} {
			token := tok
			if c.status == 401 {
				token = ""
			}
			e.want(c.method, c.path, token, c.body, c.status, c.code)
		}
		// A list of one kind is an array, in priority order.
		code, _ := e.do("GET", p+"/global/underride/", tok, nil)
		if code != 200 {
			t.Fatalf("underride list: %d", code)
		}
	})
}
