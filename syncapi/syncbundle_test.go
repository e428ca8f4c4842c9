package syncapi_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// TestSyncBundlesAggregationsOfEveryRoom: in one initial /sync of several rooms each room's
// thread root carries its own bundled aggregations (a guard for batching them across
// rooms): room i has i+1
// thread replies, room 0 an edit by the root's sender (bundled), room 1 an edit by another
// member (not bundled), room 2 none.
func TestSyncBundlesAggregationsOfEveryRoom(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		type want struct {
			root, latest, edit string
			count              int
		}
		wants := map[string]want{}
		for i := 0; i < 3; i++ {
			room := h.newRoom(alice)
			h.member(room, bob, bob, spec.Join)
			root := h.send(room, alice, fmt.Sprint("root ", i))
			rel := func(sender, relType string) string {
				content := map[string]any{"msgtype": "m.text", "body": relType, "m.relates_to": map[string]string{"rel_type": relType, "event_id": root}}
				if relType == "m.replace" {
					content["m.new_content"] = map[string]string{"msgtype": "m.text", "body": "edited"}
				}
				return h.submit(room, roomtest.Proto(sender, "m.room.message", nil, content))[0]
			}
			w := want{root: root, count: i + 1}
			for j := 0; j <= i; j++ {
				w.latest = rel(bob, "m.thread")
			}
			switch i {
			case 0:
				w.edit = rel(alice, "m.replace")
			case 1:
				rel(bob, "m.replace")
			}
			wants[room] = w
		}
		h.waitConsumed()
		res := h.sync(alice)
		for room, w := range wants {
			jr := res.Rooms.Join[room]
			if jr == nil {
				t.Fatalf("room %s not in /sync", room)
			}
			var unsigned []byte
			for _, ev := range jr.Timeline.Events {
				if ev.EventID == w.root {
					unsigned = ev.Unsigned
				}
			}
			var u struct {
				Relations struct {
					Thread struct {
						Count       int `json:"count"`
						LatestEvent struct {
							EventID string `json:"event_id"`
						} `json:"latest_event"`
					} `json:"m.thread"`
					Replace *struct {
						EventID string `json:"event_id"`
					} `json:"m.replace"`
				} `json:"m.relations"`
			}
			if err := json.Unmarshal(unsigned, &u); err != nil {
				t.Fatalf("root of %s: %s: %v", room, unsigned, err)
			}
			r := u.Relations
			gotEdit := ""
			if r.Replace != nil {
				gotEdit = r.Replace.EventID
			}
			if r.Thread.LatestEvent.EventID != w.latest || gotEdit != w.edit || r.Thread.Count != w.count {
				t.Fatalf("root of %s: %s, want %+v", room, unsigned, w)
			}
		}
	})
}
