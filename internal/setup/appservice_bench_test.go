package setup

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// benchRooms is how many rooms the ghost of BenchmarkAppServiceDelivery is in.
const benchRooms = 100

// arrivals is a loopback application service that notes when each event arrives.
type arrivals struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	a.mu.Lock()
	for _, ev := range body.Events {
		if _, seen := a.at[ev.EventID]; !seen {
			a.at[ev.EventID] = now
		}
	}
	a.mu.Unlock()
	_, _ = w.Write([]byte("{}")) // the homeserver reads the status and the object
}

// BenchmarkAppServiceDelivery measures the monolith (SQLite) with an application service
// whose ghost is in 100 rooms: b.N messages are sent by 8 clients spread over the rooms
// (mxbench's spread shape). "attached" reports the clients' send rate (sends/s) with the
// service registered, the rate at which the service received the messages (delivered/s,
// from the first send to the last arrival) and the 50th and 99th percentile from the start
// of a send to the event's arrival at the service; "detached" is the same traffic on a
// server without the service, for the send rate to compare against.
func BenchmarkAppServiceDelivery(b *testing.B) {
	for _, attached := range []bool{true, false} {
		name := map[bool]string{true: "attached", false: "detached"}[attached]
		b.Run(name, func(b *testing.B) { benchAppServiceDelivery(b, attached) })
	}
}

func benchAppServiceDelivery(b *testing.B, attached bool) {
	got := &arrivals{at: map[string]time.Time{}}
	srv := httptest.NewServer(got)
	b.Cleanup(srv.Close)
	cfg := appServiceConfig(b, "sqlite", srv.URL, srv.URL)
	// Only the bridge, or no service at all.
	cfg.AppServiceAPI.ConfigFiles = cfg.AppServiceAPI.ConfigFiles[:1]
	if !attached {
		cfg.AppServiceAPI.ConfigFiles = nil
	}
	if err := cfg.Verify(); err != nil {
		b.Fatal(err)
	}
	url, _ := stoppableMonolith(b, cfg)
	ctx := context.Background()
	senders := make([]*mautrix.Client, 8)
	for i := range senders {
		senders[i] = e2e.Register(b, url, fmt.Sprintf("sender%d", i))
	}
	ghostID := id.UserID("@bridge_ghost:as.test")
	bot := e2e.Client(b, url)
	bot.AccessToken = asToken
	if attached {
		if _, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_ghost", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
			b.Fatal(err)
		}
	}
	ghost := e2e.Client(b, url)
	ghost.AccessToken, ghost.UserID, ghost.SetAppServiceUserID = asToken, ghostID, true
	rooms := make([]id.RoomID, benchRooms)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range rooms {
		g.Go(func() error {
			res, err := senders[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				return err
			}
			rooms[i] = res.RoomID
			for _, s := range senders[1:] {
				if _, err := s.JoinRoomByID(ctx, res.RoomID); err != nil {
					return err
				}
			}
			if attached {
				_, err = ghost.JoinRoomByID(ctx, res.RoomID)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	sentAt := make([]map[string]time.Time, len(senders))
	b.ResetTimer()
	start := time.Now()
	for s, c := range senders {
		sentAt[s] = map[string]time.Time{}
		g.Go(func() error {
			for i := s; i < b.N; i += len(senders) {
				before := time.Now()
				res, err := c.SendText(ctx, rooms[i%len(rooms)], fmt.Sprintf("message %d", i))
				if err != nil {
					return err
				}
				sentAt[s][string(res.EventID)] = before
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	sendDone := time.Since(start)
	b.ReportMetric(float64(b.N)/sendDone.Seconds(), "sends/s")
	if !attached {
		return
	}
	var latencies []time.Duration
	var last time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for _, sent := range sentAt {
		for eventID, before := range sent {
			for {
				got.mu.Lock()
				at, ok := got.at[eventID]
				got.mu.Unlock()
				if ok {
					latencies = append(latencies, at.Sub(before))
					if at.After(last) {
						last = at
					}
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("the service never received %s", eventID)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/last.Sub(start).Seconds(), "delivered/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), "p99-ms")
}
