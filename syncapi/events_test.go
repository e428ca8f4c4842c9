package syncapi_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// eventsChunk is an event of GET /events as the test reads it.
type eventsChunk struct {
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	RoomID   string `json:"room_id"`
	StateKey string `json:"state_key"`
}

type eventsBody struct {
	Start string        `json:"start"`
	End   string        `json:"end"`
	Chunk []eventsChunk `json:"chunk"`
}

// eventsUntil long-polls GET /events from `from` until cond holds for a chunk's event, with
// a deadline, and returns that event and the end token.
func (h *harness) eventsUntil(token, from string, cond func(eventsChunk) bool) (eventsChunk, string) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var res eventsBody
		if code := h.get(token, "/_matrix/client/r0/events", url.Values{"from": {from}, "timeout": {"2000"}}, &res); code != http.StatusOK {
			h.t.Fatalf("events: status %d", code)
		}
		for _, ev := range res.Chunk {
			if cond(ev) {
				return ev, res.End
			}
		}
		from = res.End
	}
	h.t.Fatal("no such event in /events in time")
	return eventsChunk{}, ""
}

// TestEvents: the deprecated GET /events starts at the current position without a from
// token and streams the user's room events, with their room_id, and invites.
func TestEvents(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice)
		earlier := h.send(roomID, alice, "before")
		h.waitConsumed()

		var now eventsBody
		if code := h.get(bob, "/_matrix/client/v3/events", url.Values{"timeout": {"0"}}, &now); code != http.StatusOK {
			t.Fatalf("events: status %d", code)
		}
		if now.End == "" || now.Start == "" || len(now.Chunk) != 0 {
			t.Fatalf("events without from: %+v", now)
		}
		if _, err := types.ParseStreamToken("end", now.End); err != nil {
			t.Fatalf("end token %q: %v", now.End, err)
		}

		invite := h.member(roomID, alice, bob, spec.Invite)
		ev, end := h.eventsUntil(bob, now.End, func(e eventsChunk) bool { return e.Type == spec.MRoomMember })
		if ev.RoomID != roomID || ev.StateKey != bob {
			t.Fatalf("invite in /events: %+v (invite %s)", ev, invite)
		}
		h.member(roomID, bob, bob, spec.Join)
		sent := h.send(roomID, alice, "hello")
		ev, _ = h.eventsUntil(bob, end, func(e eventsChunk) bool { return e.EventID == sent || e.EventID == earlier })
		if ev.EventID != sent || ev.RoomID != roomID || ev.Type != "m.room.message" {
			t.Fatalf("message in /events: %+v, want %s in %s", ev, sent, roomID)
		}

		var bad map[string]any
		if code := h.get(bob, "/_matrix/client/v3/events", url.Values{"from": {"nonsense"}}, &bad); code != http.StatusBadRequest {
			t.Fatalf("events from=nonsense: status %d", code)
		}
	})
}
