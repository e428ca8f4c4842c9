// Package pushrules is the spec's push rules: the ruleset a user keeps in the
// m.push_rules account data, the server-default rules, the edits the /pushrules/
// endpoints make, and the evaluation of a ruleset against an event. clientapi edits
// rulesets with it; the push reader evaluates them.
package pushrules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Kind is a rule kind; Kinds lists them in the order they are checked.
type Kind string

// The rule kinds of the spec.
const (
	KindOverride  Kind = "override"
	KindContent   Kind = "content"
	KindRoom      Kind = "room"
	KindSender    Kind = "sender"
	KindUnderride Kind = "underride"
)

// Kinds are the rule kinds in the order they are checked.
var Kinds = []Kind{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// ValidKind reports whether k is one of the spec's kinds.
func ValidKind(k Kind) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// AccountDataType is the account data type that holds a user's rules, as
// {"global": Ruleset}.
const AccountDataType = "m.push_rules"

// ScopeGlobal is the only scope of push rules.
const ScopeGlobal = "global"

// Condition is one condition of an override or underride rule. Value is raw JSON (a
// scalar) for event_property_is and event_property_contains.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// Rule is one push rule. Actions are kept as the client sent them (historical actions
// included); Evaluate ignores the ones the spec retired.
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions []Condition       `json:"conditions,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// Ruleset is a user's rules of the global scope, each kind in priority order.
type Ruleset struct {
	Override  []*Rule `json:"override"`
	Content   []*Rule `json:"content"`
	Room      []*Rule `json:"room"`
	Sender    []*Rule `json:"sender"`
	Underride []*Rule `json:"underride"`
}

// AccountData is the content of the m.push_rules account data.
type AccountData struct {
	Global *Ruleset `json:"global"`
}

// List returns a pointer to the rules of kind k (nil for an unknown kind).
func (rs *Ruleset) List(k Kind) *[]*Rule {
	switch k {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	case KindUnderride:
		return &rs.Underride
	}
	return nil
}

// Find returns the rule of kind k with the ID, or nil.
func (rs *Ruleset) Find(k Kind, ruleID string) *Rule {
	l := rs.List(k)
	if l == nil {
		return nil
	}
	for _, r := range *l {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// userIDPlaceholder and localpartPlaceholder stand for the JSON strings of the user's ID
// and of its localpart in defaultRules.
const (
	userIDPlaceholder    = `"@USER_ID@"`
	localpartPlaceholder = `"@LOCALPART@"`
)

// The legacy mention rules: they match a display name, a localpart or "@room" in the
// body, and apply only to events whose content has no m.mentions (MSC3952): an event
// that says whom it mentions is judged by .m.rule.is_user_mention and
// .m.rule.is_room_mention alone.
const (
	ruleContainsDisplayName = ".m.rule.contains_display_name"
	ruleContainsUserName    = ".m.rule.contains_user_name"
	ruleRoomNotif           = ".m.rule.roomnotif"
)

// defaultRules is the spec's server-default ruleset ("Predefined Rules", v1.17) plus the
// legacy mention rules (.m.rule.contains_display_name, .m.rule.roomnotif and the content
// rule .m.rule.contains_user_name). NOTSPEC: v1.17 no longer lists the legacy rules
// (https://spec.matrix.org/v1.17/client-server-api/#predefined-rules), but clients that
// send no m.mentions, Synapse and sytest still rely on them; each sits after the
// intentional-mention rule that replaces it, where Synapse has it.
const defaultRules = `{
"override": [
 {"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
 {"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": []},
 {"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"},
   {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
   {"kind": "event_match", "key": "state_key", "pattern": "@USER_ID@"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}], "actions": []},
 {"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "@USER_ID@"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
  "conditions": [{"kind": "contains_display_name"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "@room"},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}], "actions": []},
 {"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": []},
 {"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}], "actions": []}
],
"content": [
 {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true, "pattern": "@LOCALPART@",
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}
],
"room": [],
"sender": [],
"underride": [
 {"rule_id": ".m.rule.call", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.call.invite"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
 {"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.message", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify"]},
 {"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify"]}
]
}`

// masterRuleID is the one server-default rule that outranks the user's override rules.
const masterRuleID = ".m.rule.master"

// Defaults returns a fresh copy of the server-default ruleset for userID.
func Defaults(userID string) (*Ruleset, error) {
	quoted, err := json.Marshal(userID)
	if err != nil {
		return nil, err
	}
	quotedLocal, err := json.Marshal(localpartOf(userID))
	if err != nil {
		return nil, err
	}
	rules := strings.NewReplacer(userIDPlaceholder, string(quoted), localpartPlaceholder, string(quotedLocal)).Replace(defaultRules)
	var rs Ruleset
	if err := json.Unmarshal([]byte(rules), &rs); err != nil {
		return nil, fmt.Errorf("parse default push rules: %w", err)
	}
	return &rs, nil
}

// Load returns the user's effective ruleset from the stored m.push_rules content (nil or
// empty when the user never changed a rule): the user's own rules as stored, and the
// current server-default rules with the user's enabled flag and actions for each. A
// default rule that a newer spec removed disappears; a new one appears. Within a kind,
// user rules come before default rules, except .m.rule.master, which comes first.
func Load(userID string, stored json.RawMessage) (*Ruleset, error) {
	defaults, err := Defaults(userID)
	if err != nil {
		return nil, err
	}
	return merge(defaults, stored, false)
}

// LoadShared returns what Load does, but the default rules that neither name the user nor
// were changed by them are shared with every other ruleset LoadShared returned: the
// caller must not modify the ruleset. It keeps a few hundred bytes per user instead of
// the whole default ruleset (the push reader keeps one per user).
func LoadShared(userID string, stored json.RawMessage) (*Ruleset, error) {
	tmpl, err := sharedDefaults()
	if err != nil {
		return nil, err
	}
	quoted, err := json.Marshal(userID)
	if err != nil {
		return nil, err
	}
	defaults := &Ruleset{}
	for _, k := range Kinds {
		rules := make([]*Rule, len(*tmpl.List(k)))
		for i, r := range *tmpl.List(k) {
			rules[i] = personal(r, userID, localpartOf(userID), quoted)
		}
		*defaults.List(k) = rules
	}
	return merge(defaults, stored, true)
}

// sharedDefaults is defaultRules parsed once, with its placeholders left in.
var sharedDefaults = sync.OnceValues(func() (*Ruleset, error) {
	var rs Ruleset
	if err := json.Unmarshal([]byte(defaultRules), &rs); err != nil {
		return nil, fmt.Errorf("parse default push rules: %w", err)
	}
	return &rs, nil
})

// personal returns the template rule r for the user: r itself when it has no placeholder,
// else a copy with the user's ID and localpart in place of the placeholders, as Defaults
// puts them.
func personal(r *Rule, userID, localpart string, quotedUserID []byte) *Rule {
	sub := func(p *string) *string {
		switch {
		case p == nil:
			return nil
		case `"`+*p+`"` == userIDPlaceholder:
			return &userID
		case `"`+*p+`"` == localpartPlaceholder:
			return &localpart
		}
		return p
	}
	named := sub(r.Pattern) != r.Pattern
	for _, c := range r.Conditions {
		named = named || sub(c.Pattern) != c.Pattern || string(c.Value) == userIDPlaceholder
	}
	if !named {
		return r
	}
	c := *r
	c.Pattern = sub(r.Pattern)
	c.Conditions = slices.Clone(r.Conditions)
	for i := range c.Conditions {
		cond := &c.Conditions[i]
		cond.Pattern = sub(cond.Pattern)
		if string(cond.Value) == userIDPlaceholder {
			cond.Value = quotedUserID
		}
	}
	return &c
}

// OwnBytes estimates the bytes the ruleset keeps in memory apart from what it shares
// with other rulesets (LoadShared): its lists, its own rules, and of its copies of default
// rules, the parts that differ from the shared default.
func (rs *Ruleset) OwnBytes() int {
	tmpl, _ := sharedDefaults()
	n := 5 * 24
	for _, k := range Kinds {
		list := *rs.List(k)
		n += 8 * cap(list)
		for _, r := range list {
			var base *Rule
			if tmpl != nil {
				if slices.Contains(*tmpl.List(k), r) {
					continue
				}
				base = tmpl.Find(k, r.RuleID)
			}
			n += r.bytes(base)
		}
	}
	return n
}

// bytes estimates what a rule keeps: the struct, its strings, conditions and actions (the
// byte slices of raw JSON with their 24-byte headers), less what it shares with base, the
// default it is a copy of (nil for a rule of the user's own).
func (r *Rule) bytes(base *Rule) int {
	n := 80 + 80*cap(r.Conditions)
	if base == nil {
		n += len(r.RuleID)
	}
	if r.Pattern != nil && (base == nil || base.Pattern == nil || *r.Pattern != *base.Pattern) {
		n += 16 + len(*r.Pattern)
	}
	if base == nil || !sameBacking(r.Actions, base.Actions) {
		n += 24 * cap(r.Actions)
		for _, a := range r.Actions {
			n += cap(a)
		}
	}
	for i, c := range r.Conditions {
		if base == nil || i >= len(base.Conditions) {
			n += len(c.Kind) + len(c.Key) + len(c.Is)
		}
		if base == nil || i >= len(base.Conditions) || !sameBacking(c.Value, base.Conditions[i].Value) {
			n += cap(c.Value)
		}
		if c.Pattern != nil && (base == nil || i >= len(base.Conditions) || base.Conditions[i].Pattern == nil || *c.Pattern != *base.Conditions[i].Pattern) {
			n += 16 + len(*c.Pattern)
		}
	}
	return n
}

// sameBacking reports whether two slices share their first element's memory.
func sameBacking[T any](a, b []T) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// localpartOf is the localpart of a user ID (what follows "@", up to ":").
func localpartOf(userID string) string {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	return localpart
}

// merge puts the user's stored rules together with defaults (Load). With shared, the
// default rules belong to other rulesets too and are copied before they are changed.
func merge(defaults *Ruleset, stored json.RawMessage, shared bool) (*Ruleset, error) {
	var ad AccountData
	if len(stored) > 0 {
		if err := json.Unmarshal(stored, &ad); err != nil {
			return nil, fmt.Errorf("parse stored push rules: %w", err)
		}
	}
	if ad.Global == nil {
		ad.Global = &Ruleset{}
	}
	out := &Ruleset{}
	for _, k := range Kinds {
		var user, head, tail []*Rule
		for _, r := range *ad.Global.List(k) {
			if r != nil && !r.Default && !strings.HasPrefix(r.RuleID, ".") {
				user = append(user, r)
			}
		}
		for _, d := range *defaults.List(k) {
			if s := ad.Global.Find(k, d.RuleID); s != nil && s.Default {
				if shared {
					c := *d
					d = &c
				}
				d.Enabled = s.Enabled
				d.Actions = s.Actions
			}
			if d.RuleID == masterRuleID {
				head = append(head, d)
			} else {
				tail = append(tail, d)
			}
		}
		rules := slices.Concat(head, user, tail)
		for _, r := range rules {
			if r.Actions == nil {
				r.Actions = []json.RawMessage{}
			}
		}
		if rules == nil {
			rules = []*Rule{}
		}
		*out.List(k) = rules
	}
	return out, nil
}

// Marshal returns the m.push_rules account data content for rs.
func (rs *Ruleset) Marshal() (json.RawMessage, error) {
	return json.Marshal(AccountData{Global: rs})
}

// MarshalJSON writes conditions whenever the rule has a condition list, even an empty
// one (override and underride rules), and leaves them out otherwise.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	if r.Conditions == nil {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		Conditions []Condition `json:"conditions"`
	}{plain(r), r.Conditions})
}
