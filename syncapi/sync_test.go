package syncapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

func TestSyncLifecycle(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice, roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "Room"}))

		first := h.sync(bob)
		if len(first.Rooms.Join)+len(first.Rooms.Invite) != 0 || first.NextBatch == "" {
			t.Fatalf("bob's first sync: %+v", first)
		}
		h.member(roomID, alice, bob, spec.Invite)
		res := h.syncUntil(bob, first.NextBatch, func(r *types.SyncResponse) bool { return r.Rooms.Invite[roomID] != nil })
		var stripped []string
		inviterState := false
		for _, e := range res.Rooms.Invite[roomID].InviteState.Events {
			stripped = append(stripped, e.Type)
			inviterState = inviterState || e.Type == spec.MRoomMember && e.StateKey == alice
		}
		if !inviterState {
			t.Fatalf("invite_state lacks the inviter's m.room.member: %+v", res.Rooms.Invite[roomID].InviteState.Events)
		}
		for _, want := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomMember} {
			if !slices.Contains(stripped, want) {
				t.Fatalf("invite_state lacks %s: %v", want, stripped)
			}
		}

		joinID := h.member(roomID, bob, bob, spec.Join)
		res = h.syncUntil(bob, res.NextBatch, func(r *types.SyncResponse) bool { return r.Rooms.Join[roomID] != nil })
		jr := res.Rooms.Join[roomID]
		if !slices.Contains(eventIDs(jr.Timeline.Events), joinID) {
			t.Fatalf("join not in timeline: %v", eventIDs(jr.Timeline.Events))
		}
		// A room joined since the last sync comes as in an initial sync: its recent timeline
		// (here all of it, from the create event) and the state before that, each event once.
		stateTypes := map[string]bool{}
		for _, e := range jr.State.Events {
			stateTypes[e.Type] = true
			if slices.Contains(eventIDs(jr.Timeline.Events), e.EventID) {
				t.Fatalf("state event %s repeated in the timeline", e.EventID)
			}
		}
		for _, e := range jr.Timeline.Events {
			stateTypes[e.Type] = true
		}
		for _, want := range []string{spec.MRoomCreate, spec.MRoomPowerLevels, spec.MRoomJoinRules, spec.MRoomName} {
			if !stateTypes[want] {
				t.Fatalf("newly joined room lacks %s in state and timeline: %v", want, stateTypes)
			}
		}
		if jr.Timeline.Limited || len(jr.State.Events) != 0 || jr.Timeline.Events[0].Type != spec.MRoomCreate {
			t.Fatalf("newly joined small room: limited %v, %d state events, timeline from %s", jr.Timeline.Limited,
				len(jr.State.Events), jr.Timeline.Events[0].Type)
		}

		// Messages arrive once; the transaction ID only reaches the sending device.
		sent := []string{h.send(roomID, alice, "m1"), h.send(roomID, alice, "m2"), h.send(roomID, alice, "m3")}
		seen := map[string]int{}
		since := res.NextBatch
		h.syncUntil(bob, since, func(r *types.SyncResponse) bool {
			if jr := r.Rooms.Join[roomID]; jr != nil {
				for _, e := range jr.Timeline.Events {
					seen[e.EventID]++
					if len(e.Unsigned) > 0 && json.Valid(e.Unsigned) && string(e.Unsigned) != "{}" {
						var u map[string]any
						_ = json.Unmarshal(e.Unsigned, &u) // checked valid above
						if u["transaction_id"] != nil {
							t.Fatalf("bob sees alice's transaction ID")
						}
					}
				}
			}
			return seen[sent[2]] > 0
		})
		for _, id := range sent {
			if seen[id] != 1 {
				t.Fatalf("event %s delivered %d times", id, seen[id])
			}
		}
		aliceSync := h.sync(alice)
		found := false
		for _, e := range aliceSync.Rooms.Join[roomID].Timeline.Events {
			if e.EventID == sent[0] {
				var u map[string]any
				_ = json.Unmarshal(e.Unsigned, &u) // a missing unsigned leaves u nil
				found = u["transaction_id"] == "txn-m1"
			}
		}
		if !found {
			t.Fatal("the sender's device did not get its transaction ID")
		}

		// A long gap is limited, with a prev_batch that /messages continues from.
		mid := h.sync(bob, "since", since).NextBatch
		var burst []string
		for i := 0; i < 8; i++ {
			burst = append(burst, h.send(roomID, alice, "burst"+string(rune('a'+i))))
		}
		h.waitConsumed()
		lim := h.sync(bob, "since", mid, "filter", `{"room":{"timeline":{"limit":3}}}`)
		ljr := lim.Rooms.Join[roomID]
		if ljr == nil || !ljr.Timeline.Limited || len(ljr.Timeline.Events) != 3 || ljr.Timeline.PrevBatch == "" {
			t.Fatalf("want a limited timeline of 3, got %+v", ljr)
		}
		if !slices.Equal(eventIDs(ljr.Timeline.Events), burst[5:]) {
			t.Fatalf("limited timeline %v, want %v", eventIDs(ljr.Timeline.Events), burst[5:])
		}
		var msgs types.MessagesResponse
		h.get(bob, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages", url.Values{"dir": {"b"}, "from": {ljr.Timeline.PrevBatch}, "limit": {"5"}}, &msgs)
		if want := []string{burst[4], burst[3], burst[2], burst[1], burst[0]}; !slices.Equal(eventIDs(msgs.Chunk), want) {
			t.Fatalf("messages from prev_batch: %v want %v", eventIDs(msgs.Chunk), want)
		}

		// Account data, global and per room.
		h.accountData(bob, "", "m.push_rules", map[string]any{"global": map[string]any{}})
		h.accountData(bob, roomID, "m.tag", map[string]any{"tags": map[string]any{"u.work": map[string]any{}}})
		var globalAD, roomAD bool
		ad := h.syncUntil(bob, lim.NextBatch, func(r *types.SyncResponse) bool {
			globalAD = globalAD || len(r.AccountData.Events) > 0 && r.AccountData.Events[0].Type == "m.push_rules"
			roomAD = roomAD || r.Rooms.Join[roomID] != nil && len(r.Rooms.Join[roomID].AccountData.Events) > 0
			return globalAD && roomAD
		})

		// Leaving moves the room to leave, timeline ending with the leave.
		leaveID := h.member(roomID, bob, bob, spec.Leave)
		h.send(roomID, alice, "after-leave")
		left := h.syncUntil(bob, ad.NextBatch, func(r *types.SyncResponse) bool { return r.Rooms.Leave[roomID] != nil })
		tl := left.Rooms.Leave[roomID].Timeline.Events
		if len(tl) == 0 || tl[len(tl)-1].EventID != leaveID {
			t.Fatalf("leave timeline: %v", eventIDs(tl))
		}
		if left.Rooms.Join[roomID] != nil {
			t.Fatal("left room still in join")
		}
		if full := h.sync(bob, "filter", `{"room":{"include_leave":true}}`); full.Rooms.Leave[roomID] == nil {
			t.Fatal("include_leave initial sync lacks the left room")
		}
		if full := h.sync(bob); full.Rooms.Leave[roomID] != nil || full.Rooms.Join[roomID] != nil {
			t.Fatal("initial sync without include_leave shows the left room")
		}
	})
}

