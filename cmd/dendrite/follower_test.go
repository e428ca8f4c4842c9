package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestFollowerRoomJoinedAfterFirstSync: BenchmarkFederationThroughput's follower when B's
// sync API applies bob's remote join only after the follower's first /sync, the order a
// loaded machine gives once the sync's read-your-writes wait (5 s) runs out. The room then
// first comes in an incremental sync, limited as a room joined over federation is (its
// history before the join is on A), although nothing after the first sync is missing: the
// follower reads that gap, which holds no message, and sees every message once, in order.
// Before the follower read gaps, the benchmark failed such a run ("B's sync was limited 1
// times"). Then a limited sync of alice's with messages in its gap: gapEvents returns them,
// oldest first, and nothing else.
func TestFollowerRoomJoinedAfterFirstSync(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		sa, sb := startFedServerWith(t, newDSN(), ""), startFedServerWith(t, newDSN(), "")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		alice, bob := e2e.Register(t, sa.URL(), "alice"), e2e.Register(t, sb.URL(), "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		fb := follow(ctx, bob, room)
		if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(sa.name)}}); err != nil {
			t.Fatal(err)
		}
		var bodies []string
		for i := range 5 {
			bodies = append(bodies, fmt.Sprint("m", i))
			if _, err = alice.SendText(ctx, room, bodies[i]); err != nil {
				t.Fatal(err)
			}
		}
		fb.waitFor(t, bodies, time.Minute)
		got, gaps, err := fb.messages()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, bodies) {
			t.Fatalf("follower saw %q, want %q", got, bodies)
		}
		if len(gaps) != 1 || !strings.Contains(gaps[0], "room in an earlier sync false") || !strings.Contains(gaps[0], "(0 messages) in the gap") {
			t.Fatalf("want one limited sync, the room's first, with no message in its gap: %q", gaps)
		}

		before, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		var burst []string
		for i := range 5 {
			burst = append(burst, fmt.Sprint("burst", i))
			if _, err = alice.SendText(ctx, room, burst[i]); err != nil {
				t.Fatal(err)
			}
		}
		lim, err := alice.SyncRequest(ctx, 0, before.NextBatch, `{"room":{"timeline":{"limit":2}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		r := lim.Rooms.Join[room]
		if r == nil || !r.Timeline.Limited || len(r.Timeline.Events) != 2 {
			t.Fatalf("want a limited timeline of 2: %+v", r)
		}
		gap, err := gapEvents(ctx, alice, room, r.Timeline.PrevBatch, before.NextBatch)
		if err != nil {
			t.Fatal(err)
		}
		var inGap []string
		for _, e := range gap {
			if e.Type == event.EventMessage {
				inGap = append(inGap, fmt.Sprint(e.Content.Raw["body"]))
			}
		}
		if len(gap) != 3 || !slices.Equal(inGap, burst[:3]) {
			t.Fatalf("gap: %d events, messages %q, want %q", len(gap), inGap, burst[:3])
		}
	})
}
