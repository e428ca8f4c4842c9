package syncapi_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// TestRelationsMigration fills the relations index from events a sync API stored before
// the index existed: the migration's backfill, not later events, finds the thread reply.
func TestRelationsMigration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		room := h.newRoom(alice)
		root := h.send(room, alice, "root")
		reply := h.submit(room, roomtest.Proto(alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "reply",
			"m.relates_to": map[string]string{"rel_type": "m.thread", "event_id": root}}))[0]
		h.waitConsumed()
		h.stop()
		for _, stmt := range []string{"DROP TABLE syncapi_relations", "DELETE FROM syncapi_schema_version WHERE version >= 7"} {
			if _, err := db.ExecContext(context.Background(), stmt); err != nil {
				t.Fatal(err)
			}
		}
		h = start(t, db)
		h.user("alice")
		var res struct {
			Chunk []struct {
				EventID string `json:"event_id"`
			} `json:"chunk"`
		}
		if code := h.get(alice, "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(root), nil, &res); code != 200 ||
			len(res.Chunk) != 1 || res.Chunk[0].EventID != reply {
			t.Fatalf("relations after the migration: %d %+v", code, res)
		}
	})
}
