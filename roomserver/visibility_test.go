package roomserver_test

import (
	"context"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestQueryUserAllowed walks one room through every history visibility and membership
// change the spec's rules depend on and checks, per user and message, what
// QueryUserAllowed lets each user see, with all messages judged in one call.
func TestQueryUserAllowed(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob, carol, dave := "@alice:"+serverName, "@bob:"+serverName, "@carol:"+serverName, "@dave:"+serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		send := func(ev api.InputRoomEvent) string {
			t.Helper()
			res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{ev}})
			if res[0].Err != nil {
				t.Fatalf("event rejected: %v", res[0].Err)
			}
			return res[0].EventID
		}
		msg := func(body string) string {
			return send(roomtest.Proto(alice, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": body}))
		}
		visibility := func(v string) {
			send(roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": v}))
		}
		member := func(sender, target, m string) {
			send(roomtest.Proto(sender, spec.MRoomMember, roomtest.StateKey(target), map[string]string{"membership": m}))
		}
		var msgs []string
		msgs = append(msgs, msg("shared, before bob joined")) // 0
		visibility("joined")
		msgs = append(msgs, msg("joined, before bob joined")) // 1
		member(bob, bob, spec.Join)
		msgs = append(msgs, msg("joined, bob joined")) // 2
		visibility("shared")
		msgs = append(msgs, msg("shared, bob joined")) // 3
		member(bob, bob, spec.Leave)
		msgs = append(msgs, msg("shared, after bob left")) // 4
		visibility("world_readable")
		msgs = append(msgs, msg("world readable")) // 5
		visibility("invited")
		msgs = append(msgs, msg("invited, before dave's invite")) // 6
		member(alice, dave, spec.Invite)
		msgs = append(msgs, msg("invited, dave invited")) // 7

		for _, tc := range []struct {
			user string
			want []int
		}{
			{alice, []int{0, 1, 2, 3, 4, 5, 6, 7}},
			{bob, []int{0, 2, 3, 5}},
			{carol, []int{5}},
			{dave, []int{5, 7}},
		} {
			res, err := h.rs.API().QueryUserAllowed(context.Background(), &api.QueryUserAllowedRequest{RoomID: roomID, UserID: tc.user, EventIDs: append(msgs, "$unknown")})
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for i, id := range msgs {
				if slices.Contains(res.Allowed, id) {
					got = append(got, i)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s sees messages %v, want %v", tc.user, got, tc.want)
			}
		}
	})
}
