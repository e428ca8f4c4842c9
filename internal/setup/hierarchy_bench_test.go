package setup

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// BenchmarkSpaceHierarchy is GET /_matrix/client/v1/rooms/{roomId}/hierarchy of a space with
// 500 public child rooms, on a monolith on SQLite over loopback HTTP. Each iteration reads
// the first page (the default limit, 50 rooms) and then the whole hierarchy page by page
// with limit=200 (three pages, 501 rooms). It reports the 50th and 99th percentile of the
// first page and of the whole walk.
//
//	go test ./internal/setup/ -run '^$' -bench BenchmarkSpaceHierarchy -benchtime 10x
func BenchmarkSpaceHierarchy(b *testing.B) {
	url := benchMonolith(b)
	ctx := context.Background()
	owner := e2e.Register(b, url, "owner")
	reader := e2e.Register(b, url, "reader")
	rooms := make([]id.RoomID, 500)
	var wg sync.WaitGroup
	errs := make(chan error, len(rooms))
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(rooms); i += 4 {
				r, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprint("room ", i)})
				if err != nil {
					errs <- err
					return
				}
				rooms[i] = r.RoomID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	children := make([]*event.Event, len(rooms))
	for i, r := range rooms {
		sk := r.String()
		children[i] = &event.Event{Type: event.StateSpaceChild, StateKey: &sk,
			Content: event.Content{Raw: map[string]any{"via": []string{"localhost"}}}}
	}
	space, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "space",
		CreationContent: map[string]any{"type": "m.space"}, InitialState: children})
	if err != nil {
		b.Fatal(err)
	}
	if _, err = reader.JoinRoomByID(ctx, space.RoomID); err != nil {
		b.Fatal(err)
	}
	walk := func() int {
		n := 0
		req := &mautrix.ReqHierarchy{Limit: 200}
		for {
			res, err := reader.Hierarchy(ctx, space.RoomID, req)
			if err != nil {
				b.Fatal(err)
			}
			n += len(res.Rooms)
			if res.NextBatch == "" {
				return n
			}
			req.From = res.NextBatch
		}
	}
	if n := walk(); n != len(rooms)+1 {
		b.Fatalf("the hierarchy lists %d rooms", n)
	}
	var first, all []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if res, err := reader.Hierarchy(ctx, space.RoomID, nil); err != nil || len(res.Rooms) != 50 {
			b.Fatalf("first page: %v", err)
		}
		first = append(first, time.Since(t0))
		t0 = time.Now()
		walk()
		all = append(all, time.Since(t0))
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		lat  []time.Duration
	}{{"page-", first}, {"all-", all}} {
		slices.Sort(m.lat)
		b.ReportMetric(float64(m.lat[len(m.lat)/2].Microseconds())/1000, m.name+"p50-ms")
		b.ReportMetric(float64(m.lat[len(m.lat)*99/100].Microseconds())/1000, m.name+"p99-ms")
	}
}
