package types

import (
	"encoding/json"
	"testing"
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

// FuzzParseFilter checks that filter parsing rejects rather than panics, and that an accepted
// filter can be applied and encoded.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{"room":{"timeline":{"limit":5,"types":["m.*"],"not_senders":["@a:b"]},"state":{"lazy_load_members":true}}}`,
		`{"room":{"rooms":["!a:b"],"include_leave":true}}`, `{"room":{"timeline":{"limit":-1}}}`, `[]`, `{"room":{"timeline":{"types":["*a*b*"]}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		filter, err := ParseFilter(b)
		if err != nil {
			return
		}
		filter.Room.Timeline.Allows("m.room.message", "@a:b")
		filter.Room.State.Allows("", "")
		filter.Room.AllowsRoom("!a:b")
		if _, err := json.Marshal(filter); err != nil {
			t.Fatalf("accepted filter does not encode: %v", err)
		}
		if rf, err := ParseRoomEventFilter(b); err == nil {
			rf.Allows("x", "y")
		}
	})
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
