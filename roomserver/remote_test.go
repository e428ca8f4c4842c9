package roomserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

const remoteServer = "remote.test"

// remoteRoom is a room built by another server, event by event.
type remoteRoom struct {
	*roomtest.Remote
	create, aliceJoin, pl, jr gomatrixserverlib.PDU
}

func newRemoteRoom(t *testing.T, alice string) *remoteRoom {
	return newRemoteRoomOfVersion(t, alice, gomatrixserverlib.RoomVersionV10)
}

// newRemoteRoomOfVersion is newRemoteRoom in a room of the given version.
func newRemoteRoomOfVersion(t *testing.T, alice string, version gomatrixserverlib.RoomVersion) *remoteRoom {
	r := &remoteRoom{Remote: &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: remoteServer, Version: version,
		RoomID: fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), remoteServer)}}
	r.create = roomtest.CreateEvent(t, r.Key, remoteServer, r.Version, alice, r.RoomID)
	r.aliceJoin = r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}, 2, r.pdus(r.create), r.pdus(r.create))
	r.pl = r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{alice: 100}}, 3, r.pdus(r.aliceJoin), r.pdus(r.create, r.aliceJoin))
	r.jr = r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, r.pdus(r.pl), r.pdus(r.create, r.aliceJoin, r.pl))
	return r
}

func (r *remoteRoom) pdus(evs ...gomatrixserverlib.PDU) []gomatrixserverlib.PDU { return evs }

func (h *harness) submitRemote(roomID string, version gomatrixserverlib.RoomVersion, in ...api.InputRoomEvent) []api.Result {
	h.t.Helper()
	return h.submit(api.InputRoomEvents{RoomID: roomID, RoomVersion: string(version), Events: in})
}

func (h *harness) membership(roomID, userID string) string {
	h.t.Helper()
	m, err := h.rs.API().QueryMembershipForUser(context.Background(), &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
	if err != nil {
		h.t.Fatal(err)
	}
	return m.Membership
}

func (h *harness) currentState(roomID string, tuples ...api.StateKeyTuple) map[string]string {
	h.t.Helper()
	res, err := h.rs.API().QueryCurrentState(context.Background(), &api.QueryCurrentStateRequest{RoomID: roomID, Tuples: tuples})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range res.StateEvents {
		out[e.Type()+"|"+*e.StateKey()] = e.EventID()
	}
	return out
}

func wantOK(t *testing.T, what string, res []api.Result) {
	t.Helper()
	for i, r := range res {
		if r.Err != nil || r.SoftFailed {
			t.Fatalf("%s: event %d: %+v", what, i, r)
		}
	}
}

// outputIDs are the event IDs of the OutputRoomEvents in recs.
func outputIDs(t *testing.T, f *test.Follow, n int) []string {
	t.Helper()
	var out []string
	for _, rec := range f.Wait(t, n, 10*time.Second) {
		var o api.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			t.Fatal(err)
		}
		out = append(out, o.NewRoomEvent.Event.EventID())
	}
	return out
}

