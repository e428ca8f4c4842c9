package syncapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// TestEventBundlesAggregations: GET /rooms/{roomId}/event/{eventId} carries the event's
// bundled aggregations (a thread reply, an edit by its sender, a reference) in
// unsigned.m.relations. A user who was never in the room gets 404 for it, as for an
// unknown event, until the room is world readable.
func TestEventBundlesAggregations(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		room := h.newRoom(alice)
		root := h.send(room, alice, "root")
		rel := func(relType, body string) string {
			content := map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]string{"rel_type": relType, "event_id": root}}
			if relType == "m.replace" {
				content["m.new_content"] = map[string]string{"msgtype": "m.text", "body": "edited"}
			}
			return h.submit(room, roomtest.Proto(alice, "m.room.message", nil, content))[0]
		}
		reply, edit, ref := rel("m.thread", "reply"), rel("m.replace", "* edited"), rel("m.reference", "see above")
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/event/"
		var ev struct {
			EventID  string `json:"event_id"`
			Unsigned struct {
				Relations struct {
					Thread struct {
						Count       int `json:"count"`
						LatestEvent struct {
							EventID string `json:"event_id"`
						} `json:"latest_event"`
						Participated bool `json:"current_user_participated"`
					} `json:"m.thread"`
					Replace struct {
						EventID string `json:"event_id"`
					} `json:"m.replace"`
					Reference struct {
						Chunk []struct {
							EventID string `json:"event_id"`
						} `json:"chunk"`
					} `json:"m.reference"`
				} `json:"m.relations"`
			} `json:"unsigned"`
		}
		if code := h.get(alice, path+url.PathEscape(root), nil, &ev); code != http.StatusOK {
			t.Fatalf("event: %d", code)
		}
		r := ev.Unsigned.Relations
		if ev.EventID != root || r.Thread.Count != 1 || r.Thread.LatestEvent.EventID != reply || !r.Thread.Participated ||
			r.Replace.EventID != edit || len(r.Reference.Chunk) != 1 || r.Reference.Chunk[0].EventID != ref {
			t.Fatalf("event %+v", ev)
		}
		if code := h.get(bob, path+url.PathEscape(root), nil, nil); code != http.StatusNotFound {
			t.Fatalf("a user never in the room: %d", code)
		}
		if code := h.get(alice, path+url.PathEscape("$nope"), nil, nil); code != http.StatusNotFound {
			t.Fatalf("an unknown event: %d", code)
		}
		h.submit(room, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "world_readable"}))
		open := h.send(room, alice, "for everyone")
		if code := h.get(bob, path+url.PathEscape(open), nil, nil); code != http.StatusOK {
			t.Fatalf("a world-readable event for a user never in the room: %d", code)
		}
	})
}
