package pushrules

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
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

// Evaluator evaluates rulesets. Patterns without wildcards (the user's ID and localpart,
// display names, event types) are matched as text, with no compiled form to keep; it
// keeps the compiled glob patterns with wildcards and the split property paths, so one
// Evaluator serves every evaluation of a process (the push reader evaluates a message for
// each of a room's members, with the same rules' patterns and paths), in caches bounded
// in bytes. It is safe for concurrent use.
type Evaluator struct {
	globs *caching.Cache[globKey, *regexp.Regexp]
	paths *caching.Cache[string, []string]
}

// globKey names a compiled glob pattern.
type globKey struct {
	pattern string
	words   bool
}

// NewEvaluator returns an Evaluator with empty caches that hold at most maxBytes in all;
// reg, when not nil, gets their metrics (caches pushrules_globs and pushrules_paths).
func NewEvaluator(maxBytes int64, reg prometheus.Registerer) *Evaluator {
	return &Evaluator{
		globs: caching.New("pushrules_globs", maxBytes*3/4, func(k globKey, _ *regexp.Regexp) int { return regexpBytes(len(k.pattern), k.words) }, reg),
		paths: caching.New("pushrules_paths", maxBytes/4, func(path string, parts []string) int { return len(path) + 40*len(parts) }, reg),
	}
}

// regexpBytes estimates what a compiled glob of n bytes keeps: 600 bytes of program and
// tables, 60 per character, and 1,300 more for the word boundaries of a words glob
// (measured on typical patterns; see TestRegexpBytesEstimate).
func regexpBytes(n int, words bool) int {
	if words {
		return 1900 + 60*n
	}
	return 600 + 60*n
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
		return ok && r.Pattern != nil && e.globMatches(*r.Pattern, true, body)
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
		return ok && c.Pattern != nil && e.globMatches(*c.Pattern, c.Key == "content.body", s)
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
		return ok && ctx.DisplayName != "" && literalMatches(ctx.DisplayName, true, body)
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

// split is splitPath(path), from the cache (its result is shared: never modified).
func (e *Evaluator) split(path string) []string {
	if parts, ok := e.paths.Get(path); ok {
		return parts
	}
	parts := splitPath(path)
	e.paths.Put(path, parts)
	return parts
}

// globMatches reports whether s matches the glob pattern (* any run, ? one character),
// case-insensitively, as a whole, or with words, in any run of it that starts and ends at
// a word boundary (content.body's special case). A pattern without wildcards is compared
// as text; one with wildcards is compiled to a regexp, kept in the cache.
func (e *Evaluator) globMatches(pattern string, words bool, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return literalMatches(pattern, words, s)
	}
	k := globKey{pattern: pattern, words: words}
	re, ok := e.globs.Get(k)
	if !ok {
		re = compileGlob(pattern, words)
		e.globs.Put(k, re)
	}
	return re.MatchString(s)
}

// compileGlob compiles a glob pattern to a case-insensitive regexp (see globMatches).
func compileGlob(pattern string, words bool) *regexp.Regexp {
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
	if words {
		return regexp.MustCompile(wordExpr(b.String()))
	}
	return regexp.MustCompile(`(?is)^` + b.String() + `$`)
}

// literalMatches is globMatches for a pattern without wildcards: s equals it, or with
// words, holds it between word boundaries, under simple Unicode case folding (what a
// regexp's (?i) does).
func literalMatches(lit string, words bool, s string) bool {
	if !words {
		return strings.EqualFold(lit, s)
	}
	for i := 0; i <= len(s); {
		if before, _ := utf8.DecodeLastRuneInString(s[:i]); i == 0 || !isWordRune(before) {
			if n, ok := foldPrefix(s[i:], lit); ok {
				if after, _ := utf8.DecodeRuneInString(s[i+n:]); i+n == len(s) || !isWordRune(after) {
					return true
				}
			}
		}
		if i == len(s) {
			break
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return false
}

// foldPrefix reports whether s starts with a case-folded form of prefix, and the bytes of
// s that form takes (case folding may change a character's length in UTF-8).
func foldPrefix(s, prefix string) (int, bool) {
	n := 0
	for _, p := range prefix {
		if n == len(s) {
			return 0, false
		}
		r, size := utf8.DecodeRuneInString(s[n:])
		if !sameFold(r, p) {
			return 0, false
		}
		n += size
	}
	return n, true
}

// sameFold reports whether two runes are equal under simple Unicode case folding.
func sameFold(a, b rune) bool {
	if a == b {
		return true
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}

// isWordRune reports whether r is in [A-Za-z0-9_] under case folding, as wordExpr's
// case-insensitive classes see it: the Kelvin sign folds to k and the long s to s.
func isWordRune(r rune) bool {
	return r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r == '\u212a' || r == '\u017f'
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
