package roomserver_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// BenchmarkInput measures roomserver input throughput (events/s) on SQLite: 20 senders
// in one room, and the same spread over 16 rooms.
func BenchmarkInput(b *testing.B) {
	for _, rooms := range []int{1, 16} {
		b.Run(fmt.Sprintf("rooms=%d", rooms), func(b *testing.B) {
			db, err := sqlutil.Open("file:" + b.TempDir() + "/rs.db")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			h := start(b, db, roomtest.NewKey(b))
			defer h.stop()
			alice := "@alice:" + serverName
			ids := make([]string, rooms)
			for i := range ids {
				ids[i] = h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
			}
			const senders = 20
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/senders + 1
			for s := 0; s < senders; s++ {
				wg.Add(1)
				go func(s int) {
					defer wg.Done()
					for i := 0; i < per; i++ {
						roomID := ids[(s+i)%rooms]
						res, err := h.input.InputRoomEvents(context.Background(), &api.InputRoomEventsRequest{Input: api.InputRoomEvents{
							RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]any{"body": "x", "n": i})}}})
						if err != nil || res.Results[0].Err != nil {
							b.Errorf("send: %v %+v", err, res)
							return
						}
					}
				}(s)
			}
			wg.Wait()
			b.ReportMetric(float64(per*senders)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
