package eventcontent

import (
	"errors"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

func TestValidate(t *testing.T) {
	empty := ""
	cases := []struct {
		name, version, evType, content string
		ok                             bool
	}{
		{"join rule public", "10", "m.room.join_rules", `{"join_rule":"public"}`, true},
		{"join rule restricted with allow", "10", "m.room.join_rules", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:x"}]}`, true},
		{"join rule a number", "10", "m.room.join_rules", `{"join_rule":5}`, false},
		{"join rule missing", "10", "m.room.join_rules", `{}`, false},
		{"join rule unknown", "10", "m.room.join_rules", `{"join_rule":"everyone"}`, false},
		{"join rule null", "10", "m.room.join_rules", `{"join_rule":null}`, false},
		{"allow not an array", "10", "m.room.join_rules", `{"join_rule":"restricted","allow":{}}`, false},
		{"allow entry without type", "10", "m.room.join_rules", `{"join_rule":"restricted","allow":[{"room_id":"!a:x"}]}`, false},
		{"allow room_id not a room ID", "10", "m.room.join_rules", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"a"}]}`, false},
		{"create with extras", "10", "m.room.create", `{"creator":"@a:x","m.federate":false,"type":"m.space","predecessor":{"room_id":"!o:x","event_id":"$e"}}`, true},
		{"create federate a string", "10", "m.room.create", `{"m.federate":"no"}`, false},
		{"create predecessor without room_id", "10", "m.room.create", `{"predecessor":{"event_id":"$e"}}`, false},
		{"create additional_creators not user IDs", "12", "m.room.create", `{"additional_creators":["bob"]}`, false},
		{"create additional_creators a string", "12", "m.room.create", `{"additional_creators":"@b:x"}`, false},
		{"member join", "10", "m.room.member", `{"membership":"join","displayname":null,"avatar_url":"mxc://x/y"}`, true},
		{"member unknown membership", "10", "m.room.member", `{"membership":"lurk"}`, false},
		{"member is_direct a string", "10", "m.room.member", `{"membership":"invite","is_direct":"yes"}`, false},
		{"member displayname a number", "10", "m.room.member", `{"membership":"join","displayname":1}`, false},
		{"member authorised via not a user", "10", "m.room.member", `{"membership":"join","join_authorised_via_users_server":"x"}`, false},
		{"member third party invite without signed", "10", "m.room.member", `{"membership":"invite","third_party_invite":{"display_name":"a"}}`, false},
		{"history visibility shared", "10", "m.room.history_visibility", `{"history_visibility":"shared"}`, true},
		{"history visibility unknown", "10", "m.room.history_visibility", `{"history_visibility":"everyone"}`, false},
		{"guest access can_join", "10", "m.room.guest_access", `{"guest_access":"can_join"}`, true},
		{"guest access a bool", "10", "m.room.guest_access", `{"guest_access":true}`, false},
		{"server acl", "10", "m.room.server_acl", `{"allow":["*"],"deny":["evil.example"],"allow_ip_literals":false}`, true},
		{"server acl allow a string", "10", "m.room.server_acl", `{"allow":"*"}`, false},
		{"server acl deny entry a number", "10", "m.room.server_acl", `{"deny":[1]}`, false},
		{"server acl ip literals a string (ignored, as Synapse does)", "10", "m.room.server_acl", `{"allow":["*"],"allow_ip_literals":"false"}`, true},
		{"encryption", "10", "m.room.encryption", `{"algorithm":"m.megolm.v1.aes-sha2","rotation_period_ms":604800000}`, true},
		{"encryption without algorithm", "10", "m.room.encryption", `{}`, false},
		{"encryption period a float", "10", "m.room.encryption", `{"algorithm":"m.megolm.v1.aes-sha2","rotation_period_msgs":1.5}`, false},
		{"canonical alias", "10", "m.room.canonical_alias", `{"alias":"#a:x","alt_aliases":["#b:x"]}`, true},
		{"canonical alias a number", "10", "m.room.canonical_alias", `{"alias":5}`, false},
		{"canonical alt alias not an alias", "10", "m.room.canonical_alias", `{"alt_aliases":["b"]}`, false},
		{"power levels integers", "10", "m.room.power_levels", `{"ban":50,"users":{"@a:x":100},"events":{"m.room.name":50},"notifications":{"room":50}}`, true},
		{"power levels user level a word", "10", "m.room.power_levels", `{"users":{"@a:x":"high"}}`, false},
		{"power levels ban a bool", "10", "m.room.power_levels", `{"ban":true}`, false},
		{"power levels stringy in v10", "10", "m.room.power_levels", `{"ban":"50"}`, false},
		{"power levels stringy in v9", "9", "m.room.power_levels", `{"ban":" +050 ","users":{"@a:x":"100"}}`, true},
		{"power levels word in v9", "9", "m.room.power_levels", `{"users":{"@a:x":"high"}}`, false},
		{"power levels float in v5", "5", "m.room.power_levels", `{"users":{"@a:x":50.57}}`, true},
		{"power levels float in v6", "6", "m.room.power_levels", `{"users":{"@a:x":50.5}}`, false},
		{"power levels beyond canonical JSON", "10", "m.room.power_levels", `{"ban":9007199254740992}`, false},
		{"power levels users key not a user", "10", "m.room.power_levels", `{"users":{"alice":50}}`, false},
		{"power levels users null", "10", "m.room.power_levels", `{"users":null}`, false},
		{"power levels events an array", "10", "m.room.power_levels", `{"events":[]}`, false},
		{"power levels null level", "5", "m.room.power_levels", `{"kick":null}`, false},
		{"content not an object", "10", "m.room.join_rules", `[]`, false},
		{"unchecked type", "10", "m.room.name", `{"name":5}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(gomatrixserverlib.RoomVersion(tc.version), tc.evType, &empty, []byte(tc.content))
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var merr *matrixerr.Error
			if !errors.As(err, &merr) || merr.Code != "M_BAD_JSON" || merr.Status != 400 {
				t.Fatalf("want 400 M_BAD_JSON, got %v", err)
			}
			if strings.Contains(merr.Message, "Go ") || strings.Contains(merr.Message, "int64") || strings.Contains(merr.Message, "json:") {
				t.Fatalf("message names a Go type: %q", merr.Message)
			}
		})
	}
	if err := Validate("10", "m.room.join_rules", nil, []byte(`{"join_rule":5}`)); err != nil {
		t.Fatalf("a message event was checked as state: %v", err)
	}
}

func TestParsePowerLevels(t *testing.T) {
	p, err := ParsePowerLevels("9", []byte(`{"ban":"  -5 ","users":{"@a:x":"0100"},"events":{"m.room.name":7}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Level("ban") != -5 || p.UserLevel("@a:x") != 100 || p.UserLevel("@b:x") != 0 || p.Level("kick") != 50 {
		t.Fatalf("levels %+v", p)
	}
	if p.EventLevel("m.room.name", true) != 7 || p.EventLevel("m.room.topic", true) != 50 || p.EventLevel("m.room.message", false) != 0 {
		t.Fatalf("event levels %+v", p)
	}
	if _, present := p.Levels["kick"]; present {
		t.Fatal("an absent level is reported present")
	}
	p, err = ParsePowerLevels("3", []byte(`{"users":{"@a:x":5.114698E4}}`))
	if err != nil || p.UserLevel("@a:x") != 51146 {
		t.Fatalf("float level %+v %v", p, err)
	}
}