// Events from another server: checked against their auth events, the state before them
// (from their prev_events, resolved when they fork) and the current state (soft failure).
func TestFederatedEvents(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		out := test.FollowTopic(t, h.log, "out")
		alice, bob, carol := "@alice:"+remoteServer, "@bob:"+remoteServer, "@carol:"+remoteServer
		r := newRemoteRoom(t, alice)
		bobJoin := r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
		msg1 := r.Event(bob, "m.room.message", nil, map[string]string{"body": "hi"}, 6, r.pdus(bobJoin), r.pdus(r.create, r.pl, bobJoin))
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, bobJoin, msg1} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room from another server", h.submitRemote(r.RoomID, r.Version, in...))
		if m := h.membership(r.RoomID, bob); m != spec.Join {
			t.Fatalf("bob's membership %q", m)
		}
		if got := outputIDs(t, out, 6); got[5] != msg1.EventID() {
			t.Fatalf("outputs %v", got)
		}
		// A replay changes nothing.
		wantOK(t, "replay", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, msg1)))

		// A stranger's message fails against its auth events: rejected.
		stranger := r.Event(carol, "m.room.message", nil, map[string]string{"body": "spam"}, 7, r.pdus(msg1), r.pdus(r.create, r.pl))
		res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, stranger))
		if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("stranger's message: %+v", res[0])
		}
		// Unknown prev events without a given state: rejected.
		neverSent := r.Event(alice, "m.room.message", nil, map[string]string{"body": "never sent"}, 19, r.pdus(msg1), r.pdus(r.create, r.pl, r.aliceJoin))
		unknownPrev := r.Event(alice, "m.room.message", nil, map[string]string{"body": "gap"}, 20, r.pdus(neverSent), r.pdus(r.create, r.pl, r.aliceJoin))
		res = h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, unknownPrev))
		if res[0].Err == nil || res[0].Err.Code != "M_NOT_FOUND" {
			t.Fatalf("event after a gap: %+v", res[0])
		}

		// Alice bans bob; bob's message on a fork from before the ban passes against the
		// state before it but not against the current state: soft-failed, never output.
		ban := r.Event(alice, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "ban"}, 7, r.pdus(msg1), r.pdus(r.create, r.pl, r.aliceJoin, bobJoin))
		wantOK(t, "ban", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, ban)))
		late := r.Event(bob, "m.room.message", nil, map[string]string{"body": "late"}, 7, r.pdus(msg1), r.pdus(r.create, r.pl, bobJoin))
		res = h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, late))
		if res[0].Err != nil || !res[0].SoftFailed {
			t.Fatalf("bob's late message: %+v", res[0])
		}
		if m := h.membership(r.RoomID, bob); m != spec.Ban {
			t.Fatalf("bob's membership after the ban %q", m)
		}

		// Two topics on a fork: both accepted, the current state is their resolution, and
		// an event on both branches merges them.
		topicA := r.Event(alice, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "A"}, 8, r.pdus(ban), r.pdus(r.create, r.pl, r.aliceJoin))
		topicB := r.Event(alice, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "B"}, 8, r.pdus(ban), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "fork", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, topicA), roomtest.Input(api.KindFederated, topicB)))
		topic := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"})["m.room.topic|"]
		if topic != topicA.EventID() && topic != topicB.EventID() {
			t.Fatalf("topic after the fork: %q", topic)
		}
		merge := r.Event(alice, "m.room.message", nil, map[string]string{"body": "merge"}, 9, r.pdus(topicA, topicB), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "merge", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, merge)))
		st, err := h.rs.API().QueryStateAtEvent(context.Background(), &api.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: merge.EventID(), Tuples: []api.StateKeyTuple{{EventType: "m.room.topic"}}})
		if err != nil || !st.EventKnown || len(st.StateEvents) != 1 || st.StateEvents[0].EventID() != topic {
			t.Fatalf("state before the merge: %+v %v (current topic %s)", st, err, topic)
		}

		// An outlier is stored but not placed; sent again as federated it is placed.
		topicC := r.Event(alice, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "C"}, 10, r.pdus(merge), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "outlier", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindOutlier, topicC)))
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"})["m.room.topic|"]; got != topic {
			t.Fatalf("an outlier changed the topic to %s", got)
		}
		st, err = h.rs.API().QueryStateAtEvent(context.Background(), &api.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: topicC.EventID()})
		if err != nil || st.EventKnown {
			t.Fatalf("state at an outlier: %+v %v", st, err)
		}
		wantOK(t, "outlier placed", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, topicC)))
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"})["m.room.topic|"]; got != topicC.EventID() {
			t.Fatalf("topic after placing the outlier: %s", got)
		}

		// A gap filled by the writer: the state before the event is given.
		missing := r.Event(alice, "m.room.message", nil, map[string]string{"body": "never seen"}, 11, r.pdus(topicC), r.pdus(r.create, r.pl, r.aliceJoin))
		after := r.Event(alice, "m.room.message", nil, map[string]string{"body": "after the gap"}, 12, r.pdus(missing), r.pdus(r.create, r.pl, r.aliceJoin))
		var stateIDs []string
		for _, id := range h.currentState(r.RoomID) {
			stateIDs = append(stateIDs, id)
		}
		withState := roomtest.Input(api.KindFederated, after)
		withState.StateEventIDs = stateIDs
		wantOK(t, "event with given state", h.submitRemote(r.RoomID, r.Version, withState))

		ids := outputIDs(t, out, 12)
		if slices.Contains(ids, late.EventID()) || slices.Contains(ids, stranger.EventID()) {
			t.Fatalf("a soft-failed or rejected event reached the output: %v", ids)
		}
		if ids[len(ids)-1] != after.EventID() {
			t.Fatalf("outputs %v", ids)
		}
	})
}

// Events that fail the auth rules are kept as rejected (spec "Rejection"): an event naming
// one as a prev event is placed, the rejected state event changes no state, neither is a
// forward extremity, queries and readers never get them, and one sent again is refused
// again.
func TestRejectedEventsAreKept(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		out := test.FollowTopic(t, h.log, "out")
		alice, carol := "@alice:"+remoteServer, "@carol:"+remoteServer
		r := newRemoteRoom(t, alice)
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room from another server", h.submitRemote(r.RoomID, r.Version, in...))
		outputIDs(t, out, 4)

		// carol is no member: her message and her topic fail against their auth events.
		spam := r.Event(carol, "m.room.message", nil, map[string]string{"body": "spam"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl))
		topic := r.Event(carol, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "spam"}, 6, r.pdus(spam), r.pdus(r.create, r.pl))
		for _, ev := range []gomatrixserverlib.PDU{spam, topic, spam} {
			if res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, ev)); res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
				t.Fatalf("carol's %s: %+v", ev.Type(), res[0])
			}
		}
		after := r.Event(alice, "m.room.message", nil, map[string]string{"body": "after"}, 7, r.pdus(topic), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "event after rejected ones", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, after)))

		ctx := context.Background()
		info, err := h.rs.API().QueryRoomInfo(ctx, &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{after.EventID()}) {
			t.Fatalf("forward extremities %+v %v, want only %s (jr is superseded through the rejected events)", info, err, after.EventID())
		}
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"}); len(got) != 0 {
			t.Fatalf("a rejected topic is in the current state: %v", got)
		}
		st, err := h.rs.API().QueryStateAtEvent(ctx, &api.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: after.EventID(), Tuples: []api.StateKeyTuple{{EventType: "m.room.topic"}}})
		if err != nil || !st.EventKnown || len(st.StateEvents) != 0 {
			t.Fatalf("state before the event after the rejected topic: %+v %v", st, err)
		}
		st, err = h.rs.API().QueryStateAtEvent(ctx, &api.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: spam.EventID()})
		if err != nil || st.EventKnown {
			t.Fatalf("state at a rejected event: %+v %v", st, err)
		}
		evs, err := h.rs.API().QueryEventsByID(ctx, &api.QueryEventsByIDRequest{RoomID: r.RoomID, EventIDs: []string{spam.EventID(), topic.EventID(), after.EventID()}})
		if err != nil || len(evs.Events) != 1 || evs.Events[0].EventID() != after.EventID() {
			t.Fatalf("events by ID: %+v %v", evs, err)
		}
		slices.Sort(evs.RejectedIDs)
		want := []string{spam.EventID(), topic.EventID()}
		slices.Sort(want)
		if !slices.Equal(evs.RejectedIDs, want) {
			t.Fatalf("rejected IDs %v, want %v", evs.RejectedIDs, want)
		}
		if anyRoom, err := h.rs.API().QueryEventsByID(ctx, &api.QueryEventsByIDRequest{EventIDs: []string{spam.EventID()}}); err != nil || len(anyRoom.Events) != 0 {
			t.Fatalf("a rejected event by ID without a room: %+v %v", anyRoom, err)
		}
		if ids := outputIDs(t, out, 5); len(ids) != 5 || ids[4] != after.EventID() {
			t.Fatalf("outputs %v, want the room's four events and %s", ids, after.EventID())
		}

		// An auth event of another room rejects the event (it is kept as rejected).
		other := newRemoteRoom(t, alice)
		wantOK(t, "another room", h.submitRemote(other.RoomID, other.Version,
			roomtest.Input(api.KindFederated, other.create), roomtest.Input(api.KindFederated, other.aliceJoin)))
		foreign := r.Event(alice, "m.room.message", nil, map[string]string{"body": "foreign auth"}, 8, r.pdus(after), r.pdus(r.create, r.pl, other.aliceJoin))
		if res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, foreign)); res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("event with an auth event of another room: %+v", res[0])
		}
		if evs, err := h.rs.API().QueryEventsByID(ctx, &api.QueryEventsByIDRequest{RoomID: r.RoomID, EventIDs: []string{foreign.EventID()}}); err != nil ||
			!slices.Equal(evs.RejectedIDs, []string{foreign.EventID()}) {
			t.Fatalf("event with an auth event of another room not kept as rejected: %+v %v", evs, err)
		}
		// A redaction of another room's event is refused the same way.
		crossRedaction := r.Event(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": other.aliceJoin.EventID()}, 8, r.pdus(after), r.pdus(r.create, r.pl, r.aliceJoin))
		if res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, crossRedaction)); res[0].Err == nil || !strings.Contains(res[0].Err.Message, "another room") {
			t.Fatalf("redaction of another room's event: %+v", res[0])
		}
		// A redaction of the rejected message is accepted, but it redacts nothing: a
		// redaction applies only to a valid target (spec, room versions 3 and later,
		// "Handling redactions").
		redaction := r.Event(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": spam.EventID()}, 8, r.pdus(after), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "redaction of a rejected event", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, redaction)))
		if events, redacts := outputEvents(t, out, 8); events[redaction.EventID()] == nil || len(redacts) != 0 {
			t.Fatalf("outputs %v applied redactions %v, want the redaction applying none", events, redacts)
		}
	})
}

