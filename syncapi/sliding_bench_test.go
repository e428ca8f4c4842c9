package syncapi_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkSlidingSync measures, over loopback HTTP on SQLite, for a user in n rooms: the
// first sliding sync response of a new connection with one list of the 20 most recent rooms
// (ns/op), the same user's initial /sync once (initial-sync-ms), and the latency from a
// message's send returning to the long-polling sliding sync response that carries it, over
// 50 messages to rooms outside the list's window (update-p50-ms, update-p99-ms).
func BenchmarkSlidingSync(b *testing.B) {
	for _, n := range []int{100, 500, 1000, 5000} {
		b.Run(fmt.Sprint("rooms=", n), func(b *testing.B) { benchSliding(b, n) })
	}
}

func benchSliding(b *testing.B, n int) {
	h := start(b, benchDB(b))
	alice := h.user("alice")
	rooms := make([]string, n)
	for i := range rooms {
		rooms[i] = h.newRoom(alice)
	}
	h.waitConsumed()
	list := map[string]slidingList{"all": {Range: []int{0, 19}, TimelineLimit: 1,
		RequiredState: [][]string{{"m.room.create", ""}, {"m.room.name", ""}, {"m.room.member", "$LAZY"}}}}
	b.ResetTimer()
	for b.Loop() {
		if res := h.sliding(alice, slidingReq{ConnID: "bench", Lists: list}); len(res.Rooms) != 20 {
			b.Fatalf("%d rooms", len(res.Rooms))
		}
	}
	b.StopTimer()

	began := time.Now()
	if res := h.sync(alice); len(res.Rooms.Join) != n {
		b.Fatalf("initial /sync: %d rooms", len(res.Rooms.Join))
	}
	b.ReportMetric(float64(time.Since(began).Microseconds())/1000, "initial-sync-ms")

	pos := h.sliding(alice, slidingReq{ConnID: "bench", Lists: list}).Pos
	var lat []time.Duration
	for i := 0; i < 50; i++ {
		target := rooms[i] // the oldest rooms: each message moves one into the window
		done := make(chan string, 1)
		var arrived time.Time
		go func() {
			for {
				res := h.sliding(alice, slidingReq{ConnID: "bench", Pos: pos, Timeout: 30000, Lists: list})
				pos = res.Pos
				if res.Rooms[target] != nil {
					arrived = time.Now()
					done <- res.Pos
					return
				}
			}
		}()
		time.Sleep(20 * time.Millisecond) // let the request reach the notifier; a late one answers at once
		h.send(target, alice, fmt.Sprint("update ", i))
		sent := time.Now()
		pos = <-done
		lat = append(lat, max(arrived.Sub(sent), 0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "update-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "update-p99-ms")
}
