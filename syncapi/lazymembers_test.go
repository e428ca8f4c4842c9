package syncapi_test

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// stateMembers lists a room's membership state in a sync response as "user=membership",
// sorted.
func stateMembers(t *testing.T, res *types.SyncResponse, roomID string) []string {
	t.Helper()
	jr := res.Rooms.Join[roomID]
	if jr == nil {
		return nil
	}
	var out []string
	for _, e := range jr.State.Events {
		if e.Type != spec.MRoomMember {
			continue
		}
		var c struct {
			Membership string `json:"membership"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, *e.StateKey+"="+c.Membership)
	}
	sort.Strings(out)
	return out
}

func wantMembers(t *testing.T, step string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s: state members %v, want %v", step, got, want)
	}
}

// TestLazyLoadedMembersAcrossSyncs follows a lazy-loading client through incremental syncs
// (sytest 31sync/15lazy-members.pl): each sync gives the membership of timeline senders the
// device was not sent yet, a gapped sync adds the membership changes of its gap, and
// include_redundant_members gives the senders' membership every time.
func TestLazyLoadedMembersAcrossSyncs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol, dave, erin := h.user("alice"), h.user("bob"), h.user("carol"), h.user("dave"), h.user("erin")
		roomID := h.newRoom(alice)
		for _, u := range []string{bob, carol, dave} {
			h.member(roomID, u, u, spec.Join)
		}
		for i := 0; i < 3; i++ {
			h.send(roomID, bob, "b"+string(rune('0'+i)))
		}
		h.waitConsumed()
		const lazy = `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`
		const redundant = `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`
		res := h.sync(alice, "filter", lazy)
		wantMembers(t, "initial", stateMembers(t, res, roomID), alice+"=join", bob+"=join")

		h.send(roomID, carol, "c0")
		h.waitConsumed()
		initial := res.NextBatch
		res = h.sync(alice, "filter", lazy, "since", initial)
		wantMembers(t, "carol speaks", stateMembers(t, res, roomID), carol+"=join")
		// A client that never got that response syncs from its token again: carol's
		// membership is not assumed known.
		wantMembers(t, "retried sync", stateMembers(t, h.sync(alice, "filter", lazy, "since", initial), roomID), carol+"=join")

		h.send(roomID, bob, "b3")
		h.send(roomID, carol, "c1")
		h.waitConsumed()
		since := res.NextBatch
		res = h.sync(alice, "filter", lazy, "since", since)
		if jr := res.Rooms.Join[roomID]; jr == nil || len(jr.Timeline.Events) != 2 {
			t.Fatalf("known senders speak: room %+v", jr)
		}
		wantMembers(t, "known senders speak", stateMembers(t, res, roomID))
		wantMembers(t, "known senders speak, redundant members asked for",
			stateMembers(t, h.sync(alice, "filter", redundant, "since", since), roomID), bob+"=join", carol+"=join")

		// A gap: erin joins in it, dave (never sent) speaks in the timeline, carol (sent) too.
		h.member(roomID, erin, erin, spec.Join)
		h.send(roomID, carol, "c2")
		h.send(roomID, dave, "d0")
		h.send(roomID, carol, "c3")
		h.send(roomID, carol, "c4")
		h.waitConsumed()
		res = h.sync(alice, "filter", lazy, "since", res.NextBatch)
		if !res.Rooms.Join[roomID].Timeline.Limited {
			t.Fatal("the sync after the gap is not limited")
		}
		wantMembers(t, "gap", stateMembers(t, res, roomID), dave+"=join", erin+"=join")

		// A leave in the gap is given, the known sender bob is not.
		h.member(roomID, carol, carol, spec.Leave)
		for i := 4; i < 8; i++ {
			h.send(roomID, bob, "b"+string(rune('0'+i)))
		}
		h.waitConsumed()
		res = h.sync(alice, "filter", lazy, "since", res.NextBatch)
		wantMembers(t, "leave in the gap", stateMembers(t, res, roomID), carol+"=leave")

		// Nothing new: the room is not in the response.
		if next := h.sync(alice, "filter", lazy, "since", res.NextBatch); next.Rooms.Join[roomID] != nil {
			t.Fatalf("room without news: %+v", next.Rooms.Join[roomID])
		}
	})
}

// TestJoinAndLeaveInOneBatchGivesFullState: a user who joins and leaves a room between two
// syncs gets the room in the leave section with its state, which the client never had
// (sytest 31sync/06state.pl "When user joins and leaves a room in the same batch, the full
// state is still included in the next sync").
func TestJoinAndLeaveInOneBatchGivesFullState(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice, roomtest.Proto(alice, "a.madeup.test.state", roomtest.StateKey(""), map[string]int{"my_key": 1}))
		h.member(roomID, alice, bob, spec.Invite)
		h.waitConsumed()
		const filter = `{"room":{"timeline":{"types":[]},"state":{"types":["a.madeup.test.state"]},"include_leave":true}}`
		res := h.sync(bob, "filter", filter)
		if res.Rooms.Invite[roomID] == nil {
			t.Fatal("no invite")
		}
		h.member(roomID, bob, bob, spec.Join)
		h.member(roomID, bob, bob, spec.Leave)
		h.waitConsumed()
		res = h.sync(bob, "filter", filter, "since", res.NextBatch)
		lr := res.Rooms.Leave[roomID]
		if lr == nil {
			t.Fatal("the room is not in the leave section")
		}
		if len(lr.State.Events) != 1 || lr.State.Events[0].Type != "a.madeup.test.state" {
			t.Fatalf("leave state %+v", lr.State.Events)
		}
	})
}
