package syncapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// TestCountsFollowTheirEvents: the pushserver announces unread counts after reading the
// event that changed them from the room event log, but the sync API may still be behind on
// that log. The counts must enter the sync stream after the room's events, or an incremental
// sync shows the room with new counts and an empty timeline (sytest "User can invite remote
// user to room with version 2" saw exactly that under load).
func TestCountsFollowTheirEvents(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.waitConsumed()
		since := h.sync(bob).NextBatch

		evs := make([]rsapi.InputRoomEvent, 0, 201)
		for range 200 {
			evs = append(evs, roomtest.Proto(alice, "a.made.up.filler.type", nil, map[string]string{}))
		}
		evs = append(evs, roomtest.Proto(alice, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hello"}))
		ids := h.submit(roomID, evs...)
		counts, _ := json.Marshal(pushapi.OutputNotificationData{UserID: bob, RoomID: roomID, // plain data always encodes
			Threads: map[string]pushapi.Counts{pushapi.MainThread: {NotificationCount: 1}}})
		if _, err := h.log.Produce(context.Background(), countsTopic, eventlog.Message{Key: []byte(bob), Value: counts}); err != nil {
			t.Fatal(err)
		}
		h.waitConsumed()

		var countsAt, lastEventAt int64
		ctx := context.Background()
		if err := db.QueryRowContext(ctx, "SELECT position FROM syncapi_notification_counts WHERE user_id = $1 AND room_id = $2",
			bob, roomID).Scan(&countsAt); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "SELECT MAX(position) FROM syncapi_events WHERE room_id = $1", roomID).Scan(&lastEventAt); err != nil {
			t.Fatal(err)
		}
		if countsAt < lastEventAt {
			t.Fatalf("counts at stream position %d, before the room's last event at %d", countsAt, lastEventAt)
		}
		jr := h.sync(bob, "since", since, "filter", `{"room":{"timeline":{"types":["m.room.message"]}}}`).Rooms.Join[roomID]
		if jr == nil || !slices.Equal(eventIDs(jr.Timeline.Events), ids[len(ids)-1:]) || jr.UnreadNotifications != (types.UnreadNotifications{NotificationCount: 1}) {
			t.Fatalf("incremental sync: %+v", jr)
		}
	})
}
