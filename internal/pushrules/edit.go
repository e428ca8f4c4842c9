package pushrules

import (
	"encoding/json"
	"regexp"
	"strings"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// maxRulesPerKind bounds a user's own rules of one kind, so that the stored account data
// and the evaluation of every event stay small.
const maxRulesPerKind = 500

// NewRule is the body of PUT /pushrules/global/{kind}/{ruleId}.
type NewRule struct {
	Actions    *[]json.RawMessage `json:"actions"`
	Conditions *[]json.RawMessage `json:"conditions"`
	Pattern    *string            `json:"pattern"`
}

// memberCountRE is the syntax of room_member_count's "is".
var memberCountRE = regexp.MustCompile(`^(==|<|>|<=|>=)?[0-9]+$`)

// retiredActions are the historical actions the spec tells servers to ignore; clients may
// still send them.
var retiredActions = map[string]bool{"dont_notify": true, "coalesce": true}

// ValidateActions checks a list of actions: "notify", a historical action, or a
// set_tweak object.
func ValidateActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s != "notify" && !retiredActions[s] {
				return matrixerr.InvalidParam("unknown action " + s)
			}
			continue
		}
		var tweak struct {
			SetTweak *string `json:"set_tweak"`
		}
		if json.Unmarshal(a, &tweak) != nil || tweak.SetTweak == nil || *tweak.SetTweak == "" {
			return matrixerr.InvalidParam("an action is a string or an object with set_tweak")
		}
	}
	return nil
}

// scalar reports whether raw is a JSON string, boolean, null or an integer in the
// canonical JSON range.
func scalar(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch x := v.(type) {
	case string, bool, nil:
		return true
	case float64:
		return x == float64(int64(x)) && x >= -(1<<53)+1 && x <= (1<<53)-1
	}
	return false
}

// parseCondition decodes and checks one condition. Unknown condition kinds are kept:
// they never match, as the spec says.
func parseCondition(raw json.RawMessage) (Condition, error) {
	var c struct {
		Kind    *string         `json:"kind"`
		Key     *string         `json:"key"`
		Pattern *string         `json:"pattern"`
		Value   json.RawMessage `json:"value"`
		Is      *string         `json:"is"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return Condition{}, matrixerr.BadJSON("a condition is an object with string fields")
	}
	if c.Kind == nil || *c.Kind == "" {
		return Condition{}, matrixerr.MissingParam("a condition needs a kind")
	}
	out := Condition{Kind: *c.Kind, Pattern: c.Pattern, Value: c.Value}
	if c.Key != nil {
		out.Key = *c.Key
	}
	if c.Is != nil {
		out.Is = *c.Is
	}
	switch out.Kind {
	case "event_match":
		if c.Key == nil || c.Pattern == nil {
			return Condition{}, matrixerr.MissingParam("event_match needs key and pattern")
		}
	case "event_property_is", "event_property_contains":
		if c.Key == nil || c.Value == nil || !scalar(c.Value) {
			return Condition{}, matrixerr.InvalidParam(out.Kind + " needs a key and a string, integer, boolean or null value")
		}
	case "room_member_count":
		if !memberCountRE.MatchString(out.Is) {
			return Condition{}, matrixerr.InvalidParam("room_member_count needs is: an integer with an optional ==, <, >, <= or >= prefix")
		}
	case "sender_notification_permission":
		if c.Key == nil || *c.Key == "" {
			return Condition{}, matrixerr.MissingParam("sender_notification_permission needs a key")
		}
	}
	return out, nil
}

// ValidateRuleID checks the ID of a user rule: not empty, not starting with "." (kept for
// server-default rules), no slash or backslash.
func ValidateRuleID(ruleID string) error {
	switch {
	case ruleID == "":
		return matrixerr.MissingParam("the rule ID is empty")
	case strings.HasPrefix(ruleID, "."):
		return matrixerr.InvalidParam("rule IDs starting with . are reserved for server-default rules")
	case strings.ContainsAny(ruleID, `/\`):
		return matrixerr.InvalidParam("rule IDs must not contain slashes or backslashes")
	}
	return nil
}

// BuildRule checks a PUT body for kind k and returns the enabled rule it describes.
func BuildRule(k Kind, ruleID string, body NewRule) (*Rule, error) {
	if err := ValidateRuleID(ruleID); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, matrixerr.MissingParam("a rule needs actions")
	}
	if err := ValidateActions(*body.Actions); err != nil {
		return nil, err
	}
	r := &Rule{RuleID: ruleID, Enabled: true, Actions: *body.Actions}
	switch k {
	case KindOverride, KindUnderride:
		if body.Conditions == nil {
			return nil, matrixerr.MissingParam(string(k) + " rules need conditions")
		}
		r.Conditions = []Condition{}
		for _, raw := range *body.Conditions {
			c, err := parseCondition(raw)
			if err != nil {
				return nil, err
			}
			r.Conditions = append(r.Conditions, c)
		}
	case KindContent:
		if body.Pattern == nil {
			return nil, matrixerr.MissingParam("content rules need a pattern")
		}
		r.Pattern = body.Pattern
	}
	return r, nil
}

// Put adds rule r of kind k, or replaces the user rule with its ID. With before (or
// after) it goes just above (or below) that user rule; a new rule without either goes
// above every user rule, a replaced one keeps its place.
func (rs *Ruleset) Put(k Kind, r *Rule, before, after string) error {
	l := rs.List(k)
	if l == nil {
		return matrixerr.InvalidParam("unknown rule kind")
	}
	old := -1
	for i, x := range *l {
		if x.RuleID == r.RuleID {
			old = i
		}
	}
	anchor := before
	if anchor == "" {
		anchor = after
	}
	if anchor == "" && old >= 0 {
		(*l)[old] = r
		return nil
	}
	rules := make([]*Rule, 0, len(*l)+1)
	for i, x := range *l {
		if i != old {
			rules = append(rules, x)
		}
	}
	if old < 0 && userRules(rules) >= maxRulesPerKind {
		return matrixerr.BadRequest("too many push rules of this kind")
	}
	at := firstUserRule(rules)
	if anchor != "" {
		at = -1
		for i, x := range rules {
			if x.RuleID == anchor && !x.Default {
				at = i
			}
		}
		if at < 0 {
			return matrixerr.BadRequest("before/after rule not found: " + anchor)
		}
		if before == "" {
			at++
		}
	}
	rules = append(rules[:at], append([]*Rule{r}, rules[at:]...)...)
	*l = rules
	return nil
}

// firstUserRule is where a new user rule goes: after .m.rule.master, before every other rule.
func firstUserRule(rules []*Rule) int {
	for i, x := range rules {
		if x.RuleID != masterRuleID {
			return i
		}
	}
	return len(rules)
}

func userRules(rules []*Rule) int {
	n := 0
	for _, x := range rules {
		if !x.Default {
			n++
		}
	}
	return n
}

// Delete removes the user rule of kind k with the ID: M_NOT_FOUND when there is none;
// server-default rules cannot be deleted (disable them instead).
func (rs *Ruleset) Delete(k Kind, ruleID string) error {
	l := rs.List(k)
	if l == nil {
		return matrixerr.InvalidParam("unknown rule kind")
	}
	for i, x := range *l {
		if x.RuleID == ruleID {
			if x.Default {
				return matrixerr.BadRequest("server-default rules cannot be deleted")
			}
			*l = append((*l)[:i], (*l)[i+1:]...)
			return nil
		}
	}
	return matrixerr.NotFound("no push rule with this ID")
}