// An event after soft-failed events supersedes, as forward extremities, the events they
// follow: soft-failed events never became extremities, so the accepted event before them
// would otherwise stay one for ever.
func TestSoftFailedEventsAreNoExtremities(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob := "@alice:"+remoteServer, "@bob:"+remoteServer
		r := newRemoteRoom(t, alice)
		bobJoin := r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
		pl1 := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{alice: 100}, "events": map[string]int{"test.sf": 50}},
			6, r.pdus(bobJoin), r.pdus(r.create, r.pl, r.aliceJoin))
		m1 := r.Event(bob, "m.room.message", nil, map[string]string{"body": "M1"}, 6, r.pdus(bobJoin), r.pdus(r.create, r.pl, bobJoin))
		sf1 := r.Event(bob, "test.sf", nil, map[string]string{"body": "SF1"}, 7, r.pdus(m1), r.pdus(r.create, r.pl, bobJoin))
		m2 := r.Event(bob, "m.room.message", nil, map[string]string{"body": "M2"}, 8, r.pdus(pl1, sf1), r.pdus(r.create, pl1, bobJoin))
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, bobJoin, pl1, m1} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room from another server", h.submitRemote(r.RoomID, r.Version, in...))
		if res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, sf1)); res[0].Err != nil || !res[0].SoftFailed {
			t.Fatalf("SF1: %+v, want soft-failed", res[0])
		}
		wantOK(t, "M2", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, m2)))
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{m2.EventID()}) {
			t.Fatalf("forward extremities %+v %v, want only M2 (M1 is before the soft-failed SF1)", info, err)
		}
	})
}

// An invite of a local user received with /invite (KindRemoteMembership) for a room this
// server is in, whose prev_events are here, is placed in the timeline at once: the user's
// membership is in the current state, so a join right after it passes auth here (it was
// an outlier until the room's server sent it again, and a quick join was refused). One
// whose prev_events are not here stays an outlier the user is told about; the room's
// server sending it again (federated) places it.
func TestRemoteInviteInAJoinedRoom(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, carol, dave := "@alice:"+remoteServer, "@carol:"+string(serverName), "@dave:"+string(serverName)
		r := newRemoteRoom(t, alice)
		jr := r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "invite"}, 5, r.pdus(r.jr), r.pdus(r.create, r.aliceJoin, r.pl))
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, jr} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room from another server", h.submitRemote(r.RoomID, r.Version, in...))
		inState := func(user string) bool {
			return h.currentState(r.RoomID, api.StateKeyTuple{EventType: spec.MRoomMember, StateKey: user})[spec.MRoomMember+"|"+user] != ""
		}

		invite := r.Event(alice, spec.MRoomMember, roomtest.StateKey(carol), map[string]string{"membership": "invite"}, 6, r.pdus(jr), r.pdus(r.create, r.aliceJoin, r.pl, jr))
		wantOK(t, "carol's invite", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindRemoteMembership, invite)))
		if m := h.membership(r.RoomID, carol); m != spec.Invite || !inState(carol) {
			t.Fatalf("carol's membership %q, in the current state: %v", m, inState(carol))
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{invite.EventID()}) {
			t.Fatalf("forward extremities %+v %v, want the invite", info, err)
		}
		wantOK(t, "carol's invite sent again", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, invite)))
		join := roomtest.Proto(carol, spec.MRoomMember, roomtest.StateKey(carol), map[string]string{"membership": "join"})
		wantOK(t, "carol's join", h.submitRemote(r.RoomID, r.Version, join))
		if m := h.membership(r.RoomID, carol); m != spec.Join {
			t.Fatalf("carol's membership after joining %q", m)
		}

		unseen := r.Event(alice, "m.room.message", nil, map[string]string{"body": "not sent yet"}, 7, r.pdus(invite), r.pdus(r.create, r.aliceJoin, r.pl))
		late := r.Event(alice, spec.MRoomMember, roomtest.StateKey(dave), map[string]string{"membership": "invite"}, 8, r.pdus(unseen), r.pdus(r.create, r.aliceJoin, r.pl, jr))
		wantOK(t, "dave's invite", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindRemoteMembership, late)))
		if m := h.membership(r.RoomID, dave); m != spec.Invite || inState(dave) {
			t.Fatalf("dave's membership %q, in the current state: %v (want an outlier)", m, inState(dave))
		}
		wantOK(t, "the rest of the room", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, unseen), roomtest.Input(api.KindFederated, late)))
		if !inState(dave) {
			t.Fatal("dave's invite sent by the room's server is not in the current state")
		}
	})
}

