package internal

import (
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// TestCanSee applies the client-server spec's "Room History Visibility" (Server behaviour)
// to one event at position 10, judged by the state at the event: the visibility in force
// before it and the reader's membership then, their membership history after it and now.
func TestCanSee(t *testing.T) {
	const user = "@u:x"
	hist := func(changes ...any) memberHistory {
		var h memberHistory
		for i := 0; i < len(changes); i += 2 {
			h = append(h, storage.MemberChange{RoomID: "!r:x", UserID: user, Membership: changes[i+1].(string), Position: int64(changes[i].(int))})
		}
		return h
	}
	message := func(visibility string) *storage.Event {
		return &storage.Event{Position: 10, Type: "m.room.message", Sender: "@o:x", HistoryVisibility: visibility, JSON: []byte(`{"content":{"body":"x"}}`)}
	}
	stateEv := func(evType, stateKey, visibility string, content map[string]string) *storage.Event {
		c, _ := json.Marshal(map[string]any{"type": evType, "state_key": stateKey, "content": content})
		return &storage.Event{Position: 10, Type: evType, StateKey: &stateKey, Sender: "@o:x", HistoryVisibility: visibility, JSON: c}
	}
	hvChange := func(from, to string) *storage.Event {
		return stateEv(spec.MRoomHistoryVisibility, "", from, map[string]string{"history_visibility": to})
	}
	cases := []struct {
		name string
		ev   *storage.Event
		h    memberHistory
		want bool
	}{
		// 1. "If the history_visibility was set to world_readable, allow."
		{"world_readable, never a member", message("world_readable"), nil, true},
		// 2. "If the user's membership was join, allow."
		{"joined, member at the event", message("joined"), hist(5, "join"), true},
		{"joined, member at the event who left since", message("joined"), hist(5, "join", 15, "leave"), true},
		{"joined, joined after the event", message("joined"), hist(15, "join"), false},
		{"joined, left before the event", message("joined"), hist(5, "join", 8, "leave"), false},
		{"joined, invited at the event", message("joined"), hist(5, "invite"), false},
		// 3. "If history_visibility was set to shared, and the user joined the room at any
		// point after the event was sent, allow."
		{"shared, member at the event", message("shared"), hist(5, "join"), true},
		{"shared, joined after the event", message("shared"), hist(15, "join"), true},
		{"shared, joined after the event and left", message("shared"), hist(15, "join", 20, "leave"), true},
		{"shared, left before the event", message("shared"), hist(5, "join", 8, "leave"), false},
		{"shared, invited after the event, never joined", message("shared"), hist(15, "invite"), false},
		{"shared, never a member", message("shared"), nil, false},
		// "By default if no history_visibility is set, or if the value is not understood,
		// the visibility is assumed to be shared."
		{"unset is shared, joined after", message(""), hist(15, "join"), true},
		{"unset is shared, never a member", message(""), nil, false},
		{"unknown value is shared, joined after", message("sometimes"), hist(15, "join"), true},
		// 4. "If the user's membership was invite, and the history_visibility was set to
		// invited, allow."
		{"invited, invited at the event", message("invited"), hist(5, "invite"), true},
		{"invited, joined at the event", message("invited"), hist(5, "join"), true},
		{"invited, invited after the event", message("invited"), hist(15, "invite"), false},
		{"invited, knocked at the event", message("invited"), hist(5, "knock"), false},
		{"joined visibility, banned at the event", message("joined"), hist(5, "join", 8, "ban"), false},
		// "For m.room.history_visibility events themselves, the user should be allowed to see
		// the event if the history_visibility before or after the event would allow them."
		{"visibility change joined to world_readable, never a member", hvChange("joined", "world_readable"), nil, true},
		{"visibility change world_readable to joined, never a member", hvChange("world_readable", "joined"), nil, true},
		{"visibility change joined to invited, invited at it", hvChange("joined", "invited"), hist(5, "invite"), true},
		{"visibility change joined to shared, never a member", hvChange("joined", "shared"), nil, false},
		// "For the user's own m.room.member events ... a user can always see m.room.member
		// events which set their membership to join, or which change their membership from
		// join to any other value, even if history_visibility is joined."
		{"own join under joined", stateEv(spec.MRoomMember, user, "joined", map[string]string{"membership": "join"}), hist(10, "join"), true},
		{"own leave under joined", stateEv(spec.MRoomMember, user, "joined", map[string]string{"membership": "leave"}), hist(5, "join", 10, "leave"), true},
		{"another's join under joined, not a member", stateEv(spec.MRoomMember, "@o:x", "joined", map[string]string{"membership": "join"}), nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := canSee(tc.ev, user, tc.h, tc.h.latest().Membership); got != tc.want {
				t.Fatalf("canSee = %v, want %v", got, tc.want)
			}
		})
	}
}
