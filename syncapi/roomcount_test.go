package syncapi_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestIncrementalSyncCostFollowsChanges: an incremental /sync that brings one new message,
// or one whose only news is typing in one room and a receipt in another, allocates about
// as much for a user in 300 rooms as for a user in 20 (issue 18): the planner looks only
// at the rooms with news, and the rooms with typing or receipt changes are found from the
// changes, not by listing every room of the user. Memory allocations are counted, not
// time, so the test does not depend on the machine's load.
func TestIncrementalSyncCostFollowsChanges(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		var rooms []string
		// allocsPerSync is the mean allocation count of an incremental sync that carries one
		// new message in the user's first room.
		allocsPerSync := func() float64 {
			const runs = 5
			var total uint64
			for i := range runs {
				since := h.sync(alice).NextBatch
				h.send(rooms[0], alice, fmt.Sprintf("m-%d-%d", len(rooms), i))
				h.waitConsumed()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				res := h.sync(alice, "since", since)
				runtime.ReadMemStats(&after)
				if res.Rooms.Join[rooms[0]] == nil || len(res.Rooms.Join) != 1 {
					t.Fatalf("incremental sync: want only %s, got %d rooms", rooms[0], len(res.Rooms.Join))
				}
				total += after.Mallocs - before.Mallocs
			}
			return float64(total) / runs
		}
		// allocsPerEphemeralSync is the same for an incremental sync whose news is bob
		// typing (or stopping) in the first room and his receipt in the second.
		bob := h.user("bob")
		allocsPerEphemeralSync := func() float64 {
			const runs = 5
			var total uint64
			for i := range runs {
				read := h.send(rooms[1], alice, fmt.Sprintf("read-%d-%d", len(rooms), i))
				h.waitConsumed()
				since := h.sync(alice).NextBatch
				if i%2 == 0 {
					h.typing(rooms[0], bob)
				} else {
					h.typing(rooms[0])
				}
				h.receipt(rooms[1], bob, read)
				h.waitConsumed()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				res := h.sync(alice, "since", since)
				runtime.ReadMemStats(&after)
				if len(res.Rooms.Join) != 2 || res.Rooms.Join[rooms[0]] == nil || res.Rooms.Join[rooms[1]] == nil ||
					len(res.Rooms.Join[rooms[0]].Ephemeral.Events) != 1 || len(res.Rooms.Join[rooms[1]].Ephemeral.Events) != 1 {
					t.Fatalf("incremental sync: want typing in %s and a receipt in %s, got %+v", rooms[0], rooms[1], res.Rooms.Join)
				}
				total += after.Mallocs - before.Mallocs
			}
			return float64(total) / runs
		}
		grow := func(n int) {
			for len(rooms) < n {
				rooms = append(rooms, h.newRoom(alice))
			}
			h.waitConsumed()
			h.sync(alice) // the membership history is read once, as by a client's first sync
		}
		grow(20)
		few, fewEphemeral := allocsPerSync(), allocsPerEphemeralSync()
		grow(300)
		many, manyEphemeral := allocsPerSync(), allocsPerEphemeralSync()
		for _, c := range []struct {
			what      string
			few, many float64
		}{{"a new message", few, many}, {"typing and a receipt", fewEphemeral, manyEphemeral}} {
			t.Logf("allocations per incremental sync with %s: %.0f in 20 rooms, %.0f in 300", c.what, c.few, c.many)
			if perRoom := (c.many - c.few) / 280; perRoom > 0.5 {
				t.Fatalf("an incremental sync with %s allocates %.1f more per room the user is in (%.0f in 20 rooms, %.0f in 300)", c.what, perRoom, c.few, c.many)
			}
		}
	})
}
