package syncapi_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

func benchDB(b *testing.B) *sqlutil.DB {
	b.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	return db
}

// BenchmarkInitialSync200Rooms is an initial /sync, over loopback HTTP on SQLite, of a user
// in 200 rooms of 6 state events each (create, member, power levels, join rules, name, topic).
func BenchmarkInitialSync200Rooms(b *testing.B) {
	h := start(b, benchDB(b))
	alice := h.user("alice")
	for i := 0; i < 200; i++ {
		h.newRoom(alice,
			roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": fmt.Sprint("room ", i)}),
			roomtest.Proto(alice, spec.MRoomTopic, roomtest.StateKey(""), map[string]string{"topic": "topic"}))
	}
	h.waitConsumed()
	b.ResetTimer()
	for b.Loop() {
		res := h.sync(alice)
		if len(res.Rooms.Join) != 200 {
			b.Fatalf("%d rooms", len(res.Rooms.Join))
		}
	}
}

// BenchmarkWakeLatency measures, with 20 users long-polling one room, the time from an
// event's commit (its send returning) to each receiver's /sync returning with it. It reports
// the 50th and 99th percentiles.
func BenchmarkWakeLatency(b *testing.B) {
	h := start(b, benchDB(b))
	alice := h.user("alice")
	roomID := h.newRoom(alice)
	var receivers []string
	for i := 0; i < 20; i++ {
		u := h.user(fmt.Sprint("r", i))
		h.member(roomID, u, u, spec.Join)
		receivers = append(receivers, u)
	}
	h.waitConsumed()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		since := h.sync(alice).NextBatch
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sentAt time.Time
		got := make([]time.Time, len(receivers))
		ready := make(chan struct{}, len(receivers))
		for j, u := range receivers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ready <- struct{}{}
				h.syncUntil(u, since, func(r *types.SyncResponse) bool { return r.Rooms.Join[roomID] != nil })
				mu.Lock()
				got[j] = time.Now()
				mu.Unlock()
			}()
		}
		for range receivers {
			<-ready
		}
		time.Sleep(20 * time.Millisecond) // let the requests reach the notifier; a late one returns at once
		h.send(roomID, alice, fmt.Sprint("bench", i))
		sentAt = time.Now()
		wg.Wait()
		for _, at := range got {
			lat = append(lat, max(at.Sub(sentAt), 0))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
