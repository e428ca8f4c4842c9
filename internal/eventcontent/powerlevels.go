package eventcontent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// The top-level levels of m.room.power_levels, with the spec's defaults for a power levels
// event that leaves them out.
var levelDefaults = map[string]int64{
	"ban": 50, "kick": 50, "redact": 50, "invite": 0,
	"state_default": 50, "events_default": 0, "users_default": 0,
}

// LevelKeys are the top-level levels of m.room.power_levels, in the order the spec's auth
// rule for power levels lists them.
var LevelKeys = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// PowerLevels is m.room.power_levels content as the auth rules read it: each level that is
// present in the content, so that additions and removals can be told from changes.
type PowerLevels struct {
	// Levels are the top-level levels present (LevelKeys).
	Levels        map[string]int64
	Events        map[string]int64
	Notifications map[string]int64
	Users         map[string]int64
}

// Level is a top-level level, or the spec's default when the content leaves it out.
func (p *PowerLevels) Level(key string) int64 {
	if v, ok := p.Levels[key]; ok {
		return v
	}
	return levelDefaults[key]
}

// UserLevel is the user's level: their entry in users, else users_default.
func (p *PowerLevels) UserLevel(userID string) int64 {
	if v, ok := p.Users[userID]; ok {
		return v
	}
	return p.Level("users_default")
}

// EventLevel is the level needed to send an event of the type: its entry in events, else
// state_default for state events and events_default for the others.
func (p *PowerLevels) EventLevel(eventType string, state bool) int64 {
	if v, ok := p.Events[eventType]; ok {
		return v
	}
	if state {
		return p.Level("state_default")
	}
	return p.Level("events_default")
}

// stringyLevels reports whether the room version accepts levels encoded as strings
// (rooms v1-9, "m.room.power_levels events accept values as strings"); floatyLevels
// whether it accepts floats, truncated (v1-5, which predate canonical JSON).
func stringyLevels(v gomatrixserverlib.RoomVersion) bool {
	switch v {
	case gomatrixserverlib.RoomVersionV6, gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8,
		gomatrixserverlib.RoomVersionV9:
		return true
	}
	return floatyLevels(v)
}

func floatyLevels(v gomatrixserverlib.RoomVersion) bool {
	switch v {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5:
		return true
	}
	return false
}

// The spec's form of an integer in a string: optional whitespace around an optional sign
// and base 10 digits, leading zeroes allowed.
var stringyInteger = regexp.MustCompile(`^[+-]?[0-9]+$`)

// jsonInteger is a JSON number without fraction or exponent.
var jsonInteger = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// maxCanonical is the largest integer canonical JSON allows (2^53 - 1).
const maxCanonical = 1<<53 - 1

// parseLevel reads one level as the room version allows it.
func parseLevel(v gomatrixserverlib.RoomVersion, raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return 0, false
	}
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if !stringyLevels(v) || json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		s = strings.TrimSpace(s)
		if !stringyInteger.MatchString(s) {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if jsonInteger.Match(raw) {
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err == nil && (floatyLevels(v) || (n <= maxCanonical && n >= -maxCanonical)) {
			return n, true
		}
	}
	if !floatyLevels(v) {
		return 0, false
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	f = math.Trunc(f)
	if f >= math.MaxInt64 || f < math.MinInt64 {
		return 0, false
	}
	return int64(f), true
}

// ParsePowerLevels reads m.room.power_levels content under the rules of the room version:
// every level an integer (in rooms v1-9 also a string holding one, in v1-5 also a float,
// truncated), events, notifications and users objects of levels, users keyed by user IDs.
// The error is a 400 M_BAD_JSON whose message names the offending key.
func ParsePowerLevels(v gomatrixserverlib.RoomVersion, content []byte) (*PowerLevels, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil || c == nil {
		return nil, matrixerr.BadJSON("power levels content must be a JSON object")
	}
	want := "an integer"
	if stringyLevels(v) {
		want = "an integer or a string holding one"
	}
	p := &PowerLevels{Levels: map[string]int64{}}
	for _, k := range LevelKeys {
		raw, ok := c[k]
		if !ok {
			continue
		}
		n, ok := parseLevel(v, raw)
		if !ok {
			return nil, matrixerr.BadJSON(fmt.Sprintf("power level %q must be %s", k, want))
		}
		p.Levels[k] = n
	}
	var err error
	if p.Events, err = levelMap(v, c, "events", want); err != nil {
		return nil, err
	}
	if p.Notifications, err = levelMap(v, c, "notifications", want); err != nil {
		return nil, err
	}
	if p.Users, err = levelMap(v, c, "users", want); err != nil {
		return nil, err
	}
	for u := range p.Users {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, matrixerr.BadJSON(fmt.Sprintf("power levels users key %q is not a user ID", u))
		}
	}
	return p, nil
}

// levelMap reads one of the objects of levels. In rooms v1-9 a null events or
// notifications counts as absent (only users is checked by their auth rules).
func levelMap(v gomatrixserverlib.RoomVersion, c map[string]json.RawMessage, key, want string) (map[string]int64, error) {
	raw, ok := c[key]
	if !ok {
		return map[string]int64{}, nil
	}
	if key != "users" && stringyLevels(v) && string(bytes.TrimSpace(raw)) == "null" {
		return map[string]int64{}, nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return nil, matrixerr.BadJSON(fmt.Sprintf("power levels %q must be an object", key))
	}
	out := make(map[string]int64, len(m))
	for k, r := range m {
		n, ok := parseLevel(v, r)
		if !ok {
			return nil, matrixerr.BadJSON(fmt.Sprintf("power level %s[%q] must be %s", key, k, want))
		}
		out[k] = n
	}
	return out, nil
}
