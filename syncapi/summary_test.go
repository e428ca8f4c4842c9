package syncapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// TestSyncRoomDetails: a joined room carries a summary (member counts, and heroes while it
// has no name); timeline.limit 0 gives no timeline events; a filtered timeline whose older
// events are all filtered out is not limited, one with more matching events is; the
// federation event_format gives events as federation sends them.
func TestSyncRoomDetails(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol, dave := h.user("alice"), h.user("bob"), h.user("carol"), h.user("dave")
		roomID := h.newRoom(alice)
		h.member(roomID, carol, carol, spec.Join)
		h.member(roomID, bob, bob, spec.Join)
		h.member(roomID, alice, dave, spec.Invite)
		mine := h.send(roomID, alice, "mine")
		for range 5 {
			h.submit(roomID, roomtest.Proto(alice, "a.made.up.filler.type", nil, map[string]string{}))
		}
		h.waitConsumed()

		jr := h.sync(alice).Rooms.Join[roomID]
		if jr == nil || jr.Summary == nil {
			t.Fatalf("no summary: %+v", jr)
		}
		if s := jr.Summary; s.JoinedMemberCount != 3 || s.InvitedMemberCount != 1 || !slices.Equal(s.Heroes, []string{bob, carol, dave}) {
			t.Fatalf("summary %+v", s)
		}
		h.submit(roomID, roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "Named"}))
		h.waitConsumed()
		if s := h.sync(alice).Rooms.Join[roomID].Summary; s == nil || s.Heroes != nil || s.JoinedMemberCount != 3 {
			t.Fatalf("summary of a named room %+v", s)
		}

		if tl := h.sync(alice, "filter", `{"room":{"timeline":{"limit":0}}}`).Rooms.Join[roomID].Timeline; len(tl.Events) != 0 || !tl.Limited {
			t.Fatalf("timeline with limit 0: %d events, limited %v", len(tl.Events), tl.Limited)
		}
		tl := h.sync(alice, "filter", `{"room":{"timeline":{"limit":1,"types":["m.room.message"]}}}`).Rooms.Join[roomID].Timeline
		if len(tl.Events) != 1 || tl.Events[0].EventID != mine || tl.Limited {
			t.Fatalf("filtered timeline reaching its limit: %v, limited %v", eventIDs(tl.Events), tl.Limited)
		}
		var raw struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []map[string]any `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		q := url.Values{"filter": {`{"event_format":"federation","room":{"timeline":{"limit":1,"types":["m.room.message"]}}}`}}
		if code := h.get(alice, "/_matrix/client/v3/sync", q, &raw); code != http.StatusOK {
			t.Fatalf("federation format sync: %d", code)
		}
		evs := raw.Rooms.Join[roomID].Timeline.Events
		if len(evs) != 1 || evs[0]["event_id"] != mine {
			t.Fatalf("federation format timeline %v", evs)
		}
		for _, key := range []string{"prev_events", "auth_events", "depth", "hashes", "signatures", "content", "room_id", "unsigned"} {
			if _, ok := evs[0][key]; !ok {
				t.Fatalf("federation format event lacks %s: %v", key, evs[0])
			}
		}

		h.send(roomID, alice, "later")
		h.waitConsumed()
		tl = h.sync(alice, "filter", `{"room":{"timeline":{"limit":1,"types":["m.room.message"]}}}`).Rooms.Join[roomID].Timeline
		if len(tl.Events) != 1 || !tl.Limited {
			t.Fatalf("filtered timeline with an older match: %v, limited %v", eventIDs(tl.Events), tl.Limited)
		}
	})
}

// TestMessagesForwardFromSyncToken: /messages forward from a sync's next_batch returns the
// later event with an end token to continue from, and from there an empty chunk without one.
func TestMessagesForwardFromSyncToken(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.waitConsumed()
		next := h.sync(alice).NextBatch
		later := h.send(roomID, alice, "later")
		h.waitConsumed()
		res, code := h.messages(alice, roomID, url.Values{"dir": {"f"}, "from": {next}})
		if code != http.StatusOK || !slices.Equal(eventIDs(res.Chunk), []string{later}) || res.End == "" {
			t.Fatalf("forward from next_batch: %d %v end %q", code, eventIDs(res.Chunk), res.End)
		}
		res, code = h.messages(alice, roomID, url.Values{"dir": {"f"}, "from": {res.End}})
		if code != http.StatusOK || len(res.Chunk) != 0 || res.End != "" {
			t.Fatalf("forward from end: %d %v end %q", code, eventIDs(res.Chunk), res.End)
		}
	})
}

// TestPresenceOfNewRoomMates: an incremental sync after someone joined the user's room
// carries the newcomer's presence (offline when nobody has heard from them), once.
func TestPresenceOfNewRoomMates(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice)
		h.waitConsumed()
		first := h.sync(alice)
		h.member(roomID, bob, bob, spec.Join)
		res := h.syncUntil(alice, first.NextBatch, func(r *types.SyncResponse) bool { return r.Rooms.Join[roomID] != nil })
		var got []string
		for _, p := range res.Presence.Events {
			got = append(got, p.Sender+" "+p.Content.Presence)
		}
		if !slices.Equal(got, []string{bob + " offline"}) {
			t.Fatalf("presence after bob joined: %v", got)
		}
		h.send(roomID, alice, "marker")
		res = h.syncUntil(alice, res.NextBatch, func(r *types.SyncResponse) bool { return r.Rooms.Join[roomID] != nil })
		if len(res.Presence.Events) != 0 {
			t.Fatalf("presence repeated: %+v", res.Presence.Events)
		}
	})
}

// TestCurrentStateVisibleInPrivateHistory: in a room whose history is visible to joined
// members only, a member who left and rejoined sees in the timeline the join that happened
// while away (it is current state), but not a message sent then.
func TestCurrentStateVisibleInPrivateHistory(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol := h.user("alice"), h.user("bob"), h.user("carol")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.submit(roomID, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"}))
		h.waitConsumed()
		since := h.sync(bob).NextBatch
		h.member(roomID, bob, bob, spec.Leave)
		secret := h.send(roomID, alice, "while bob is away")
		carolJoin := h.member(roomID, carol, carol, spec.Join)
		rejoin := h.member(roomID, bob, bob, spec.Join)
		res := h.syncUntil(bob, since, func(r *types.SyncResponse) bool {
			jr := r.Rooms.Join[roomID]
			return jr != nil && slices.Contains(eventIDs(jr.Timeline.Events), rejoin)
		})
		ids := eventIDs(res.Rooms.Join[roomID].Timeline.Events)
		if !slices.Contains(ids, carolJoin) || slices.Contains(ids, secret) {
			t.Fatalf("timeline %v: want carol's join %s, not the message %s", ids, carolJoin, secret)
		}
	})
}

// TestFilteredOutRoomLeftOut: an incremental sync whose filter drops every new event of a
// room leaves the room out; without the filter the room is there.
func TestFilteredOutRoomLeftOut(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.waitConsumed()
		since := h.sync(alice).NextBatch
		h.send(roomID, alice, "filtered out")
		h.waitConsumed()
		filter := `{"room":{"timeline":{"types":[]},"state":{"types":["a.madeup.test.state"]}}}`
		if jr := h.sync(alice, "since", since, "filter", filter).Rooms.Join[roomID]; jr != nil {
			t.Fatalf("room with nothing the filter lets through: %+v", jr)
		}
		if h.sync(alice, "since", since).Rooms.Join[roomID] == nil {
			t.Fatal("room missing without the filter")
		}
	})
}
