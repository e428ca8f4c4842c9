package setup

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
	const growers = 4
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
		// The rooms come from growers createRoom requests in flight at once, through the
		// real API: 5,000 rooms one request at a time took over 10 minutes on 2 busy cores.
		add := n - len(rooms)
		if add <= 0 {
			return
		}
		made := make(chan id.RoomID, add)
		errs := make(chan error, growers)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range growers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= int64(add); i = next.Add(1) {
					r, err := user.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("room %d", i)})
					if err != nil {
						errs <- err
						return
					}
					made <- r.RoomID
				}
			}()
		}
		wg.Wait()
		close(made)
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		for r := range made {
			rooms = append(rooms, r)
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
