package syncapi_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

const remoteServer = "remote.test"

// remoteHistory stands for the federationapi: it holds a room's history as another server
// has it and backfills the roomserver from it the way PerformBackfill does (the events
// before the one asked for, newest limit of them, oldest first, the oldest with the state
// before it).
type remoteHistory struct {
	t      *testing.T
	h      *harness
	events []gomatrixserverlib.PDU // oldest first
	state  []string                // the state before every message
	mu     sync.Mutex
	calls  int
}

func (r *remoteHistory) PerformBackfill(ctx context.Context, req *fapi.PerformBackfillRequest) (*fapi.PerformBackfillResponse, error) {
	r.mu.Lock()
	r.calls++
	r.mu.Unlock()
	if !slices.Equal(req.ServerNames, []string{remoteServer}) {
		r.t.Errorf("backfill asked of %v", req.ServerNames)
	}
	end := slices.IndexFunc(r.events, func(e gomatrixserverlib.PDU) bool { return e.EventID() == req.EventIDs[0] })
	if end < 0 {
		return &fapi.PerformBackfillResponse{}, nil
	}
	batch := r.events[max(end-req.Limit, 0):end]
	var in []rsapi.InputRoomEvent
	for i, ev := range batch {
		ie := roomtest.Input(rsapi.KindBackfilled, ev)
		if i == 0 && len(ev.PrevEventIDs()) > 0 {
			ie.StateEventIDs = r.state
		}
		in = append(in, ie)
	}
	res, err := r.h.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: batch[0].RoomID().String(), Events: in}})
	if err != nil {
		return nil, err
	}
	out := &fapi.PerformBackfillResponse{Server: remoteServer}
	for i, res := range res.Results {
		if res.Err != nil {
			r.t.Errorf("backfilled event %d rejected: %v", i, res.Err)
			continue
		}
		out.EventIDs = append(out.EventIDs, res.EventID)
	}
	return out, nil
}

// A room joined over federation has history on this server from the join on; /messages
// backwards goes on past it with backfilled events, several backfills deep, and returns
// every event of the room once, newest first, down to the create event. Forward pagination
// from the start returns the same in the other order.
func TestMessagesBackfill(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		rh := &remoteHistory{t: t}
		h := startWithBackfill(t, db, rh, 8)
		rh.h = h
		bob := h.user("bob")
		alice := "@alice:" + remoteServer
		r := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: remoteServer, Version: gomatrixserverlib.RoomVersionV10,
			RoomID: fmt.Sprintf("!b%d:%s", time.Now().UnixNano(), remoteServer)}
		create := roomtest.CreateEvent(t, r.Key, remoteServer, r.Version, alice, r.RoomID)
		join := r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
		pl := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{alice: 100}}, 3, []gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, join})
		jr := r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, []gomatrixserverlib.PDU{pl}, []gomatrixserverlib.PDU{create, join, pl})
		rh.events = []gomatrixserverlib.PDU{create, join, pl, jr}
		rh.state = []string{create.EventID(), join.EventID(), pl.EventID(), jr.EventID()}
		prev := jr
		for i := range 30 {
			prev = r.Event(alice, "m.room.message", nil, map[string]string{"body": fmt.Sprint(i)}, int64(5+i), []gomatrixserverlib.PDU{prev}, []gomatrixserverlib.PDU{create, join, pl})
			rh.events = append(rh.events, prev)
		}
		// bob's server joins: the room's state as outliers, then bob's join with it.
		var in []rsapi.InputRoomEvent
		for _, ev := range rh.events[:4] {
			in = append(in, roomtest.Input(rsapi.KindOutlier, ev))
		}
		bobJoin := r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 35, []gomatrixserverlib.PDU{prev}, []gomatrixserverlib.PDU{create, pl, jr})
		rh.events = append(rh.events, bobJoin)
		joinIn := roomtest.Input(rsapi.KindFederated, bobJoin)
		joinIn.StateEventIDs = rh.state
		ctx := context.Background()
		for _, msg := range [][]rsapi.InputRoomEvent{in, {joinIn}} {
			res, err := h.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: r.RoomID, RoomVersion: "10", Events: msg}})
			if err != nil {
				t.Fatal(err)
			}
			for _, res := range res.Results {
				if res.Err != nil {
					t.Fatal(res.Err)
				}
			}
		}
		h.waitConsumed()
		var want []string
		for _, ev := range rh.events {
			want = append(want, ev.EventID())
		}
		slices.Reverse(want)
		if got := h.walkAll(bob, r.RoomID, "b", 5); !slices.Equal(got, want) {
			t.Fatalf("backwards with backfill:\n got %v\nwant %v", got, want)
		}
		calls := rh.calls
		if calls < 5 {
			t.Fatalf("%d backfills for 34 events 8 at a time", calls)
		}
		// Everything is stored now: the same again without asking, and forwards.
		if got := h.walkAll(bob, r.RoomID, "b", 9); !slices.Equal(got, want) {
			t.Fatalf("backwards again:\n got %v\nwant %v", got, want)
		}
		if rh.calls != calls {
			t.Fatalf("asked again for stored history: %d backfills", rh.calls-calls)
		}
		slices.Reverse(want)
		if got := h.walkAll(bob, r.RoomID, "f", 6); !slices.Equal(got, want) {
			t.Fatalf("forwards:\n got %v\nwant %v", got, want)
		}
	})
}

