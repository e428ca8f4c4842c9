package roomserver_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestStateResolution: the state before an event whose prev_events are two branches is
// the resolution of the branches' states, with the room version's algorithm (rooms v1:
// state resolution v1; v2 onwards: v2; v12: v2.1). Each branch starts from the same state:
// alice (creator) and bob (power 50, so he may send state) joined, topic T0. In every
// algorithm, conflicted power events are resolved first and the other conflicted events
// must pass the auth rules against them, so a demotion or ban on one branch undoes what
// its target did on the other; state set on one branch only is kept as it is (Dendrite
// hands only the conflicted events and their auth needs to the algorithm).
func TestStateResolution(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob := "@alice:"+remoteServer, "@bob:"+remoteServer
		type fork struct {
			r                        *remoteRoom
			pl, bobJoin, topic0, tip gomatrixserverlib.PDU
			depth                    int64
		}
		// branch events are built on the common state by ev(f, sender, type, content).
		ev := func(f *fork, prev gomatrixserverlib.PDU, sender, evType string, content any, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
			stateKey := roomtest.StateKey("")
			if evType == spec.MRoomMember {
				stateKey = roomtest.StateKey(bob)
			}
			return f.r.Event(sender, evType, stateKey, content, prev.Depth()+1, f.r.pdus(prev), f.r.auth(append([]gomatrixserverlib.PDU{f.r.create, f.pl}, auth...)...))
		}
		bobAt := func(f *fork, level int) map[string]any {
			pl := powerLevels(f.r.Version, alice)
			pl["users"] = withUser(pl["users"], bob, level)
			return pl
		}
		cases := []struct {
			name string
			// a and b build the two branches' events after the common state, in order; a
			// is built after b.
			a func(f *fork, b []gomatrixserverlib.PDU) []gomatrixserverlib.PDU
			b func(f *fork) []gomatrixserverlib.PDU
			// want maps a state type to the index of the winning event: "a0", "b1" or
			// "topic0" for the common topic.
			want map[string]string
			// wantV1 replaces want in room version 1 (state resolution v1).
			wantV1 map[string]string
		}{
			{
				name: "a demotion on one branch undoes the demoted user's topic on the other",
				a: func(f *fork, _ []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, alice, spec.MRoomPowerLevels, bobAt(f, 0), f.r.aliceJoin)}
				},
				b: func(f *fork) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, bob, "m.room.topic", map[string]string{"topic": "B"}, f.bobJoin)}
				},
				want: map[string]string{spec.MRoomPowerLevels: "a0", "m.room.topic": "topic0"},
			},
			{
				name: "a ban on one branch undoes the banned user's topic on the other",
				a: func(f *fork, _ []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, alice, spec.MRoomMember, map[string]string{"membership": "ban"}, f.r.aliceJoin, f.bobJoin)}
				},
				b: func(f *fork) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, bob, "m.room.topic", map[string]string{"topic": "B"}, f.bobJoin)}
				},
				want: map[string]string{spec.MRoomMember: "a0", "m.room.topic": "topic0"},
			},
			{
				name: "state set on one branch only is kept",
				a: func(f *fork, _ []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, alice, "m.room.name", map[string]string{"name": "A"}, f.r.aliceJoin)}
				},
				b: func(f *fork) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, bob, "m.room.avatar", map[string]string{"url": "mxc://b/c"}, f.bobJoin)}
				},
				want: map[string]string{"m.room.name": "a0", "m.room.avatar": "b0", "m.room.topic": "topic0", spec.MRoomPowerLevels: "pl"},
			},
			{
				// v2: conflicted events pass "iterative auth checks" against the partially
				// resolved state, which holds the resolved power levels already.
				name: "a demotion undoes its target's conflicted state on its own branch too",
				a: func(f *fork, _ []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
					topic := ev(f, f.tip, bob, "m.room.topic", map[string]string{"topic": "A"}, f.bobJoin)
					return []gomatrixserverlib.PDU{topic, ev(f, topic, alice, spec.MRoomPowerLevels, bobAt(f, 0), f.r.aliceJoin)}
				},
				b: func(f *fork) []gomatrixserverlib.PDU {
					return []gomatrixserverlib.PDU{ev(f, f.tip, alice, "m.room.name", map[string]string{"name": "B"}, f.r.aliceJoin)}
				},
				want: map[string]string{spec.MRoomPowerLevels: "a1", "m.room.topic": "topic0", "m.room.name": "b0"},
			},
			{
				// Two valid topics by alice: v1 keeps the deeper one (rooms v1, "State
				// resolution": conflicts are ordered by depth, then event ID); v2 orders
				// non-power events by mainline position, then origin_server_ts, then event
				// ID, and keeps the last. Branch b's topic is deeper; a's is newer.
				name: "two valid topics: v1 keeps the deeper, v2 the newer",
				b: func(f *fork) []gomatrixserverlib.PDU {
					name := ev(f, f.tip, alice, "m.room.name", map[string]string{"name": "B"}, f.r.aliceJoin)
					return []gomatrixserverlib.PDU{name, ev(f, name, alice, "m.room.topic", map[string]string{"topic": "B"}, f.r.aliceJoin)}
				},
				a: func(f *fork, b []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
					for { // built until its timestamp is later than b's topic's
						if topic := ev(f, f.tip, alice, "m.room.topic", map[string]string{"topic": "A"}, f.r.aliceJoin); topic.OriginServerTS() > b[1].OriginServerTS() {
							return []gomatrixserverlib.PDU{topic}
						}
					}
				},
				want:   map[string]string{"m.room.topic": "a0", "m.room.name": "b0"},
				wantV1: map[string]string{"m.room.topic": "b1", "m.room.name": "b0"},
			},
		}
		versions := []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2,
			gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12}
		for _, v := range versions {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("v%s %s", v, tc.name), func(t *testing.T) {
					f := &fork{r: newRemoteRooms(t, v, alice)[remoteServer]}
					r := f.r
					f.pl = r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), bobAt(f, 50), 3, r.pdus(r.aliceJoin), r.auth(r.create, r.aliceJoin))
					jr := r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, r.pdus(f.pl), r.auth(r.create, r.aliceJoin, f.pl))
					f.bobJoin = r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5, r.pdus(jr), r.auth(r.create, f.pl, jr))
					f.topic0 = r.Event(alice, "m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "T0"}, 6, r.pdus(f.bobJoin), r.auth(r.create, f.pl, r.aliceJoin))
					f.tip = f.topic0
					b := tc.b(f)
					a := tc.a(f, b)
					var in []api.InputRoomEvent
					// Branch b first: its events pass against the current state then, and are
					// not soft-failed for a demotion or ban that branch a brings.
					for _, e := range append([]gomatrixserverlib.PDU{r.create, r.aliceJoin, f.pl, jr, f.bobJoin, f.topic0}, append(b, a...)...) {
						in = append(in, roomtest.Input(api.KindFederated, e))
					}
					wantOK(t, "room and branches", h.submitRemote(r.RoomID, v, in...))
					merge := r.Event(alice, "m.room.message", nil, map[string]string{"body": "merge"}, max(a[len(a)-1].Depth(), b[len(b)-1].Depth())+1,
						r.pdus(a[len(a)-1], b[len(b)-1]), r.auth(r.create, f.pl, r.aliceJoin))
					wantOK(t, "merge", h.submitRemote(r.RoomID, v, roomtest.Input(api.KindFederated, merge)))
					st, err := h.rs.API().QueryStateAtEvent(context.Background(), &api.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: merge.EventID()})
					if err != nil || !st.EventKnown {
						t.Fatalf("state before the merge: %v", err)
					}
					named := map[string]gomatrixserverlib.PDU{"topic0": f.topic0, "pl": f.pl}
					for i, e := range a {
						named[fmt.Sprintf("a%d", i)] = e
					}
					for i, e := range b {
						named[fmt.Sprintf("b%d", i)] = e
					}
					want := tc.want
					if v == gomatrixserverlib.RoomVersionV1 && tc.wantV1 != nil {
						want = tc.wantV1
					}
					for evType, name := range want {
						stateKey := ""
						if evType == spec.MRoomMember {
							stateKey = bob
						}
						var got string
						for _, s := range st.StateEvents {
							if s.Type() == evType && *s.StateKey() == stateKey {
								got = s.EventID()
							}
						}
						if got != named[name].EventID() {
							t.Errorf("%s resolved to %s, want %s (%s)", evType, got, name, named[name].EventID())
						}
					}
				})
			}
		}
	})
}
