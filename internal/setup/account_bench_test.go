package setup

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// BenchmarkAccountGrowth measures what one user's everyday operations cost as the user joins
// more rooms (issue 18): at 100, 1,000 and 5,000 rooms, with the user's own /sync long-poll
// running as a client's would, the time of createRoom, of a message sent, of joining another
// user's room and of an incremental /sync. They should not grow with the number of rooms.
//
//	go test ./internal/setup/ -run '^$' -bench BenchmarkAccountGrowth -benchtime 20x -timeout 30m
func BenchmarkAccountGrowth(b *testing.B) {
	url := benchMonolith(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	user := e2e.Register(b, url, "grower")
	other := e2e.Register(b, url, "host")
	var rooms []id.RoomID
	var mu sync.Mutex
	since := ""
	primed(ctx, user, func(res *mautrix.RespSync, _ time.Time) {
		mu.Lock()
		since = res.NextBatch
		mu.Unlock()
	})
	grow := func(b *testing.B, n int) {
		for len(rooms) < n {
			r, err := user.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("room %d", len(rooms))})
			if err != nil {
				b.Fatal(err)
			}
			rooms = append(rooms, r.RoomID)
		}
	}
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			grow(b, n)
			var create, send, join, syncs time.Duration
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				r, err := user.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				if err != nil {
					b.Fatal(err)
				}
				create += time.Since(start)
				rooms = append(rooms, r.RoomID)

				start = time.Now()
				if _, err := user.SendMessageEvent(ctx, rooms[i%len(rooms)], event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"}); err != nil {
					b.Fatal(err)
				}
				send += time.Since(start)

				pub, err := other.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
				if err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				if _, err := user.JoinRoomByID(ctx, pub.RoomID); err != nil {
					b.Fatal(err)
				}
				join += time.Since(start)
				rooms = append(rooms, pub.RoomID)

				mu.Lock()
				from := since
				mu.Unlock()
				start = time.Now()
				if _, err := user.SyncRequest(ctx, 0, from, "", false, ""); err != nil {
					b.Fatal(err)
				}
				syncs += time.Since(start)
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(per(create), "createRoom-ms")
			b.ReportMetric(per(send), "send-ms")
			b.ReportMetric(per(join), "join-ms")
			b.ReportMetric(per(syncs), "sync-ms")
		})
	}
}