// A gap the writer fills with the state before each missing prev event (PrevStates): the
// prev event is stored as an outlier, and the state before the event is the resolution of
// the state after it (the given state plus the prev event) and of the states after the
// placed prev events.
func TestPrevStatesFillGaps(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice := "@alice:" + remoteServer
		r := newRemoteRoom(t, alice)
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room from another server", h.submitRemote(r.RoomID, r.Version, in...))
		stateIDs := slices.Collect(maps.Values(h.currentState(r.RoomID)))

		placedMsg := r.Event(alice, "m.room.message", nil, map[string]string{"body": "placed"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.aliceJoin))
		wantOK(t, "placed message", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, placedMsg)))
		// topic's own prev event is never sent: the writer knows the state before topic.
		unseen := r.Event(alice, "m.room.message", nil, map[string]string{"body": "unseen"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.aliceJoin))
		topic := r.Event(alice, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "T"}, 6, r.pdus(unseen), r.pdus(r.create, r.pl, r.aliceJoin))
		next := r.Event(alice, "m.room.message", nil, map[string]string{"body": "next"}, 7, r.pdus(placedMsg, topic), r.pdus(r.create, r.pl, r.aliceJoin))

		withoutState := roomtest.Input(api.KindFederated, next)
		if res := h.submitRemote(r.RoomID, r.Version, withoutState); res[0].Err == nil || res[0].Err.Code != "M_NOT_FOUND" {
			t.Fatalf("gap without a state: %+v", res[0])
		}
		wantOK(t, "missing prev event as an outlier", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindOutlier, topic)))
		withState := roomtest.Input(api.KindFederated, next)
		withState.PrevStates = map[string][]string{topic.EventID(): stateIDs}
		wantOK(t, "gap with the state before the missing prev event", h.submitRemote(r.RoomID, r.Version, withState))
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"})["m.room.topic|"]; got != topic.EventID() {
			t.Fatalf("topic after the gap: %q, want %s", got, topic.EventID())
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{next.EventID()}) {
			t.Fatalf("forward extremities %+v %v", info, err)
		}

		// A missing prev event that fails the auth rules is kept as a rejected outlier: the
		// state after it is the state before it.
		carol := "@carol:" + remoteServer
		spamTopic := r.Event(carol, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "spam"}, 8, r.pdus(next), r.pdus(r.create, r.pl))
		if res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindOutlier, spamTopic)); res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("carol's topic as an outlier: %+v", res[0])
		}
		last := r.Event(alice, "m.room.message", nil, map[string]string{"body": "last"}, 9, r.pdus(spamTopic), r.pdus(r.create, r.pl, r.aliceJoin))
		withState = roomtest.Input(api.KindFederated, last)
		withState.PrevStates = map[string][]string{spamTopic.EventID(): slices.Collect(maps.Values(h.currentState(r.RoomID)))}
		wantOK(t, "event after a rejected outlier", h.submitRemote(r.RoomID, r.Version, withState))
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.room.topic"})["m.room.topic|"]; got != topic.EventID() {
			t.Fatalf("topic after a rejected outlier: %q, want %s", got, topic.EventID())
		}
	})
}

// A remote join as the federationapi writes it: the room's auth chain and state as
// outliers, then the join with the state before it. The room appears with its whole state.
func TestRemoteJoinInput(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		out := test.FollowTopic(t, h.log, "out")
		alice, local := "@alice:"+remoteServer, "@local:"+serverName
		r := newRemoteRoom(t, alice)
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr} {
			in = append(in, roomtest.Input(api.KindOutlier, ev))
		}
		wantOK(t, "outliers", h.submitRemote(r.RoomID, r.Version, in...))
		if m := h.membership(r.RoomID, alice); m != "" {
			t.Fatalf("outliers changed a membership: %q", m)
		}
		join := r.Event(local, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
		ie := roomtest.Input(api.KindFederated, join)
		ie.StateEventIDs = []string{r.create.EventID(), r.aliceJoin.EventID(), r.pl.EventID(), r.jr.EventID()}
		wantOK(t, "join", h.submitRemote(r.RoomID, r.Version, ie))
		if m := h.membership(r.RoomID, local); m != spec.Join {
			t.Fatalf("local user's membership %q", m)
		}
		if n := len(h.currentState(r.RoomID)); n != 5 {
			t.Fatalf("current state has %d events", n)
		}
		var o api.OutputRoomEvent
		if err := json.Unmarshal(out.Wait(t, 1, 10*time.Second)[0].Value, &o); err != nil {
			t.Fatal(err)
		}
		if o.NewRoomEvent.Event.EventID() != join.EventID() || len(o.NewRoomEvent.AddsStateEventIDs) != 5 {
			t.Fatalf("join output: %+v", o.NewRoomEvent)
		}
		// Local events now build on the joined room.
		res := h.submit(api.InputRoomEvents{RoomID: r.RoomID, Events: []api.InputRoomEvent{roomtest.Proto(local, "m.room.message", nil, map[string]string{"body": "hello"})}})
		wantOK(t, "local message in the joined room", res)
	})
}

