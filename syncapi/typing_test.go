package syncapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// typing produces the room's typing set the way the eduserver does.
func (h *harness) typing(roomID string, users ...string) {
	h.t.Helper()
	out := eduapi.OutputTypingEvent{RoomID: roomID, Users: []eduapi.TypingUser{}}
	for _, u := range users {
		out.Users = append(out.Users, eduapi.TypingUser{UserID: u, ExpiresTS: time.Now().Add(time.Minute).UnixMilli()})
	}
	b, _ := json.Marshal(out) // plain data always encodes
	if _, err := h.log.Produce(context.Background(), typingTopic, eventlog.Message{Key: []byte(roomID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
}

// typingUsers is the user_ids of the room's m.typing event, and whether there is one.
func typingUsers(t *testing.T, res *types.SyncResponse, roomID string) ([]string, bool) {
	t.Helper()
	jr := res.Rooms.Join[roomID]
	if jr == nil {
		return nil, false
	}
	for _, raw := range jr.Ephemeral.Events {
		var ev struct {
			Type    string `json:"type"`
			Content struct {
				UserIDs []string `json:"user_ids"`
			} `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == "m.typing" {
			return ev.Content.UserIDs, true
		}
	}
	return nil, false
}

// TestTypingStopInInitialSync: a client that saw a user typing and then syncs from scratch
// (sytest "Typing can be explicitly stopped" does) must learn of the stop from that initial
// sync, since no later change reports it; an incremental sync reports the stop too.
func TestTypingStopInInitialSync(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.typing(roomID, alice)
		h.waitConsumed()
		if users, ok := typingUsers(t, h.sync(bob), roomID); !ok || !slices.Equal(users, []string{alice}) {
			t.Fatalf("initial sync while alice types: %v %v", users, ok)
		}
		since := h.sync(bob).NextBatch

		h.typing(roomID)
		h.waitConsumed()
		if users, ok := typingUsers(t, h.sync(bob), roomID); !ok || len(users) != 0 {
			t.Fatalf("initial sync after the stop: %v %v", users, ok)
		}
		if users, ok := typingUsers(t, h.sync(bob, "since", since), roomID); !ok || len(users) != 0 {
			t.Fatalf("incremental sync after the stop: %v %v", users, ok)
		}
		other := h.newRoom(alice)
		h.member(other, bob, bob, spec.Join)
		h.waitConsumed()
		if _, ok := typingUsers(t, h.sync(bob), other); ok {
			t.Fatal("a room where nobody ever typed has a typing event")
		}
	})
}
