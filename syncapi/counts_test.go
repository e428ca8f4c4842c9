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

// counts produces the user's unread count in the room the way the pushserver does.
func (h *harness) counts(userID, roomID string, n int) {
	h.t.Helper()
	threads := map[string]pushapi.Counts{}
	if n > 0 {
		threads[pushapi.MainThread] = pushapi.Counts{NotificationCount: n}
	}
	b, _ := json.Marshal(pushapi.OutputNotificationData{UserID: userID, RoomID: roomID, Threads: threads}) // plain data always encodes
	if _, err := h.log.Produce(context.Background(), countsTopic, eventlog.Message{Key: []byte(userID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
}

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
		h.counts(bob, roomID, 1)
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

// TestInviteCountsDoNotOutliveTheJoin: the pushserver counts an invite as a notification of
// the invitee and clears it when they join, but the sync API may apply the clearing after a
// sync that shows the join. Counts of a room the user has not joined are none, so the
// clearing changes nothing and no incremental sync shows the room for it alone (sytest "User
// can invite remote user to room with version N" saw the room with an empty timeline).
func TestInviteCountsDoNotOutliveTheJoin(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID, marker := h.newRoom(alice), h.newRoom(alice)
		h.member(marker, bob, bob, spec.Join)
		h.member(roomID, alice, bob, spec.Invite)
		h.counts(bob, roomID, 1)
		h.waitConsumed()
		h.member(roomID, bob, bob, spec.Join)
		h.waitConsumed()
		initial := h.sync(bob)
		jr := initial.Rooms.Join[roomID]
		if jr == nil {
			t.Fatal("initial sync after the join lacks the room")
		}
		if jr.UnreadNotifications != (types.UnreadNotifications{}) {
			t.Fatalf("initial sync after the join counts the invite: %+v", jr.UnreadNotifications)
		}

		h.counts(bob, roomID, 0)
		h.counts(bob, marker, 1)
		h.syncUntil(bob, initial.NextBatch, func(res *types.SyncResponse) bool {
			if jr := res.Rooms.Join[roomID]; jr != nil {
				t.Fatalf("the invite's cleared count alone brought the room back: %d timeline events", len(jr.Timeline.Events))
			}
			return res.Rooms.Join[marker] != nil
		})
	})
}