// outputs are the OutputRoomEvents in recs, as "type event_id".
func outputs(t *testing.T, f *test.Follow, n int) []string {
	t.Helper()
	var out []string
	for _, rec := range f.Wait(t, n, 10*time.Second) {
		var o api.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			t.Fatal(err)
		}
		switch o.Type {
		case api.OutputTypeBackfilledEvent:
			out = append(out, "backfilled "+o.BackfilledEvent.Event.EventID()+" "+o.BackfilledEvent.HistoryVisibility)
		default:
			out = append(out, "new "+o.NewRoomEvent.Event.EventID())
		}
	}
	return out
}

// joinAt joins local to the remote room as a remote join would: the room's state as
// outliers, then local's join after prev with that state before it. It returns the join
// and the state's event IDs.
func (h *harness) joinAt(r *remoteRoom, local string, state []gomatrixserverlib.PDU, prev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, []string) {
	h.t.Helper()
	var in []api.InputRoomEvent
	var stateIDs []string
	for _, ev := range state {
		in = append(in, roomtest.Input(api.KindOutlier, ev))
		stateIDs = append(stateIDs, ev.EventID())
	}
	wantOK(h.t.(*testing.T), "outliers", h.submitRemote(r.RoomID, r.Version, in...))
	join := r.Event(local, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "join"}, prev.Depth()+1, r.pdus(prev), r.pdus(r.create, r.pl, r.jr))
	ie := roomtest.Input(api.KindFederated, join)
	ie.StateEventIDs = stateIDs
	wantOK(h.t.(*testing.T), "join", h.submitRemote(r.RoomID, r.Version, ie))
	return join, stateIDs
}

// Backfilled events: placed before the joined room's timeline, checked against the state
// before them, with no change to the current state or the extremities, and output newest
// first.
func TestBackfilledInput(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		out := test.FollowTopic(t, h.log, "out")
		alice, carol, local := "@alice:"+remoteServer, "@carol:"+remoteServer, "@local:"+serverName
		r := newRemoteRoom(t, alice)
		hv := r.Event(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"}, 5, r.pdus(r.jr), r.pdus(r.create, r.aliceJoin, r.pl))
		msgs := []gomatrixserverlib.PDU{}
		prev := hv
		for i := range 5 {
			prev = r.Event(alice, "m.room.message", nil, map[string]string{"body": fmt.Sprint(i)}, int64(6+i), r.pdus(prev), r.pdus(r.create, r.aliceJoin, r.pl))
			msgs = append(msgs, prev)
		}
		state := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, hv}
		join, stateIDs := h.joinAt(r, local, state, msgs[4])
		if got := outputs(t, out, 1); got[0] != "new "+join.EventID() {
			t.Fatalf("join output %v", got)
		}
		current := h.currentState(r.RoomID)

		// Nothing to build on and no state given: 404, the writer's cue to fetch the state.
		res := h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindBackfilled, msgs[4]))
		if res[0].Err == nil || res[0].Err.Code != "M_NOT_FOUND" {
			t.Fatalf("backfilled event after a gap: %+v", res[0])
		}
		// The newest three messages, the oldest with the state before it.
		first := roomtest.Input(api.KindBackfilled, msgs[2])
		first.StateEventIDs = stateIDs
		wantOK(t, "first backfill", h.submitRemote(r.RoomID, r.Version, first,
			roomtest.Input(api.KindBackfilled, msgs[3]), roomtest.Input(api.KindBackfilled, msgs[4])))
		// Then the rest, down to the create event (stored as outliers until now).
		var rest []api.InputRoomEvent
		for _, ev := range append(state, msgs[:2]...) {
			rest = append(rest, roomtest.Input(api.KindBackfilled, ev))
		}
		wantOK(t, "second backfill", h.submitRemote(r.RoomID, r.Version, rest...))
		want := []string{"backfilled " + msgs[4].EventID() + " joined", "backfilled " + msgs[3].EventID() + " joined", "backfilled " + msgs[2].EventID() + " joined",
			"backfilled " + msgs[1].EventID() + " joined", "backfilled " + msgs[0].EventID() + " joined", "backfilled " + hv.EventID() + " shared",
			"backfilled " + r.jr.EventID() + " shared", "backfilled " + r.pl.EventID() + " shared", "backfilled " + r.aliceJoin.EventID() + " shared",
			"backfilled " + r.create.EventID() + " shared"}
		if got := outputs(t, out, 11)[1:]; !slices.Equal(got, want) {
			t.Fatalf("backfill outputs\n got %v\nwant %v", got, want)
		}
		// A backfilled event that fails auth against the state before it is rejected.
		stranger := r.Event(carol, "m.room.message", nil, map[string]string{"body": "spam"}, 7, r.pdus(msgs[0]), r.pdus(r.create, r.pl))
		res = h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindBackfilled, stranger))
		if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("stranger's backfilled message: %+v", res[0])
		}
		// The current state and the extremities did not move; a replay outputs nothing.
		if got := h.currentState(r.RoomID); !maps.Equal(got, current) {
			t.Fatalf("current state changed: %v", got)
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{join.EventID()}) {
			t.Fatalf("extremities %v %v", info.LatestEventIDs, err)
		}
		wantOK(t, "replay", h.submitRemote(r.RoomID, r.Version, rest...))
		res = h.submit(api.InputRoomEvents{RoomID: r.RoomID, Events: []api.InputRoomEvent{roomtest.Proto(local, "m.room.message", nil, map[string]string{"body": "hello"})}})
		wantOK(t, "local message", res)
		if got := outputs(t, out, 12)[11]; got != "new "+res[0].EventID {
			t.Fatalf("output after the replay %v", got)
		}
	})
}

