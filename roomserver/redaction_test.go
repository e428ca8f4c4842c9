package roomserver_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// redactionContent is a redaction's content: from room version 11 "redacts" is a content
// key (rooms v11, "Event format"); before, a top-level key the builder sets.
func redactionContent(version gomatrixserverlib.RoomVersion, targetID string) map[string]string {
	if n, _ := strconv.Atoi(string(version)); n >= 11 {
		return map[string]string{"redacts": targetID}
	}
	return map[string]string{}
}

// TestLocalRedactionPermission: who may redact whose event, for local users, in every room
// version offered. "Handling redactions" (rooms v3+; rule 11 of the v1 auth rules): the
// redaction applies if the sender's power level is at least the redact level, or the
// senders' servers are the same. For its own users the server is the one that vouches, and
// the client-server API's rule applies: a user redacts their own events, or others' with
// the redact level (a local user without power is refused, not trusted for being local).
// From v12 the room's creators have infinite power and are not listed in users.
func TestLocalRedactionPermission(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, mod, bob, carol := "@alice:"+serverName, "@mod:"+serverName, "@bob:"+serverName, "@carol:"+serverName
		cases := []struct {
			name             string
			redactLevel      int // 0 leaves the default (50)
			target, redactor string
			allowed          bool
		}{
			{name: "own event", target: bob, redactor: bob, allowed: true},
			{name: "another's event at the redact level", target: bob, redactor: mod, allowed: true},
			{name: "another's event below the redact level", target: bob, redactor: carol},
			{name: "another's event below a raised redact level", redactLevel: 60, target: bob, redactor: mod},
			{name: "a higher user's event at the redact level", target: alice, redactor: mod, allowed: true},
			{name: "the creator redacts another's event", target: bob, redactor: alice, allowed: true},
		}
		for _, version := range offeredVersions() {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("v%s %s", version, tc.name), func(t *testing.T) {
					roomID := h.newRoom(version, alice)
					pl := powerLevels(version, alice)
					pl["users"] = withUser(pl["users"], mod, 50)
					if tc.redactLevel != 0 {
						pl["redact"] = tc.redactLevel
					}
					join := func(u string) api.InputRoomEvent {
						return roomtest.Proto(u, spec.MRoomMember, roomtest.StateKey(u), map[string]string{"membership": "join"})
					}
					wantOK(t, "room", h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
						join(mod), join(bob), join(carol), roomtest.Proto(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), pl),
					}}))
					targetID := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
						roomtest.Proto(tc.target, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "secret"}),
					}})[0].EventID
					redaction := roomtest.Proto(tc.redactor, spec.MRoomRedaction, nil, redactionContent(version, targetID))
					redaction.Proto.Redacts = targetID
					res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{redaction}})
					content := h.storedContent(roomID, targetID)
					if tc.allowed {
						wantOK(t, "redaction", res)
						if content != "{}" {
							t.Fatalf("target not redacted: %s", content)
						}
						return
					}
					if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
						t.Fatalf("redaction without the power: %+v", res[0])
					}
					if content == "{}" {
						t.Fatal("target redacted by a refused redaction")
					}
				})
			}
		}
	})
}

