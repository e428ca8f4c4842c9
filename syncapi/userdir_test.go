package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// searchDirectory runs POST /user_directory/search and returns the user IDs found.
func (h *harness) searchDirectory(token, term string) []string {
	h.t.Helper()
	body, _ := json.Marshal(map[string]any{"search_term": term}) // a map of a string always encodes
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_matrix/client/v3/user_directory/search", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Results []struct {
			UserID string `json:"user_id"`
		} `json:"results"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&res) != nil {
		h.t.Fatalf("search %q: %d", term, resp.StatusCode)
	}
	var ids []string
	for _, r := range res.Results {
		ids = append(ids, r.UserID)
	}
	return ids
}

// TestUserDirectoryMigration fills the directory from the current state a sync API stored
// before the directory existed: the migration's backfill, not later events, finds the users.
func TestUserDirectoryMigration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol, dave := h.user("alice"), h.user("bob"), h.user("carol"), h.user("dave")
		public := h.newRoom(alice)
		h.member(public, bob, bob, spec.Join)
		private := h.newRoom(carol, roomtest.Proto(carol, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "invite"}))
		h.member(private, carol, dave, spec.Invite)
		h.member(private, dave, dave, spec.Join)
		h.waitConsumed()
		h.stop()
		ctx := context.Background()
		for _, stmt := range []string{"DROP TABLE syncapi_user_directory", "DROP TABLE syncapi_user_directory_public",
			"DELETE FROM syncapi_schema_version WHERE version >= 6"} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		h = start(t, db)
		for _, u := range []string{alice, bob, carol, dave} {
			h.user(u[1 : len(u)-len(serverName)-1])
		}
		for _, c := range []struct {
			searcher, term string
			want           int
		}{{carol, "bob", 1}, {carol, "dave", 1}, {alice, "bob", 1}, {alice, "dave", 0}, {alice, "carol", 0}, {dave, "alice", 1}} {
			if got := h.searchDirectory(c.searcher, c.term); len(got) != c.want {
				t.Fatalf("%s searching %q finds %v", c.searcher, c.term, got)
			}
		}
	})
}

// TestUserDirectoryForgetsRoomsThisServerLeft: the members of a public room of another
// server are in the directory while a user of this server is joined to it, and out of it
// once the last one left, since this server no longer follows who is in the room (sytest
// "User in remote room doesn't appear in user directory after server left room").
func TestUserDirectoryForgetsRoomsThisServerLeft(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		zed := "@zed:" + remoteServer
		r := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: remoteServer, Version: gomatrixserverlib.RoomVersionV10,
			RoomID: fmt.Sprintf("!d%d:%s", time.Now().UnixNano(), remoteServer)}
		create := roomtest.CreateEvent(t, r.Key, remoteServer, r.Version, zed, r.RoomID)
		join := r.Event(zed, spec.MRoomMember, roomtest.StateKey(zed), map[string]string{"membership": "join"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
		pl := r.Event(zed, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{zed: 100}}, 3, []gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, join})
		jr := r.Event(zed, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}, 4, []gomatrixserverlib.PDU{pl}, []gomatrixserverlib.PDU{create, join, pl})
		// bob's server joins: the room's state as outliers, then bob's join with it.
		var outliers []rsapi.InputRoomEvent
		for _, ev := range []gomatrixserverlib.PDU{create, join, pl, jr} {
			outliers = append(outliers, roomtest.Input(rsapi.KindOutlier, ev))
		}
		bobJoin := roomtest.Input(rsapi.KindFederated, r.Event(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"}, 5,
			[]gomatrixserverlib.PDU{jr}, []gomatrixserverlib.PDU{create, pl, jr}))
		bobJoin.StateEventIDs = []string{create.EventID(), join.EventID(), pl.EventID(), jr.EventID()}
		for _, msg := range [][]rsapi.InputRoomEvent{outliers, {bobJoin}} {
			res, err := h.input.InputRoomEvents(context.Background(), &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: r.RoomID, RoomVersion: "10", Events: msg}})
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
		for _, searcher := range []string{alice, bob} {
			if got := h.searchDirectory(searcher, "zed"); !slices.Equal(got, []string{zed}) {
				t.Fatalf("%s finds %v while bob is in the room, want %s", searcher, got, zed)
			}
		}
		h.member(r.RoomID, bob, bob, spec.Leave)
		h.waitConsumed()
		for _, searcher := range []string{alice, bob} {
			if got := h.searchDirectory(searcher, "zed"); len(got) != 0 {
				t.Fatalf("%s finds %v after this server left the room", searcher, got)
			}
		}
	})
}