// outputEvents are the events of the OutputRoomEvents in recs, by ID, as output, with the
// redaction target each names.
func outputEvents(t *testing.T, f *test.Follow, n int) (events map[string]gomatrixserverlib.PDU, redacts map[string]string) {
	t.Helper()
	events, redacts = map[string]gomatrixserverlib.PDU{}, map[string]string{}
	for _, rec := range f.Wait(t, n, 10*time.Second) {
		var o api.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			t.Fatal(err)
		}
		ev, target := api.Event{}, ""
		if o.Type == api.OutputTypeBackfilledEvent {
			ev, target = o.BackfilledEvent.Event, o.BackfilledEvent.RedactsEventID
		} else {
			ev, target = o.NewRoomEvent.Event, o.NewRoomEvent.RedactsEventID
		}
		events[ev.EventID()] = ev.PDU
		if target != "" {
			redacts[ev.EventID()] = target
		}
	}
	return events, redacts
}

// storedContent is the content of the stored event, as queries return it.
func (h *harness) storedContent(roomID, eventID string) string {
	h.t.Helper()
	res, err := h.rs.API().QueryEventsByID(context.Background(), &api.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{eventID}})
	if err != nil || len(res.Events) != 1 {
		h.t.Fatalf("event %s: %v %v", eventID, res, err)
	}
	return string(res.Events[0].Content())
}

// Redactions from other servers apply whatever the order their target arrives in: a
// redaction received before its target (on another branch), a backfilled redaction of an
// event backfilled with it, and one whose target comes a backfill page later. A redaction
// by a user of another server without the power to redact is stored and never applied.
func TestRedactionsInAnyOrder(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		out := test.FollowTopic(t, h.log, "out")
		alice, carol, local := "@alice:"+remoteServer, "@carol:third.test", "@local:"+serverName
		r := newRemoteRoom(t, alice)
		auth := r.pdus(r.create, r.aliceJoin, r.pl)
		message := func(sender, body string, depth int64, prev gomatrixserverlib.PDU, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
			return r.Event(sender, "m.room.message", nil, map[string]string{"body": body}, depth, r.pdus(prev), auth)
		}
		redaction := func(sender string, target gomatrixserverlib.PDU, depth int64, prev gomatrixserverlib.PDU, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
			return r.Event(sender, spec.MRoomRedaction, nil, map[string]string{"redacts": target.EventID()}, depth, r.pdus(prev), auth)
		}
		carolJoin := r.Event(carol, spec.MRoomMember, roomtest.StateKey(carol), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
		carolAuth := r.pdus(r.create, r.pl, carolJoin)
		// Old history, to backfill in two pages, newest first: [b4 b5 b6], then [b0 b1 b2 b3].
		// b3 redacts b1 (same page), b4 redacts b2 (a page earlier), carol's b6 cannot
		// redact b5.
		b0 := message(alice, "b0", 6, carolJoin, auth)
		b1 := message(alice, "secret one", 7, b0, auth)
		b2 := message(alice, "secret two", 8, b1, auth)
		b3 := redaction(alice, b1, 9, b2, auth)
		b4 := redaction(alice, b2, 10, b3, auth)
		b5 := message(alice, "kept", 11, b4, auth)
		b6 := redaction(carol, b5, 12, b5, carolAuth)
		join, stateIDs := h.joinAt(r, local, []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, carolJoin}, b6)

		// The newest page: b4 redacts b2, which is not here yet; b6 cannot redact b5.
		page := []api.InputRoomEvent{roomtest.Input(api.KindBackfilled, b4), roomtest.Input(api.KindBackfilled, b5), roomtest.Input(api.KindBackfilled, b6)}
		page[0].StateEventIDs = stateIDs
		wantOK(t, "first page", h.submitRemote(r.RoomID, r.Version, page...))
		// The older page: b2 arrives after its redaction; b3 redacts b1 of the same page.
		page = []api.InputRoomEvent{roomtest.Input(api.KindBackfilled, b0), roomtest.Input(api.KindBackfilled, b1),
			roomtest.Input(api.KindBackfilled, b2), roomtest.Input(api.KindBackfilled, b3)}
		page[0].StateEventIDs = stateIDs
		wantOK(t, "second page", h.submitRemote(r.RoomID, r.Version, page...))

		// On another branch, from the join: a redaction of m2 arrives before m2 itself.
		m1 := message(alice, "visible", 14, join, auth)
		m2 := message(alice, "secret three", 15, m1, auth)
		m3 := redaction(alice, m2, 15, m1, auth)
		wantOK(t, "m1", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, m1)))
		wantOK(t, "m3", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, m3)))
		wantOK(t, "m2", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, m2)))

		events, redacts := outputEvents(t, out, 11)
		for _, ev := range []gomatrixserverlib.PDU{b1, b2, m2} {
			if got := string(events[ev.EventID()].Content()); got != "{}" {
				t.Errorf("output of redacted %s has content %s", ev.EventID(), got)
			}
			if got := h.storedContent(r.RoomID, ev.EventID()); got != "{}" {
				t.Errorf("stored redacted %s has content %s", ev.EventID(), got)
			}
		}
		for _, ev := range []gomatrixserverlib.PDU{b0, b5, m1} {
			if got := string(events[ev.EventID()].Content()); got != string(ev.Content()) {
				t.Errorf("output of %s has content %s, want %s", ev.EventID(), got, ev.Content())
			}
			if got := h.storedContent(r.RoomID, ev.EventID()); got != string(ev.Content()) {
				t.Errorf("stored %s has content %s, want %s", ev.EventID(), got, ev.Content())
			}
		}
		// Only b3 found its target stored when it arrived; readers redact their copy then.
		if want := map[string]string{b3.EventID(): b1.EventID()}; !maps.Equal(redacts, want) {
			t.Errorf("redactions applied on arrival %v, want %v", redacts, want)
		}
	})
}

