package setup

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// benchMonolith runs a monolith on SQLite with open registration and no rate limits.
func benchMonolith(b testing.TB) string {
	b.Helper()
	cfg := config.Defaults()
	cfg.Global.DataDir = b.TempDir()
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMonolith(ctx, cfg, logger)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = m.Run(ctx, l); close(done) }() // ends with ctx
	b.Cleanup(func() { cancel(); <-done })
	return "http://" + l.Addr().String()
}

// follower long-polls /sync for one user and hands every response to see.
func follow(ctx context.Context, c *mautrix.Client, see func(*mautrix.RespSync, time.Time)) {
	since := ""
	for ctx.Err() == nil {
		res, err := c.SyncRequest(ctx, 30000, since, "", false, "")
		if err != nil {
			continue
		}
		since = res.NextBatch
		see(res, time.Now())
	}
}

// primed starts a follower and returns once its first (initial) sync is done.
func primed(ctx context.Context, c *mautrix.Client, see func(*mautrix.RespSync, time.Time)) {
	first := make(chan struct{})
	var once sync.Once
	go follow(ctx, c, func(res *mautrix.RespSync, at time.Time) {
		see(res, at)
		once.Do(func() { close(first) })
	})
	<-first
}

func percentiles(b *testing.B, lat []time.Duration, prefix string) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		b.Fatal("no samples")
	}
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), prefix+"p50-ms")
	b.ReportMetric(p(0.99), prefix+"p99-ms")
}

// BenchmarkTypingFanout: 200 users in one room all long-poll /sync; one of them starts or
// stops typing, and the time until each of the others sees it is measured (issue 5).
func BenchmarkTypingFanout(b *testing.B) {
	url := benchMonolith(b)
	users, roomID := e2e.UsersInRoom(b, url, "typer", 200)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var sent time.Time
	var want bool
	var lat []time.Duration
	typer := users[0].UserID.String()
	for _, u := range users[1:] {
		seen := false
		primed(ctx, u, func(res *mautrix.RespSync, at time.Time) {
			room := res.Rooms.Join[roomID]
			if room == nil {
				return
			}
			for _, e := range room.Ephemeral.Events {
				if e.Type != event.EphemeralEventTyping {
					continue
				}
				_ = e.Content.ParseRaw(e.Type) // a malformed event reads as nobody typing
				typing := false
				for _, uid := range e.Content.AsTyping().UserIDs {
					typing = typing || uid.String() == typer
				}
				mu.Lock()
				if typing == want && typing != seen {
					lat = append(lat, at.Sub(sent))
				}
				mu.Unlock()
				seen = typing
			}
		})
	}
	b.ResetTimer()
	for i := range b.N {
		mu.Lock()
		want, sent = i%2 == 0, time.Now()
		before := len(lat)
		mu.Unlock()
		if _, err := users[0].UserTyping(ctx, roomID, i%2 == 0, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			n := len(lat) - before
			mu.Unlock()
			if n >= len(users)-1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("round %d: %d of %d users saw the typing change", i, n, len(users)-1)
			}
		}
	}
	b.StopTimer()
	percentiles(b, lat, "deliver-")
}

// BenchmarkSyncUnderPresenceChurn measures message delivery through /sync to 10 followers
// of a room that 1,000 users share, without and with presence changes at 50/s from those
// users (issue 5: churn must not slow delivery by more than 10%).
func BenchmarkSyncUnderPresenceChurn(b *testing.B) {
	for _, churn := range []bool{false, true} {
		b.Run(fmt.Sprintf("churn=%v", churn), func(b *testing.B) {
			url := benchMonolith(b)
			users, roomID := e2e.UsersInRoom(b, url, "p", 1000)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			followers, sender := users[1:11], users[0]
			var mu sync.Mutex
			sentAt := map[string]time.Time{}
			var lat []time.Duration
			for _, f := range followers {
				primed(ctx, f, func(res *mautrix.RespSync, at time.Time) {
					room := res.Rooms.Join[roomID]
					if room == nil {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					for _, e := range room.Timeline.Events {
						if body, ok := e.Content.Raw["body"].(string); ok && !sentAt[body].IsZero() {
							lat = append(lat, at.Sub(sentAt[body]))
						}
					}
				})
			}
			if churn {
				go func() {
					tick := time.NewTicker(20 * time.Millisecond)
					defer tick.Stop()
					for i := 0; ctx.Err() == nil; i++ {
						<-tick.C
						u := users[11+i%(len(users)-11)]
						p := event.PresenceOnline
						if i/len(users)%2 == 1 {
							p = event.PresenceUnavailable
						}
						_ = u.SetPresence(ctx, mautrix.ReqPresence{Presence: p, StatusMsg: fmt.Sprint("s", i)}) // best effort load
					}
				}()
				time.Sleep(time.Second)
			}
			b.ResetTimer()
			for i := range b.N {
				body := fmt.Sprint("m", i)
				mu.Lock()
				sentAt[body] = time.Now()
				mu.Unlock()
				if _, err := sender.SendText(ctx, roomID, body); err != nil {
					b.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				mu.Lock()
				n := len(lat)
				mu.Unlock()
				if n >= b.N*len(followers) {
					break
				}
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			if len(lat) != b.N*len(followers) {
				b.Fatalf("%d deliveries, want %d", len(lat), b.N*len(followers))
			}
			percentiles(b, lat, "deliver-")
		})
	}
}