// An event received over federation whose predecessors could not be fetched leaves a hole
// in the middle of the stored history (here Q, between bob's join and R). /messages
// backwards meets the hole at R and backfills from there: Q arrives and the walk returns
// every event of the room once. The hole is asked for once: walking again asks nothing.
func TestMessagesBackfillAtGap(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		rh := &remoteHistory{t: t}
		h := startWithBackfill(t, db, rh, 1)
		rh.h = h
		bob := h.user("bob")
		alice := "@alice:" + remoteServer
		r := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: remoteServer, Version: gomatrixserverlib.RoomVersionV10,
			RoomID: fmt.Sprintf("!g%d:%s", time.Now().UnixNano(), remoteServer)}
		create := roomtest.CreateEvent(t, r.Key, remoteServer, r.Version, alice, r.RoomID)
		join := r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
		pl := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{alice: 100}}, 3, []gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, join})
		jr := r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, []gomatrixserverlib.PDU{pl}, []gomatrixserverlib.PDU{create, join, pl})
		bobJoin := r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5, []gomatrixserverlib.PDU{jr}, []gomatrixserverlib.PDU{create, pl, jr})
		msg := func(body string, depth int64, prev gomatrixserverlib.PDU) gomatrixserverlib.PDU {
			return r.Event(alice, "m.room.message", nil, map[string]string{"body": body}, depth, []gomatrixserverlib.PDU{prev}, []gomatrixserverlib.PDU{create, join, pl})
		}
		q := msg("Q", 6, bobJoin)
		rEv := msg("R", 7, q)
		s := msg("S", 8, rEv)
		rh.events = []gomatrixserverlib.PDU{create, join, pl, jr, bobJoin, q, rEv, s}
		rh.state = []string{create.EventID(), join.EventID(), pl.EventID(), jr.EventID(), bobJoin.EventID()}

		// bob's server joins (the state as outliers, then the join with the state), then gets
		// S, whose predecessor R it fetched with the state before R, Q missing.
		var outliers []rsapi.InputRoomEvent
		for _, ev := range rh.events[:4] {
			outliers = append(outliers, roomtest.Input(rsapi.KindOutlier, ev))
		}
		joinIn := roomtest.Input(rsapi.KindFederated, bobJoin)
		joinIn.StateEventIDs = rh.state[:4]
		rIn := roomtest.Input(rsapi.KindFederated, rEv)
		rIn.StateEventIDs = rh.state
		ctx := context.Background()
		for _, in := range [][]rsapi.InputRoomEvent{outliers, {joinIn}, {rIn, roomtest.Input(rsapi.KindFederated, s)}} {
			res, err := h.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: r.RoomID, RoomVersion: "10", Events: in}})
			if err != nil {
				t.Fatal(err)
			}
			for _, res := range res.Results {
				if res.Err != nil {
					t.Fatal(res.Err)
				}
			}
		}
		h.waitConsumed()
		var want []string
		for _, ev := range rh.events {
			want = append(want, ev.EventID())
		}
		got := h.walkAll(bob, r.RoomID, "b", 3)
		if !slices.Contains(got, q.EventID()) {
			t.Fatalf("the event in the hole was not backfilled: got %v, want Q %s", got, q.EventID())
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("backwards across the hole:\n got %v\nwant %v", got, want)
		}
		calls := rh.calls
		h.walkAll(bob, r.RoomID, "b", 3)
		if rh.calls != calls {
			t.Fatalf("asked again for a filled hole: %d backfills", rh.calls-calls)
		}
	})
}
