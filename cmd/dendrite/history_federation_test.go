package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// pageBack reads a room's whole history with /messages backwards, limit events a page,
// and returns it oldest first.
func pageBack(t *testing.T, c *mautrix.Client, room id.RoomID, limit int) []*event.Event {
	t.Helper()
	var out []*event.Event
	from := ""
	for range 100 {
		res, err := c.Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("messages from %q: %v", from, err)
		}
		out = append(out, res.Chunk...)
		if res.End == "" {
			slices.Reverse(out)
			return out
		}
		from = res.End
	}
	t.Fatal("pagination did not end")
	return nil
}

// TestMonolithsBackfill: bob of B joins a room of A that already has 50 messages. B's
// history starts at the join; /messages backwards reaches past it by backfill from A and
// returns every message once, in order, then the room's creation. A second walk, with A
// stopped, reads the same from B's own storage.
func TestMonolithsBackfill(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "history"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	var sent []string
	for i := range 50 {
		body := fmt.Sprintf("before bob %d", i)
		if _, err = alice.SendText(ctx, room, body); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, body)
	}
	if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(a.name)}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	// The first sync says there is history before what it shows, so clients page back.
	first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := first.Rooms.Join[room]; r == nil || !r.Timeline.Limited || r.Timeline.PrevBatch == "" {
		t.Fatalf("bob's first sync of the room joined over federation is not limited: %+v", r)
	}
	check := func(what string) {
		t.Helper()
		evs := pageBack(t, bob, room, 7)
		var bodies []string
		ids := map[id.EventID]bool{}
		for _, e := range evs {
			if ids[e.ID] {
				t.Fatalf("%s: event %s twice", what, e.ID)
			}
			ids[e.ID] = true
			if e.Type == event.EventMessage {
				bodies = append(bodies, fmt.Sprint(e.Content.Raw["body"]))
			}
		}
		if !slices.Equal(bodies, sent) {
			t.Fatalf("%s: bob's history\n%q\nwant\n%q", what, bodies, sent)
		}
		if evs[0].Type != event.StateCreate || evs[len(evs)-1].Type != event.StateMember || evs[len(evs)-1].GetStateKey() != bob.UserID.String() {
			t.Fatalf("%s: history runs from %s to %s", what, evs[0].Type.Type, evs[len(evs)-1].Type.Type)
		}
	}
	check("backfilled from A")
	a.stop()
	check("from B's storage")
}

// startPartitionable starts two servers behind proxies (their server names are the
// proxies' addresses) and a function that cuts or heals the link between them.
func startPartitionable(t *testing.T) (*fedServer, *fedServer, func(cut bool)) {
	t.Helper()
	tlsA, tlsB := e2e.FreeAddr(t), e2e.FreeAddr(t)
	pa, pb := newProxy(t, tlsA), newProxy(t, tlsB)
	a, b := startFedServerNamed(t, pa.addr(), tlsA), startFedServerNamed(t, pb.addr(), tlsB)
	return a, b, func(cut bool) { pa.setCut(cut); pb.setCut(cut) }
}

// TestMonolithsConvergeState: users of A and B with the same power change the topic and
// the power levels while the servers cannot reach each other, and the topic again at the
// same moment once they can; each server resolves the forks (state
// resolution v2) and both end with the same current state.
func TestMonolithsConvergeState(t *testing.T) {
	a, b, partition := startPartitionable(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "contested"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(a.name)}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	va, vb := newView("alice", alice, room), newView("bob", bob, room)
	va.until(t, "bob's join", func(v *view) bool { return v.has("m.room.member", bob.UserID.String(), "join") })
	levels := func(usersDefault int) map[string]any {
		return map[string]any{"users": map[string]int{alice.UserID.String(): 100, bob.UserID.String(): 100}, "users_default": usersDefault}
	}
	if _, err = alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", levels(0)); err != nil {
		t.Fatal(err)
	}
	vb.until(t, "bob's power", func(v *view) bool { return v.has("m.room.power_levels", "", "") })

	// Partitioned: both change the topic and the power levels; each succeeds on its side.
	partition(true)
	for _, c := range []struct {
		c      *mautrix.Client
		levels map[string]any
	}{{alice, levels(10)}, {bob, levels(20)}} {
		if _, err = c.c.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "partitioned " + c.c.UserID.Localpart()}); err != nil {
			t.Fatal(err)
		}
		if _, err = c.c.SendStateEvent(ctx, room, event.StatePowerLevels, "", c.levels); err != nil {
			t.Fatal(err)
		}
		if _, err = c.c.SendText(ctx, room, "partitioned "+c.c.UserID.Localpart()); err != nil {
			t.Fatal(err)
		}
	}
	partition(false)
	// Alice's next message merges the forks and carries the merge to B.
	if _, err = alice.SendText(ctx, room, "healed"); err != nil {
		t.Fatal(err)
	}
	vb.until(t, "alice's message after the partition", hasBody("healed"))
	va.until(t, "bob's message from the partition", hasBody("partitioned bob"))
	sameState(t, room, alice, bob, va)
	var topic struct {
		Topic string `json:"topic"`
	}
	if err = bob.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || !strings.HasPrefix(topic.Topic, "partitioned ") {
		t.Fatalf("topic after the partition %q, %v", topic.Topic, err)
	}

	// At the same moment, several times.
	for round := range 3 {
		var wg sync.WaitGroup
		for _, c := range []*mautrix.Client{alice, bob} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = c.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": fmt.Sprintf("%s %d", c.UserID.Localpart(), round)}) // checked by the state
			}()
		}
		wg.Wait()
	}
	if _, err = alice.SendText(ctx, room, "done"); err != nil {
		t.Fatal(err)
	}
	vb.until(t, "alice's last message", hasBody("done"))
	sameState(t, room, alice, bob, va)
}

// sameState waits until both clients' servers report the same current state of the room
// (event IDs per type and state key).
func sameState(t *testing.T, room id.RoomID, x, y *mautrix.Client, v *view) {
	t.Helper()
	stateIDs := func(c *mautrix.Client) map[string]id.EventID {
		st, err := c.State(context.Background(), room)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]id.EventID{}
		for typ, byKey := range st {
			for k, e := range byKey {
				out[typ.Type+"|"+k] = e.ID
			}
		}
		return out
	}
	deadline := time.Now().Add(fedTimeout)
	for {
		sx, sy := stateIDs(x), stateIDs(y)
		if maps.Equal(sx, sy) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("current state differs:\n%v\n%v", sx, sy)
		}
		v.sync(t) // a long-poll is the pause
	}
}
