package pushrules

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Context is what the evaluation of one event for one user needs besides the event: the
// user, their display name in the room and the room's joined member count as of the
// event, the sender's power level and the levels the room requires per notification key
// (the power levels' "notifications" object; "room" defaults to 50).
type Context struct {
	UserID                  string
	DisplayName             string
	MemberCount             int
	SenderPowerLevel        int64
	NotificationPowerLevels map[string]int64
}

// Evaluator evaluates rulesets; it keeps the compiled glob patterns and the split
// property paths, so one Evaluator serves every evaluation of a process (the push reader
// evaluates a message for each of a room's members, with the same rules' patterns and
// paths). It is safe for concurrent use.
type Evaluator struct {
	mu    sync.Mutex
	exprs map[string]*regexp.Regexp
	globs map[globKey]*regexp.Regexp
	names map[string]*regexp.Regexp
	paths map[string][]string
}

// globKey names a compiled glob pattern.
type globKey struct {
	pattern string
	words   bool
}

// NewEvaluator returns an Evaluator with empty caches.
func NewEvaluator() *Evaluator {
	return &Evaluator{exprs: map[string]*regexp.Regexp{}, globs: map[globKey]*regexp.Regexp{},
		names: map[string]*regexp.Regexp{}, paths: map[string][]string{}}
}

// Match returns the first enabled rule of rs that matches the event (client format JSON
// object), or nil when none does.
// The legacy mention rules never match an event whose content has m.mentions.
func (e *Evaluator) Match(rs *Ruleset, event map[string]any, ctx *Context) *Rule {
	_, mentions := e.lookupFound(event, `content.m\.mentions`)
	for _, k := range Kinds {
		for _, r := range *rs.List(k) {
			if mentions && isLegacyMention(r.RuleID) {
				continue
			}
			if r.Enabled && e.ruleMatches(k, r, event, ctx) {
				return r
			}
		}
	}
	return nil
}

func isLegacyMention(ruleID string) bool {
	return ruleID == ruleContainsDisplayName || ruleID == ruleContainsUserName || ruleID == ruleRoomNotif
}

func (e *Evaluator) ruleMatches(k Kind, r *Rule, event map[string]any, ctx *Context) bool {
	switch k {
	case KindContent:
		body, ok := e.lookup(event, "content.body").(string)
		return ok && r.Pattern != nil && e.glob(*r.Pattern, true).MatchString(body)
	case KindRoom:
		roomID, _ := event["room_id"].(string)
		return roomID == r.RuleID
	case KindSender:
		sender, _ := event["sender"].(string)
		return sender == r.RuleID
	}
	for i := range r.Conditions {
		if !e.conditionMatches(&r.Conditions[i], event, ctx) {
			return false
		}
	}
	return true
}

func (e *Evaluator) conditionMatches(c *Condition, event map[string]any, ctx *Context) bool {
	switch c.Kind {
	case "event_match":
		s, ok := e.lookup(event, c.Key).(string)
		return ok && c.Pattern != nil && e.glob(*c.Pattern, c.Key == "content.body").MatchString(s)
	case "event_property_is":
		v, found := e.lookupFound(event, c.Key)
		return found && isScalar(v) && scalarEqual(v, c.Value)
	case "event_property_contains":
		arr, ok := e.lookup(event, c.Key).([]any)
		if !ok {
			return false
		}
		for _, v := range arr {
			if isScalar(v) && scalarEqual(v, c.Value) {
				return true
			}
		}
		return false
	case "contains_display_name":
		body, ok := e.lookup(event, "content.body").(string)
		return ok && ctx.DisplayName != "" && e.displayName(ctx.DisplayName).MatchString(body)
	case "room_member_count":
		return memberCountMatches(c.Is, ctx.MemberCount)
	case "sender_notification_permission":
		need, ok := ctx.NotificationPowerLevels[c.Key]
		if !ok {
			need = 50
		}
		return ctx.SenderPowerLevel >= need
	}
	return false
}

func memberCountMatches(is string, n int) bool {
	m := memberCountRE.FindStringSubmatch(is)
	if m == nil {
		return false
	}
	want, err := strconv.Atoi(strings.TrimPrefix(is, m[1]))
	if err != nil {
		return false
	}
	switch m[1] {
	case "<":
		return n < want
	case ">":
		return n > want
	case "<=":
		return n <= want
	case ">=":
		return n >= want
	}
	return n == want
}

