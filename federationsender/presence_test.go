package federationsender_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/presenceserver"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// startPresence runs a presenceserver on db and log in which each of online set their
// presence online, and returns its query API once it answers so for all of them. Its output
// goes to a topic the federationsender does not read, so that only room changes send
// presence.
func startPresence(t *testing.T, db *sqlutil.DB, log eventlog.Log, online ...string) presenceapi.QueryAPI {
	t.Helper()
	cfg := config.Defaults().PresenceServer
	ps, err := presenceserver.New(t.Context(), presenceserver.Deps{Cfg: &cfg, DB: db, Log: log, InputTopic: presenceapi.TopicInputPresence,
		OutputTopic: "unread." + presenceapi.TopicOutputPresenceEvent, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ps.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("presenceserver run: %v", err)
		}
	})
	for _, u := range online {
		produceJSON(t, log, presenceapi.TopicInputPresence, u, presenceapi.InputPresenceEvent{UserID: u, Kind: presenceapi.InputKindSet,
			Presence: presenceapi.Online, TS: time.Now().UnixMilli()})
	}
	deadline := time.Now().Add(eventually)
	for _, u := range online {
		for {
			res, err := ps.API().QueryPresence(t.Context(), &presenceapi.QueryPresenceRequest{UserID: u})
			if err != nil {
				t.Fatal(err)
			}
			if res.Presence.Presence == presenceapi.Online {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %s, want online", u, res.Presence.Presence)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return ps.API()
}

// presencePushes are the users of each m.presence EDU in edus, in order, as "user presence".
func presencePushes(t *testing.T, edus []gomatrixserverlib.EDU) [][]string {
	t.Helper()
	var out [][]string
	for _, e := range edus {
		if e.Type != "m.presence" {
			continue
		}
		var c struct {
			Push []struct {
				UserID        string `json:"user_id"`
				Presence      string `json:"presence"`
				LastActiveAgo *int64 `json:"last_active_ago"`
			} `json:"push"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			t.Fatal(err)
		}
		var users []string
		for _, p := range c.Push {
			if p.LastActiveAgo == nil {
				t.Fatalf("presence without last_active_ago: %s", e.Content)
			}
			users = append(users, p.UserID+" "+p.Presence)
		}
		out = append(out, users)
	}
	return out
}

// TestPresenceSentToServersJoiningRoom: when a room gains a server, that server gets the
// presence of our users in the room, and when one of our users joins a room, every other
// server in it gets theirs (what lets both sides of a new federated chat show each other's
// presence at once, sytest's "New federated private chats get full presence information
// (SYN-115)"). Offline users are not sent, and a join of a member already joined (a profile
// change) or of another server's user to a server already there sends nothing.
func TestPresenceSentToServersJoiningRoom(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		log := test.EmbeddedLog(t, 1) // one partition: room events are applied in the order written
		a, a2, off := ts.a.user("a"), ts.a.user("a2"), ts.a.user("off")
		presence := startPresence(t, db, log, a, a2)
		// The room as the sender first sees it: A's and B's users joined, C's not yet.
		create := ts.a.event(t, ts.roomID, a, spec.MRoomCreate, new(string), map[string]string{"room_version": string(testRoomVersion)})
		ts.rooms.set(ts.roomID, create, ts.joins[string(ts.a.name)], ts.joins[string(ts.b.name)])
		newSenderWithPresence(t, ts.a, db, log, ts.rooms, testSenderConfig(), presence)

		// The first event seen: B is new to the sender, and gets a's presence.
		produceEvents(t, log, ts.a.event(t, ts.roomID, a, "m.room.message", nil, map[string]any{"body": "first"}))
		// C's user joins: C gets a's presence, B nothing.
		produceEvents(t, log, ts.joins[string(ts.c.name)])
		// Our a2 and off join: B and C get a2's presence (off is offline).
		produceEvents(t, log, ts.a.member(t, ts.roomID, a2, spec.Join), ts.a.member(t, ts.roomID, off, spec.Join))
		// a changes their profile, B's user too: nobody gets anything.
		rejoinA := ts.a.event(t, ts.roomID, a, spec.MRoomMember, &a, map[string]string{"membership": spec.Join, "displayname": "A"})
		b := ts.b.user("b")
		rejoinB := ts.b.event(t, ts.roomID, b, spec.MRoomMember, &b, map[string]string{"membership": spec.Join, "displayname": "B"})
		marker := ts.a.event(t, ts.roomID, a, "m.room.message", nil, map[string]any{"body": "marker"})
		for _, m := range []*rsapi.OutputNewRoomEvent{
			{Event: rsapi.Event{PDU: rejoinA}, AddsStateEventIDs: []string{rejoinA.EventID()}, RemovesStateEventIDs: []string{ts.joins[string(ts.a.name)].EventID()}},
			{Event: rsapi.Event{PDU: rejoinB}, AddsStateEventIDs: []string{rejoinB.EventID()}, RemovesStateEventIDs: []string{ts.joins[string(ts.b.name)].EventID()}},
			{Event: rsapi.Event{PDU: marker}},
		} {
			if _, err := log.Produce(t.Context(), rsapi.TopicOutputRoomEvent, outputMessage(t, m)); err != nil {
				t.Fatal(err)
			}
		}

		want := map[*server][][]string{
			ts.b: {{a + " online"}, {a2 + " online"}},
			ts.c: {{a + " online"}, {a2 + " online"}},
		}
		for s, w := range want {
			// The marker is queued after everything the earlier events queued for s.
			s.waitPDU(marker.EventID(), eventually)
			_, edus := s.received()
			if got := presencePushes(t, edus); !slices.EqualFunc(got, w, slices.Equal) {
				t.Fatalf("%s got presence %q, want %q", s.name, got, w)
			}
		}
	})
}