// Two redactions from another server that redact each other, in a room version whose
// redaction algorithm strips "redacts": the first arrives before its target, so the second
// is stored redacted on arrival, yet it is authorised as it was sent (the redacted form has
// no target to check) and accepted; sytest "A pair of events which redact each other
// should be ignored".
func TestRedactionsRedactingEachOther(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob := "@alice:"+remoteServer, "@bob:"+remoteServer
		r := newRemoteRoomOfVersion(t, alice, gomatrixserverlib.RoomVersionV1)
		bobJoin := r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5, r.pdus(r.jr), r.pdus(r.create, r.pl, r.jr))
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, bobJoin} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room", h.submitRemote(r.RoomID, r.Version, in...))
		auth := r.pdus(r.create, r.pl, bobJoin)
		secondID := "$second:" + remoteServer
		first := r.Event(bob, spec.MRoomRedaction, nil, map[string]string{"redacts": secondID}, 6, r.pdus(bobJoin), auth)
		second := r.EventWithID(secondID, bob, spec.MRoomRedaction, nil, map[string]string{"redacts": first.EventID()}, 7, r.pdus(first), auth)
		wantOK(t, "first redaction", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, first)))
		wantOK(t, "second redaction", h.submitRemote(r.RoomID, r.Version, roomtest.Input(api.KindFederated, second)))
	})
}

// Events from another server whose type, state key or sender hold NUL are rejected before
// anything is looked up: PostgreSQL refuses such text even in a query, so one of them used
// to fail its batch for ever there (and stall the partition), while SQLite stored it. The
// same events are rejected on both engines, and the room's next event is accepted.
func TestUnstorableIdentifiersRejected(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice := "@alice:" + remoteServer
		r := newRemoteRoom(t, alice)
		var in []api.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr} {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		wantOK(t, "room", h.submitRemote(r.RoomID, r.Version, in...))
		auth := r.pdus(r.create, r.pl, r.aliceJoin)
		bad := []gomatrixserverlib.PDU{
			r.Event(alice, "m.x\x00y", roomtest.StateKey(""), map[string]string{"a": "b"}, 5, r.pdus(r.jr), auth),
			r.Event(alice, "m.x", roomtest.StateKey("a\x00"), map[string]string{"a": "b"}, 5, r.pdus(r.jr), auth),
			r.Event(alice, "m.x\x00", nil, map[string]string{"a": "b"}, 5, r.pdus(r.jr), auth),
			r.Event(alice, spec.MRoomMember, roomtest.StateKey("@b\x00:"+remoteServer), map[string]string{"membership": "invite"}, 5, r.pdus(r.jr), auth),
		}
		good := r.Event(alice, "m.room.message", nil, map[string]string{"body": "after"}, 5, r.pdus(r.jr), auth)
		in = nil
		for _, ev := range append(bad, good) {
			in = append(in, roomtest.Input(api.KindFederated, ev))
		}
		res := h.submitRemote(r.RoomID, r.Version, in...)
		for i := range bad {
			if res[i].Err == nil || res[i].Err.Code != "M_BAD_JSON" || res[i].EventID != bad[i].EventID() {
				t.Errorf("event %d with NUL: %+v", i, res[i])
			}
		}
		wantOK(t, "the event after them", res[len(bad):])
		if got := h.currentState(r.RoomID, api.StateKeyTuple{EventType: "m.x"}); len(got) != 0 {
			t.Fatalf("a rejected state event is in the room's state: %v", got)
		}
	})
}