func TestSyncFilters(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol := h.user("alice"), h.user("bob"), h.user("carol")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.member(roomID, carol, carol, spec.Join)
		h.submit(roomID, roomtest.Proto(alice, spec.MRoomTopic, roomtest.StateKey(""), map[string]string{"topic": "t"}))
		for i := 0; i < 5; i++ {
			h.send(roomID, bob, "b"+string(rune('0'+i)))
		}
		h.waitConsumed()

		res := h.sync(alice, "filter", `{"room":{"timeline":{"limit":2}}}`)
		if n := len(res.Rooms.Join[roomID].Timeline.Events); n != 2 || !res.Rooms.Join[roomID].Timeline.Limited {
			t.Fatalf("limit 2: got %d events", n)
		}
		res = h.sync(alice, "filter", `{"room":{"timeline":{"types":["m.room.topic"]}}}`)
		for _, e := range res.Rooms.Join[roomID].Timeline.Events {
			if e.Type != spec.MRoomTopic {
				t.Fatalf("types filter let %s through", e.Type)
			}
		}
		res = h.sync(alice, "filter", `{"room":{"timeline":{"not_senders":["`+bob+`"]}}}`)
		for _, e := range res.Rooms.Join[roomID].Timeline.Events {
			if e.Sender == bob {
				t.Fatal("not_senders let bob through")
			}
		}
		res = h.sync(alice, "filter", `{"room":{"not_rooms":["`+roomID+`"]}}`)
		if res.Rooms.Join[roomID] != nil {
			t.Fatal("not_rooms ignored")
		}

		// Lazy loading: members of timeline senders (bob) and the user, not carol.
		h.mu.Lock()
		h.filters["alice/lazy"] = []byte(`{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`)
		h.mu.Unlock()
		res = h.sync(alice, "filter", "lazy")
		members := map[string]bool{}
		for _, e := range res.Rooms.Join[roomID].State.Events {
			if e.Type == spec.MRoomMember {
				members[*e.StateKey] = true
			}
		}
		if !members[bob] || !members[alice] || members[carol] {
			t.Fatalf("lazy-loaded members: %v", members)
		}
		if code := h.get(alice, "/_matrix/client/v3/sync", url.Values{"filter": {"nope"}}, nil); code != http.StatusBadRequest {
			t.Fatalf("unknown filter ID: status %d", code)
		}
	})
}

