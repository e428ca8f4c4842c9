package types

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"testing"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// FuzzParseStreamToken checks that token parsing never panics and that every accepted token
// round-trips through its canonical form.
func FuzzParseStreamToken(f *testing.F) {
	for _, s := range []string{"s0", "s123", "s123_4_5", "", "s", "t1", "s-1", "s--1", "s-", "s99999999999999999999", "s1_"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseStreamToken("since", s)
		if err != nil {
			return
		}
		again, err := ParseStreamToken("since", tok.String())
		if err != nil || again != tok {
			t.Fatalf("%q: %v does not round-trip (%v, %v)", s, tok, again, err)
		}
	})
}

// FuzzParseFilter checks that filter parsing rejects rather than panics, that a refusal is a
// 400 whose message names no Go type, that every limit of an accepted filter is clamped to
// [0, MaxFilterLimit] and every limit read from it to [1, MaxFilterLimit], and that an
// accepted filter can be applied and encoded. The seeds run as a plain test in go test.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{"room":{"timeline":{"limit":5,"types":["m.*"],"not_senders":["@a:b"]},"state":{"lazy_load_members":true}}}`,
		`{"room":{"rooms":["!a:b"],"include_leave":true}}`, `{"room":{"timeline":{"limit":-1}}}`, `[]`, `{"room":{"timeline":{"types":["*a*b*"]}}}`,
		`{"room":{"timeline":{"limit":9223372036854775807}}}`, `{"room":{"timeline":{"limit":9223372036854775808}}}`,
		`{"room":{"timeline":{"limit":-9223372036854775808}}}`, `{"room":{"timeline":{"limit":1e400}}}`, `{"room":{"timeline":{"limit":2.5}}}`,
		`{"room":{"state":{"limit":1001},"ephemeral":{"limit":100000},"account_data":{"limit":1000}}}`,
		`{"presence":{"limit":9223372036854775807},"account_data":{"limit":4294967296}}`, `{"room":{"ephemeral":{"limit":-3}}}`,
		`{"presence":{"limit":-1}}`, `{"limit":9223372036854775807}`, `{"limit":"5"}`, `{"room":{"timeline":{"limit":0}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		filter, err := ParseFilter(b)
		checkRefusal(t, err)
		if rf, rerr := ParseRoomEventFilter(b); rerr == nil {
			checkLimits(t, &rf.EventFilter)
			rf.Allows("x", "y")
		} else {
			checkRefusal(t, rerr)
		}
		if err != nil {
			return
		}
		for _, ef := range filter.eventFilters() {
			checkLimits(t, ef)
		}
		if n := filter.TimelineLimit(); n < 0 || n > MaxFilterLimit {
			t.Fatalf("timeline limit %d out of range", n)
		}
		filter.Room.Timeline.Allows("m.room.message", "@a:b")
		filter.Room.State.Allows("", "")
		filter.Room.AllowsRoom("!a:b")
		if _, err := json.Marshal(filter); err != nil {
			t.Fatalf("accepted filter does not encode: %v", err)
		}
	})
}

// checkLimits fails unless an accepted filter's limit is clamped, as set and as read.
func checkLimits(t *testing.T, ef *EventFilter) {
	t.Helper()
	if ef.Limit < 0 || ef.Limit > MaxFilterLimit {
		t.Fatalf("limit %d not clamped", ef.Limit)
	}
	if n := ef.LimitOr(math.MaxInt); n < 1 || n > math.MaxInt {
		t.Fatalf("limit read as %d", n)
	}
	if n := ef.LimitOr(7); n < 1 || n > MaxFilterLimit {
		t.Fatalf("limit read as %d", n)
	}
}

// checkRefusal fails unless err is nil or a 400 Matrix error with one of the fixed
// messages (json's own name Go types and fields).
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var merr *matrixerr.Error
	if !errors.As(err, &merr) || merr.Status != http.StatusBadRequest {
		t.Fatalf("refusal is not a 400 Matrix error: %v", err)
	}
	if merr.Message != errNotFilter && merr.Message != errWrongType && merr.Message != errNegative {
		t.Fatalf("refusal with an unexpected message, which may name Go internals: %q", merr.Message)
	}
}

// TestLimitOrClamps checks the limit a reader gets from a filter that ParseFilter never saw.
func TestLimitOrClamps(t *testing.T) {
	for _, c := range []struct{ limit, def, want int }{
		{0, 20, 20}, {-5, 20, 20}, {1, 20, 1}, {MaxFilterLimit, 20, MaxFilterLimit}, {MaxFilterLimit + 1, 20, MaxFilterLimit},
		{math.MaxInt, 20, MaxFilterLimit}, {math.MaxInt, math.MaxInt, MaxFilterLimit}, {0, math.MaxInt, math.MaxInt},
	} {
		ef := EventFilter{Limit: c.limit}
		if got := ef.LimitOr(c.def); got != c.want {
			t.Errorf("LimitOr(%d) of limit %d = %d, want %d", c.def, c.limit, got, c.want)
		}
	}
	f := Filter{Room: RoomFilter{Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: math.MaxInt}}}}
	if got := f.TimelineLimit(); got != MaxFilterLimit {
		t.Errorf("timeline limit %d", got)
	}
	if got := (&Filter{}).TimelineLimit(); got != DefaultTimelineLimit {
		t.Errorf("default timeline limit %d", got)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true}, {"m.*", "m.room.name", true}, {"m.*", "n.x", false},
		{"*", "", true}, {"a*a", "a", false}, {"a*b*c", "aXbYc", true}, {"a*b*c", "acb", false}, {"*.name", "m.room.name", true},
	} {
		if got := globMatch(c.pattern, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}

func TestParseFilterLimits(t *testing.T) {
	for _, c := range []struct {
		name, filter string
		timeline     int // TimelineLimit of the parsed filter; 0 when it must be refused
	}{
		{"none", `{}`, DefaultTimelineLimit},
		{"no limit", `{"room":{"timeline":{"types":["m.room.message"]}}}`, DefaultTimelineLimit},
		{"small", `{"room":{"timeline":{"limit":3}}}`, 3},
		{"max", `{"room":{"timeline":{"limit":1000}}}`, MaxFilterLimit},
		{"over max", `{"room":{"timeline":{"limit":1001}}}`, MaxFilterLimit},
		{"max int64", `{"room":{"timeline":{"limit":9223372036854775807}}}`, MaxFilterLimit},
		{"past int64", `{"room":{"timeline":{"limit":9223372036854775808}}}`, 0},
		{"fraction", `{"room":{"timeline":{"limit":2.5}}}`, 0},
		{"negative timeline", `{"room":{"timeline":{"limit":-1}}}`, 0},
		{"negative ephemeral", `{"room":{"ephemeral":{"limit":-1}}}`, 0},
		{"negative room account data", `{"room":{"account_data":{"limit":-1}}}`, 0},
		{"negative presence", `{"presence":{"limit":-1}}`, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := ParseFilter([]byte(c.filter))
			if c.timeline == 0 {
				var merr *matrixerr.Error
				if !errors.As(err, &merr) || merr.Code != "M_INVALID_PARAM" {
					t.Fatalf("want M_INVALID_PARAM, got %v", err)
				}
				checkRefusal(t, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.TimelineLimit(); got != c.timeline {
				t.Fatalf("timeline limit %d, want %d", got, c.timeline)
			}
		})
	}
	// An explicit timeline limit of 0 asks for no timeline events, as Synapse reads it.
	if f, err := ParseFilter([]byte(`{"room":{"timeline":{"limit":0}}}`)); err != nil || f.TimelineLimit() != 0 {
		t.Fatalf("timeline limit 0: %v", err)
	}
	f, err := ParseFilter([]byte(`{"presence":{"limit":9223372036854775807},"room":{"ephemeral":{"limit":5000},"state":{"limit":1001}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Presence.Limit != MaxFilterLimit || f.Room.Ephemeral.Limit != MaxFilterLimit || f.Room.State.Limit != MaxFilterLimit {
		t.Fatalf("limits not clamped: %+v", f)
	}
}
