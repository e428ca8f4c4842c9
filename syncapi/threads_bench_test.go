package syncapi_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// BenchmarkInitialSyncThreads is an initial /sync (timeline limit 60), over loopback HTTP on
// SQLite, of a user in 200 rooms that each hold a root message and 55 more: 50 thread replies
// to the root and 5 edits of it ("threads"), or 55 plain messages ("plain", the same number
// of events without relations). The difference is the cost of the bundled aggregations. It
// reports the median and the slowest sync besides the mean (ns/op).
func BenchmarkInitialSyncThreads(b *testing.B) {
	for _, threaded := range []bool{false, true} {
		name := "plain"
		if threaded {
			name = "threads"
		}
		b.Run(name, func(b *testing.B) {
			h := start(b, benchDB(b))
			alice := h.user("alice")
			for i := 0; i < 200; i++ {
				room := h.newRoom(alice)
				root := h.send(room, alice, fmt.Sprint("root ", i))
				evs := make([]rsapi.InputRoomEvent, 0, 55)
				for j := 0; j < 55; j++ {
					content := map[string]any{"msgtype": "m.text", "body": fmt.Sprint("message ", j)}
					switch {
					case threaded && j < 50:
						content["m.relates_to"] = map[string]string{"rel_type": "m.thread", "event_id": root}
					case threaded:
						content["m.relates_to"] = map[string]string{"rel_type": "m.replace", "event_id": root}
						content["m.new_content"] = map[string]string{"msgtype": "m.text", "body": fmt.Sprint("edit ", j)}
					}
					evs = append(evs, roomtest.Proto(alice, "m.room.message", nil, content))
				}
				h.submit(room, evs...)
				if i%20 == 19 {
					h.waitConsumed()
				}
			}
			h.waitConsumed()
			filter := `{"room":{"timeline":{"limit":60}}}`
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if res := h.sync(alice, "filter", filter); len(res.Rooms.Join) != 200 {
					b.Fatalf("%d rooms", len(res.Rooms.Join))
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}