// TestFederatedRedactionPermission: a redaction from another server applies to its target
// when "the power level of the redaction event's sender is greater than or equal to the
// redact level" or "the domain of the redaction event's sender matches that of the original
// event's sender" (rooms v3+, "Handling redactions"; rule 11 of the v1 auth rules). A
// redaction that may not apply is kept (or rejected by the v1-2 auth rules) and its target
// stays whole. From v12 the creator has infinite power without a users entry.
func TestFederatedRedactionPermission(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob := "@alice:"+remoteServer, "@bob:"+remoteServer
		carol, dave := "@carol:third.test", "@dave:third.test"
		cases := []struct {
			name             string
			target, redactor string
			applied          bool
		}{
			{name: "own event", target: carol, redactor: carol, applied: true},
			{name: "same server without power", target: alice, redactor: bob, applied: true},
			{name: "another server without power", target: bob, redactor: carol},
			{name: "another server at the redact level", target: bob, redactor: dave, applied: true},
			{name: "the creator redacts another server's event", target: carol, redactor: alice, applied: true},
		}
		for _, version := range offeredVersions() {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("v%s %s", version, tc.name), func(t *testing.T) {
					rooms := newRemoteRooms(t, version, alice, "third.test")
					r := rooms[remoteServer]
					pl := powerLevels(version, alice)
					pl["users"] = withUser(pl["users"], dave, 50)
					plEv := r.Event(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), pl, 3, r.pdus(r.aliceJoin), r.auth(r.create, r.aliceJoin))
					jr := r.Event(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, r.pdus(plEv), r.auth(r.create, r.aliceJoin, plEv))
					evs := []gomatrixserverlib.PDU{r.create, r.aliceJoin, plEv, jr}
					joins := map[string]gomatrixserverlib.PDU{alice: r.aliceJoin}
					for _, u := range []string{bob, carol, dave} {
						ev := rooms[serverOf(u)].Event(u, spec.MRoomMember, roomtest.StateKey(u), map[string]string{"membership": "join"},
							int64(len(evs)+1), r.pdus(evs[len(evs)-1]), r.auth(r.create, plEv, jr))
						joins[u] = ev
						evs = append(evs, ev)
					}
					target := rooms[serverOf(tc.target)].Event(tc.target, "m.room.message", nil, map[string]string{"body": "secret"},
						int64(len(evs)+1), r.pdus(evs[len(evs)-1]), r.auth(r.create, plEv, joins[tc.target]))
					evs = append(evs, target)
					var in []api.InputRoomEvent
					for _, ev := range evs {
						in = append(in, roomtest.Input(api.KindFederated, ev))
					}
					wantOK(t, "room", h.submitRemote(r.RoomID, version, in...))
					content := redactionContent(version, target.EventID())
					content["redacts"] = target.EventID()
					redaction := rooms[serverOf(tc.redactor)].Event(tc.redactor, spec.MRoomRedaction, nil, content,
						int64(len(evs)+1), r.pdus(target), r.auth(r.create, plEv, joins[tc.redactor]))
					res := h.submitRemote(r.RoomID, version, roomtest.Input(api.KindFederated, redaction))
					got := h.storedContent(r.RoomID, target.EventID())
					if tc.applied {
						wantOK(t, "redaction", res)
						if got != "{}" {
							t.Fatalf("target not redacted: %s", got)
						}
					} else if got == "{}" {
						t.Fatalf("redaction applied without the power (result %+v)", res[0])
					}
				})
			}
		}
	})
}

// newRemoteRooms is one room of the version built by remoteServer (with the creator alice
// joined) and a builder for each other server named, all in the same room.
func newRemoteRooms(t *testing.T, version gomatrixserverlib.RoomVersion, alice string, others ...string) map[string]*remoteRoom {
	roomID := ""
	if version != gomatrixserverlib.RoomVersionV12 {
		roomID = fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), remoteServer)
	}
	key := roomtest.NewKey(t)
	create := roomtest.CreateEvent(t, key, remoteServer, version, alice, roomID)
	r := &remoteRoom{Remote: &roomtest.Remote{T: t, Key: key, Origin: remoteServer, Version: version, RoomID: create.RoomID().String()}, create: create}
	r.aliceJoin = r.Event(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}, 2, r.pdus(create), r.auth(create))
	out := map[string]*remoteRoom{remoteServer: r}
	for _, o := range others {
		rr := *r
		rr.Remote = &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: spec.ServerName(o), Version: version, RoomID: r.RoomID}
		out[o] = &rr
	}
	return out
}

// auth is evs as an event's auth_events: without the create event from room version 12,
// whose room ID names it ("Auth events selection").
func (r *remoteRoom) auth(evs ...gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	if r.Version != gomatrixserverlib.RoomVersionV12 {
		return evs
	}
	var out []gomatrixserverlib.PDU
	for _, ev := range evs {
		if ev.Type() != spec.MRoomCreate {
			out = append(out, ev)
		}
	}
	return out
}

// serverOf is the server name of a user ID.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// offeredVersions are the room versions this server offers (createRoom, /capabilities).
func offeredVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for _, v := range []gomatrixserverlib.RoomVersion{
		gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
		gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
		gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12,
	} {
		if gomatrixserverlib.StableRoomVersion(v) {
			out = append(out, v)
		}
	}
	return out
}

// withUser adds a user's level to a power levels users map (nil for none).
func withUser(users any, userID string, level int) map[string]int {
	out := map[string]int{userID: level}
	if m, ok := users.(map[string]int); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