func TestLongPollWakesPromptly(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice)
		h.member(roomID, bob, bob, spec.Join)
		h.waitConsumed()
		since := h.sync(bob).NextBatch
		got := make(chan time.Time, 1)
		go func() {
			res := h.sync(bob, "since", since, "timeout", "10000")
			if res.Rooms.Join[roomID] != nil {
				got <- time.Now()
			}
			close(got)
		}()
		time.Sleep(100 * time.Millisecond) // let the request start waiting; a late start only makes it return at once
		sentAt := time.Now()
		h.send(roomID, alice, "wake")
		at, ok := <-got
		if !ok {
			t.Fatal("long poll returned without the event")
		}
		if d := at.Sub(sentAt); d > time.Second {
			t.Fatalf("long poll woke after %v", d)
		}
	})
}

func TestBadParams(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.waitConsumed()
		msgs := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages"
		for _, c := range []struct {
			path string
			q    url.Values
			want int
		}{
			{"/_matrix/client/v3/sync", url.Values{"since": {"garbage"}}, 400},
			{"/_matrix/client/v3/sync", url.Values{"since": {"s-1"}}, 400},
			{"/_matrix/client/v3/sync", url.Values{"since": {"s99999999999999999999"}}, 400},
			{"/_matrix/client/v3/sync", url.Values{"timeout": {"-5"}}, 400},
			{"/_matrix/client/v3/sync", url.Values{"filter": {"{bad"}}, 400},
			{"/_matrix/client/v3/sync", url.Values{"full_state": {"maybe"}}, 400},
			{"/_matrix/client/r0/sync", url.Values{"since": {"s1_0_0"}, "timeout": {"0"}}, 200},
			{msgs, url.Values{}, 400},
			{msgs, url.Values{"dir": {"x"}}, 400},
			{msgs, url.Values{"dir": {"b"}, "from": {"t5"}}, 400},
			{msgs, url.Values{"dir": {"b"}, "limit": {"many"}}, 400},
			{msgs, url.Values{"dir": {"b"}, "filter": {"[1]"}}, 400},
			{msgs, url.Values{"dir": {"b"}}, 200},
			{"/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/context/%24nope", url.Values{}, 404},
			{"/_matrix/client/v3/rooms/" + url.PathEscape("!other:x") + "/messages", url.Values{"dir": {"b"}}, 403},
			{"/_matrix/client/v3/rooms/" + url.PathEscape("!nocolon") + "/messages", url.Values{"dir": {"b"}}, 400},
			{"/_matrix/client/v3/rooms/notaroom/messages", url.Values{"dir": {"b"}}, 400},
			{"/_matrix/client/v3/rooms/notaroom/context/%24x", url.Values{}, 400},
		} {
			if got := h.get(alice, c.path, c.q, nil); got != c.want {
				t.Errorf("%s?%s: status %d, want %d", c.path, c.q.Encode(), got, c.want)
			}
		}
		if got := h.get("bad-token", "/_matrix/client/v3/sync", nil, nil); got != http.StatusUnauthorized {
			t.Errorf("unknown token: status %d", got)
		}
	})
}

// TestStateAtTimelineStart checks that a limited timeline's state is the state before its
// first event, rolled back from the current state, not the current state.
func TestStateAtTimelineStart(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		oneID := h.submit(roomID, roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "one"}))[0]
		for i := 0; i < 3; i++ {
			h.send(roomID, alice, fmt.Sprint("x", i))
		}
		twoID := h.submit(roomID, roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "two"}))[0]
		h.send(roomID, alice, "y")
		h.waitConsumed()
		res := h.sync(alice, "filter", `{"room":{"timeline":{"limit":2}}}`)
		jr := res.Rooms.Join[roomID]
		if !slices.Equal(eventIDs(jr.Timeline.Events)[:1], []string{twoID}) {
			t.Fatalf("timeline: %v", eventIDs(jr.Timeline.Events))
		}
		var names []string
		for _, e := range jr.State.Events {
			if e.Type == spec.MRoomName {
				names = append(names, e.EventID)
			}
		}
		if !slices.Equal(names, []string{oneID}) {
			t.Fatalf("state names %v, want the earlier name %s", names, oneID)
		}
	})
}
