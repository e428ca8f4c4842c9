package pushrules

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func event(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func str(s string) *string { return &s }

// TestConditions checks each condition kind with the spec's examples.
func TestConditions(t *testing.T) {
	e := NewEvaluator(1<<20, nil)
	ctx := &Context{UserID: "@alice:x", DisplayName: "Alice", MemberCount: 3, SenderPowerLevel: 50,
		NotificationPowerLevels: map[string]int64{"room": 50, "high": 100}}
	topic := func(v string) string { return `{"type":"m.room.topic","content":{"topic":` + v + `}}` }
	body := func(v string) string { return `{"type":"m.room.message","content":{"body":"` + v + `"}}` }
	for _, c := range []struct {
		name  string
		cond  Condition
		event string
		want  bool
	}{
		{"glob whole value", Condition{Kind: "event_match", Key: "content.topic", Pattern: str("lunc?*")}, topic(`"Lunch plans"`), true},
		{"glob case-insensitive", Condition{Kind: "event_match", Key: "content.topic", Pattern: str("lunc?*")}, topic(`"LUNCH"`), true},
		{"glob no leading space", Condition{Kind: "event_match", Key: "content.topic", Pattern: str("lunc?*")}, topic(`" lunch"`), false},
		{"glob ? needs a character", Condition{Kind: "event_match", Key: "content.topic", Pattern: str("lunc?*")}, topic(`"lunc"`), false},
		{"glob not a string", Condition{Kind: "event_match", Key: "content.topic", Pattern: str("*")}, topic(`null`), false},
		{"glob absent", Condition{Kind: "event_match", Key: "content.nope", Pattern: str("*")}, topic(`"x"`), false},
		{"body word", Condition{Kind: "event_match", Key: "content.body", Pattern: str("ex*ple")}, body("An example event."), true},
		{"body whole", Condition{Kind: "event_match", Key: "content.body", Pattern: str("ex*ple")}, body("exple"), true},
		{"body across words", Condition{Kind: "event_match", Key: "content.body", Pattern: str("ex*ple")}, body("An exciting triple-whammy"), true},
		{"body inside a word", Condition{Kind: "event_match", Key: "content.body", Pattern: str("ample")}, body("An example"), false},
		{"property is", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, `{"content":{"m.federate":true}}`, true},
		{"property is string", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, `{"content":{"m.federate":"true"}}`, false},
		{"property is number", Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, `{"content":{"m.federate":1}}`, false},
		{"property is null", Condition{Kind: "event_property_is", Key: "content.a", Value: json.RawMessage(`null`)}, `{"content":{"a":null}}`, true},
		{"property is null absent", Condition{Kind: "event_property_is", Key: "content.b", Value: json.RawMessage(`null`)}, `{"content":{"a":null}}`, false},
		{"property contains", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`"#myroom:example.com"`)}, `{"content":{"alt_aliases":["#somewhere:example.org","#myroom:example.com"]}}`, true},
		{"property contains partial", Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`":example.com"`)}, `{"content":{"alt_aliases":["#myroom:example.com"]}}`, false},
		{"property contains not array", Condition{Kind: "event_property_contains", Key: "content.a", Value: json.RawMessage(`"x"`)}, `{"content":{"a":"x"}}`, false},
		{"escaped backslash", Condition{Kind: "event_property_is", Key: `content.a\\b`, Value: json.RawMessage(`1`)}, `{"content":{"a\\b":1}}`, true},
		{"display name", Condition{Kind: "contains_display_name"}, body("hi alice!"), true},
		{"display name in a word", Condition{Kind: "contains_display_name"}, body("hi alicent"), false},
		{"member count", Condition{Kind: "room_member_count", Is: "3"}, body("x"), true},
		{"member count ==", Condition{Kind: "room_member_count", Is: "==2"}, body("x"), false},
		{"member count <", Condition{Kind: "room_member_count", Is: "<4"}, body("x"), true},
		{"member count >=", Condition{Kind: "room_member_count", Is: ">=4"}, body("x"), false},
		{"member count <=", Condition{Kind: "room_member_count", Is: "<=3"}, body("x"), true},
		{"member count >", Condition{Kind: "room_member_count", Is: ">2"}, body("x"), true},
		{"permission", Condition{Kind: "sender_notification_permission", Key: "room"}, body("x"), true},
		{"permission too low", Condition{Kind: "sender_notification_permission", Key: "high"}, body("x"), false},
		{"permission default 50", Condition{Kind: "sender_notification_permission", Key: "other"}, body("x"), true},
		{"unknown kind never matches", Condition{Kind: "org.example.new"}, body("x"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := e.conditionMatches(&c.cond, event(t, c.event), ctx); got != c.want {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestDefaultRules evaluates the server-default rules against typical events.
func TestDefaultRules(t *testing.T) {
	rs, err := Load("@alice:x", nil)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := LoadShared("@alice:x", nil)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEvaluator(1<<20, nil)
	for _, c := range []struct {
		name, event    string
		members        int
		rule           string
		notify, hilite bool
	}{
		{"message", `{"type":"m.room.message","sender":"@bob:x","content":{"msgtype":"m.text","body":"hi"}}`, 3, ".m.rule.message", true, false},
		{"dm", `{"type":"m.room.message","sender":"@bob:x","content":{"msgtype":"m.text","body":"hi"}}`, 2, ".m.rule.room_one_to_one", true, false},
		{"notice", `{"type":"m.room.message","sender":"@bob:x","content":{"msgtype":"m.notice","body":"hi"}}`, 3, ".m.rule.suppress_notices", false, false},
		{"mention", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"hi","m.mentions":{"user_ids":["@alice:x"]}}}`, 3, ".m.rule.is_user_mention", true, true},
		{"room mention", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"hi","m.mentions":{"room":true}}}`, 3, ".m.rule.is_room_mention", true, true},
		{"invite", `{"type":"m.room.member","state_key":"@alice:x","sender":"@bob:x","content":{"membership":"invite"}}`, 3, ".m.rule.invite_for_me", true, false},
		{"join", `{"type":"m.room.member","state_key":"@carol:x","sender":"@carol:x","content":{"membership":"join"}}`, 3, ".m.rule.member_event", false, false},
		{"edit", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"x","m.relates_to":{"rel_type":"m.replace"}}}`, 3, ".m.rule.suppress_edits", false, false},
		{"encrypted dm", `{"type":"m.room.encrypted","sender":"@bob:x","content":{}}`, 2, ".m.rule.encrypted_room_one_to_one", true, false},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","sender":"@bob:x","content":{}}`, 3, ".m.rule.tombstone", true, true},
		{"unknown type", `{"type":"m.test","sender":"@bob:x","content":{}}`, 3, "", false, false},
		{"display name", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"hi White Rabbit!"}}`, 3, ".m.rule.contains_display_name", true, true},
		{"display name in a word", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"White Rabbits"}}`, 3, ".m.rule.message", true, false},
		{"user name", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"ping @alice:x please"}}`, 3, ".m.rule.contains_user_name", true, true},
		{"user name case", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"ALICE?"}}`, 3, ".m.rule.contains_user_name", true, true},
		{"user name in a word", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"malice"}}`, 3, ".m.rule.message", true, false},
		{"@room", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"hey @room, lunch"}}`, 3, ".m.rule.roomnotif", true, true},
		{"@room without permission", `{"type":"m.room.message","sender":"@eve:x","content":{"body":"hey @room"}}`, 3, ".m.rule.message", true, false},
		{"user name with m.mentions", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"alice","m.mentions":{}}}`, 3, ".m.rule.message", true, false},
		{"display name with m.mentions", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"White Rabbit","m.mentions":{"user_ids":["@carol:x"]}}}`, 3, ".m.rule.message", true, false},
		{"@room with m.mentions", `{"type":"m.room.message","sender":"@bob:x","content":{"body":"@room","m.mentions":{}}}`, 3, ".m.rule.message", true, false},
		{"notice naming the user", `{"type":"m.room.message","sender":"@bob:x","content":{"msgtype":"m.notice","body":"alice"}}`, 3, ".m.rule.suppress_notices", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			level := int64(50)
			if strings.Contains(c.event, `"sender":"@eve:x"`) {
				level = 0
			}
			ctx := &Context{UserID: "@alice:x", DisplayName: "White Rabbit", MemberCount: c.members, SenderPowerLevel: level}
			r := e.Match(rs, event(t, c.event), ctx)
			if rShared := e.Match(shared, event(t, c.event), ctx); (rShared == nil) != (r == nil) || r != nil && rShared.RuleID != r.RuleID {
				t.Fatalf("LoadShared's ruleset matched %+v, Load's %+v", rShared, r)
			}
			id := ""
			var out Outcome
			if r != nil {
				id = r.RuleID
				out = Actions(r.Actions)
			}
			if id != c.rule || out.Notify != c.notify || out.Highlight != c.hilite {
				t.Fatalf("rule %q notify %v highlight %v", id, out.Notify, out.Highlight)
			}
		})
	}
}