func isScalar(v any) bool {
	switch x := v.(type) {
	case string, bool, nil:
		return true
	case float64:
		return x == float64(int64(x))
	}
	return false
}

func scalarEqual(v any, want json.RawMessage) bool {
	var w any
	if json.Unmarshal(want, &w) != nil {
		return false
	}
	return v == w
}

// splitPath splits a dot-separated property path; "\." is a literal dot and "\\" a
// literal backslash.
func splitPath(path string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(path); i++ {
		switch {
		case path[i] == '\\' && i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\'):
			cur.WriteByte(path[i+1])
			i++
		case path[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(path[i])
		}
	}
	return append(parts, cur.String())
}

func (e *Evaluator) lookup(event map[string]any, path string) any {
	v, _ := e.lookupFound(event, path)
	return v
}

func (e *Evaluator) lookupFound(event map[string]any, path string) (any, bool) {
	var cur any = event
	for _, p := range e.split(path) {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// globCacheMax bounds each of the Evaluator's caches; one is emptied when full.
const globCacheMax = 4096

// split is splitPath(path), from the cache (its result is shared: never modified).
func (e *Evaluator) split(path string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if parts, ok := e.paths[path]; ok {
		return parts
	}
	parts := splitPath(path)
	if len(e.paths) >= globCacheMax {
		e.paths = map[string][]string{}
	}
	e.paths[path] = parts
	return parts
}

// glob compiles a glob pattern (* any run, ? one character) to a case-insensitive
// regexp matching the whole value, or with words, any run of it that starts and ends
// at a word boundary (content.body's special case).
func (e *Evaluator) glob(pattern string, words bool) *regexp.Regexp {
	k := globKey{pattern: pattern, words: words}
	e.mu.Lock()
	re, ok := e.globs[k]
	e.mu.Unlock()
	if ok {
		return re
	}
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	expr := `(?is)^` + b.String() + `$`
	if words {
		expr = wordExpr(b.String())
	}
	re = e.compile(expr)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.globs) >= globCacheMax {
		e.globs = map[globKey]*regexp.Regexp{}
	}
	e.globs[k] = re
	return re
}

// displayName matches a display name as a word (contains_display_name), from the cache.
func (e *Evaluator) displayName(name string) *regexp.Regexp {
	e.mu.Lock()
	re, ok := e.names[name]
	e.mu.Unlock()
	if ok {
		return re
	}
	re = e.compile(wordExpr(regexp.QuoteMeta(name)))
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.names) >= globCacheMax {
		e.names = map[string]*regexp.Regexp{}
	}
	e.names[name] = re
	return re
}

// compile returns the compiled expr from the cache, compiling it on a miss.
func (e *Evaluator) compile(expr string) *regexp.Regexp {
	e.mu.Lock()
	defer e.mu.Unlock()
	if re, ok := e.exprs[expr]; ok {
		return re
	}
	re := regexp.MustCompile(expr)
	if len(e.exprs) >= globCacheMax {
		e.exprs = map[string]*regexp.Regexp{}
	}
	e.exprs[expr] = re
	return re
}

// wordExpr matches expr case-insensitively where it starts and ends at word boundaries
// (a boundary is the start or end of the value or a character outside [A-Za-z0-9_]).
func wordExpr(expr string) string {
	return `(?is)(?:^|[^A-Za-z0-9_])` + expr + `(?:[^A-Za-z0-9_]|$)`
}

// Outcome is what a matched rule's actions ask for.
type Outcome struct {
	Notify    bool
	Highlight bool
	// Tweaks are the set_tweak actions by name (highlight included), with their values.
	Tweaks map[string]json.RawMessage
}

// Actions interprets a rule's actions, ignoring historical ones. A highlight tweak
// without a value means true.
func Actions(actions []json.RawMessage) Outcome {
	out := Outcome{Tweaks: map[string]json.RawMessage{}}
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			out.Notify = out.Notify || s == "notify"
			continue
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			continue
		}
		if t.SetTweak == "highlight" {
			out.Highlight = t.Value == nil || string(t.Value) == "true"
			if t.Value == nil {
				t.Value = json.RawMessage("true")
			}
		}
		out.Tweaks[t.SetTweak] = t.Value
	}
	return out
}