// A local user who left a room (this server's last member) and is invited back joins it
// through another server (api.KindRemoteJoin): the state that server answers replaces this
// server's stale copy, in which the join would fail (the user left, the room is
// invite-only, and the new invite never reached it): the join is not soft-failed, it is
// the room's only forward extremity, and readers get the state that changed meanwhile.
func TestRemoteRejoinReplacesStaleCopy(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, local := "@alice:"+remoteServer, "@local:"+serverName
		r := &remoteRoom{Remote: &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: remoteServer, Version: gomatrixserverlib.RoomVersionV10,
			RoomID: fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), remoteServer)}}
		r.create = roomtest.CreateEvent(t, r.Key, remoteServer, r.Version, alice, r.RoomID)
		r.aliceJoin = r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}, 2, r.pdus(r.create), r.pdus(r.create))
		r.pl = r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{alice: 100}}, 3, r.pdus(r.aliceJoin), r.pdus(r.create, r.aliceJoin))
		r.jr = r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "invite"}, 4, r.pdus(r.pl), r.pdus(r.create, r.aliceJoin, r.pl))
		invite := r.Event(alice, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "invite"}, 5, r.pdus(r.jr), r.pdus(r.create, r.aliceJoin, r.pl, r.jr))
		state := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, invite}
		var in []api.InputRoomEvent
		var stateIDs []string
		for _, ev := range state {
			in = append(in, roomtest.Input(api.KindOutlier, ev))
			stateIDs = append(stateIDs, ev.EventID())
		}
		wantOK(t, "outliers", h.submitRemote(r.RoomID, r.Version, in...))
		join := r.Event(local, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "join"}, 6, r.pdus(invite), r.pdus(r.create, r.pl, r.jr, invite))
		ie := roomtest.Input(api.KindRemoteJoin, join)
		ie.StateEventIDs = stateIDs
		wantOK(t, "first join", h.submitRemote(r.RoomID, r.Version, ie))
		res := h.submit(api.InputRoomEvents{RoomID: r.RoomID, Events: []api.InputRoomEvent{roomtest.Proto(local, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "leave"})}})
		wantOK(t, "leave", res)
		evs, err := h.rs.API().QueryEventsByID(context.Background(), &api.QueryEventsByIDRequest{RoomID: r.RoomID, EventIDs: []string{res[0].EventID}})
		if err != nil || len(evs.Events) != 1 {
			t.Fatalf("the leave: %+v %v", evs, err)
		}
		leave := evs.Events[0].PDU
		out := test.FollowTopic(t, h.log, "out")

		// Meanwhile, unseen here: alice names the room and invites the user again.
		name := r.Event(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "later"}, 8, r.pdus(leave), r.pdus(r.create, r.aliceJoin, r.pl))
		invite2 := r.Event(alice, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "invite"}, 9, r.pdus(name), r.pdus(r.create, r.aliceJoin, r.pl, r.jr, leave))
		state2 := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr, name, invite2}
		in, stateIDs = nil, nil
		for _, ev := range state2 {
			in = append(in, roomtest.Input(api.KindOutlier, ev))
			stateIDs = append(stateIDs, ev.EventID())
		}
		wantOK(t, "outliers of the rejoin", h.submitRemote(r.RoomID, r.Version, in...))
		rejoin := r.Event(local, spec.MRoomMember, roomtest.StateKey(local), map[string]string{"membership": "join"}, 10, r.pdus(invite2), r.pdus(r.create, r.pl, r.jr, invite2))
		ie = roomtest.Input(api.KindRemoteJoin, rejoin)
		ie.StateEventIDs = stateIDs
		wantOK(t, "rejoin", h.submitRemote(r.RoomID, r.Version, ie))

		if m := h.membership(r.RoomID, local); m != spec.Join {
			t.Fatalf("local user's membership after the rejoin %q", m)
		}
		cur := h.currentState(r.RoomID)
		if cur[spec.MRoomName+"|"] != name.EventID() || cur[spec.MRoomMember+"|"+local] != rejoin.EventID() || len(cur) != 6 {
			t.Fatalf("current state after the rejoin %v", cur)
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{rejoin.EventID()}) {
			t.Fatalf("extremities after the rejoin %v (%v)", info.LatestEventIDs, err)
		}
		var o api.OutputRoomEvent
		if err := json.Unmarshal(out.Wait(t, 1, 10*time.Second)[0].Value, &o); err != nil {
			t.Fatal(err)
		}
		added, removed := o.NewRoomEvent.AddsStateEventIDs, o.NewRoomEvent.RemovesStateEventIDs
		slices.Sort(added)
		want := []string{name.EventID(), rejoin.EventID()}
		slices.Sort(want)
		if o.NewRoomEvent.Event.EventID() != rejoin.EventID() || !slices.Equal(added, want) || !slices.Equal(removed, []string{leave.EventID()}) {
			t.Fatalf("rejoin output: adds %v removes %v", added, removed)
		}
		// Local events build on the rejoin alone.
		res = h.submit(api.InputRoomEvents{RoomID: r.RoomID, Events: []api.InputRoomEvent{roomtest.Proto(local, "m.room.message", nil, map[string]string{"body": "back"})}})
		wantOK(t, "local message after the rejoin", res)
	})
}

// One batch holds local and remote messages of a room: a federated event and a local
// user's message produced together are applied in log order, the local event built on
// the room as the federated one left it (its only prev event, and the only forward
// extremity after it).
func TestLocalAndRemoteMessagesInOneBatch(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, local := "@alice:"+remoteServer, "@local:"+serverName
		r := newRemoteRoom(t, alice)
		join, _ := h.joinAt(r, local, []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr}, r.jr)
		out := test.FollowTopic(t, h.log, "out")
		remote := r.Event(alice, "m.room.message", nil, map[string]string{"body": "remote"}, join.Depth()+1, r.pdus(join), r.pdus(r.create, r.pl, r.aliceJoin))
		var msgs []eventlog.Message
		for _, in := range []api.InputRoomEvents{
			{RoomID: r.RoomID, RoomVersion: string(r.Version), Events: []api.InputRoomEvent{roomtest.Input(api.KindFederated, remote)}},
			{RoomID: r.RoomID, Events: []api.InputRoomEvent{roomtest.Proto(local, "m.room.message", nil, map[string]string{"body": "local"})}},
		} {
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, eventlog.Message{Key: []byte(r.RoomID), Value: b})
		}
		if _, err := h.log.Produce(context.Background(), "in", msgs...); err != nil {
			t.Fatal(err)
		}
		events, _ := outputEvents(t, out, 2)
		var localEv gomatrixserverlib.PDU
		for id, ev := range events {
			if id != remote.EventID() {
				localEv = ev
			}
		}
		if events[remote.EventID()] == nil || localEv == nil {
			t.Fatalf("outputs %v, want the remote event and the local one", events)
		}
		if !slices.Equal(localEv.PrevEventIDs(), []string{remote.EventID()}) {
			t.Fatalf("local event's prev events %v, want [%s]", localEv.PrevEventIDs(), remote.EventID())
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || !slices.Equal(info.LatestEventIDs, []string{localEv.EventID()}) {
			t.Fatalf("forward extremities %+v %v, want only the local event", info, err)
		}
	})
}
