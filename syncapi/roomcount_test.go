package syncapi_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestIncrementalSyncCostFollowsChanges: an incremental /sync that brings one new message
// allocates about as much for a user in 300 rooms as for a user in 20 (issue 18): the
// planner looks only at the rooms with news, not at every room of the user. Memory
// allocations are counted, not time, so the test does not depend on the machine's load.
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
		grow := func(n int) {
			for len(rooms) < n {
				rooms = append(rooms, h.newRoom(alice))
			}
			h.waitConsumed()
			h.sync(alice) // the membership history is read once, as by a client's first sync
		}
		grow(20)
		few := allocsPerSync()
		grow(300)
		many := allocsPerSync()
		t.Logf("allocations per incremental sync: %.0f in 20 rooms, %.0f in 300", few, many)
		if perRoom := (many - few) / 280; perRoom > 0.5 {
			t.Fatalf("an incremental sync allocates %.1f more per room the user is in (%.0f in 20 rooms, %.0f in 300)", perRoom, few, many)
		}
	})
}