// TestEditAndLoad: user rules sit between .m.rule.master and the other defaults, a stored
// ruleset keeps the user's choices for default rules, and a kind's user rules are capped.
func TestEditAndLoad(t *testing.T) {
	rs, err := Load("@alice:x", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := BuildRule(KindOverride, "mine", NewRule{Actions: &[]json.RawMessage{json.RawMessage(`"notify"`)}, Conditions: &[]json.RawMessage{}})
	if err != nil {
		t.Fatal(err)
	}
	if err = rs.Put(KindOverride, r, "", ""); err != nil {
		t.Fatal(err)
	}
	rs.Find(KindUnderride, ".m.rule.message").Enabled = false
	raw, err := rs.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load("@alice:x", raw)
	if err != nil {
		t.Fatal(err)
	}
	if again.Override[0].RuleID != masterRuleID || again.Override[1].RuleID != "mine" || again.Find(KindUnderride, ".m.rule.message").Enabled {
		t.Fatalf("reloaded %s", raw)
	}
	if _, err = BuildRule(KindRoom, ".m.rule.x", NewRule{Actions: &[]json.RawMessage{}}); err == nil {
		t.Fatal("a user rule ID starting with . was accepted")
	}
	for i := 0; i < maxRulesPerKind; i++ {
		err = rs.Put(KindSender, &Rule{RuleID: fmt.Sprintf("@u%d:x", i), Enabled: true, Actions: []json.RawMessage{}}, "", "")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err = rs.Put(KindSender, &Rule{RuleID: "@one-too-many:x", Actions: []json.RawMessage{}}, "", ""); err == nil {
		t.Fatal("more rules than the cap were accepted")
	}
}

// BenchmarkMatch evaluates a plain message against the default rules of a thousand
// users, as the push reader does for a message in a room of a thousand members.
func BenchmarkMatch(b *testing.B) {
	e := NewEvaluator(1<<20, nil)
	var rulesets []*Ruleset
	for i := range 1000 {
		rs, err := Defaults(fmt.Sprintf("@user%d:bench.test", i))
		if err != nil {
			b.Fatal(err)
		}
		rulesets = append(rulesets, rs)
	}
	event := map[string]any{"type": "m.room.message", "sender": "@user0:bench.test", "room_id": "!room:bench.test",
		"event_id": "$ev", "content": map[string]any{"msgtype": "m.text", "body": "hello everyone in the room"}}
	contexts := make([]Context, len(rulesets))
	for i := range contexts {
		contexts[i] = Context{UserID: fmt.Sprintf("@user%d:bench.test", i), DisplayName: fmt.Sprintf("User %d", i), MemberCount: 1000,
			SenderPowerLevel: 100}
	}
	match := func(i int) {
		if r := e.Match(rulesets[i%len(rulesets)], event, &contexts[i%len(rulesets)]); r == nil || r.RuleID != ".m.rule.message" {
			b.Fatalf("matched %v, want .m.rule.message", r)
		}
	}
	for i := range rulesets { // the patterns compiled, as in a reader that evaluated a message before
		match(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		match(i)
	}
}
