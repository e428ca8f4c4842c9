package inthttp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/inthttp"
)

const shardedPartitions = 4

// testKey signs the events of the sharded test: every shard of one server signs with its key.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// shard is one roomserver shard with its own database, served over loopback HTTP; rooms
// lists the room IDs its requests named, to check the routing.
type shard struct {
	direct api.ServerAPI
	mu     sync.Mutex
	rooms  map[string]int
}

func (s *shard) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // a short read fails the call below anyway
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(b, &req) // not every request names a room
		s.mu.Lock()
		s.rooms[req.RoomID]++
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (s *shard) saw(roomID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[roomID] > 0
}

// startShards runs n shards on one embedded log; each shard has its own database, so a
// query routed to the wrong shard finds no room.
func startShards(t *testing.T, n int, openDB func(t *testing.T) *sqlutil.DB) (eventlog.Log, []*shard, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log, err := eventlog.NewEmbedded(ctx, openDB(t), eventlog.Config{DefaultPartitions: shardedPartitions})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	var wg sync.WaitGroup
	var shards []*shard
	var urls []string
	for i := range n {
		rs, err := roomserver.New(ctx, roomserver.Deps{
			Cfg: &config.RoomServer{Shards: n}, Shard: i, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: testKey,
			DB: openDB(t), Log: log, InputTopic: inTopic, OutputTopic: "out", Logger: logrus.NewEntry(logger).WithField("shard", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		s := &shard{direct: rs.API(), rooms: map[string]int{}}
		router := mux.NewRouter()
		inthttp.Register(router, rs.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
		hs := httptest.NewServer(s.record(router))
		t.Cleanup(hs.Close)
		shards, urls = append(shards, s), append(urls, hs.URL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rs.Run(ctx); err != nil {
				t.Errorf("shard %d: %v", i, err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := log.Close(); err != nil {
			t.Error(err)
		}
	})
	return log, shards, urls
}

func TestShardedClient(t *testing.T) {
	engines := map[string]func(t *testing.T) *sqlutil.DB{
		"sqlite": func(t *testing.T) *sqlutil.DB {
			return openDB(t, "file:"+filepath.Join(t.TempDir(), "rs.db"))
		},
		"postgres": func(t *testing.T) *sqlutil.DB { return openDB(t, test.PostgresDSN(t)) },
	}
	for name, open := range engines {
		t.Run(name, func(t *testing.T) { shardedStory(t, open) })
	}
}

func openDB(t *testing.T, dsn string) *sqlutil.DB {
	t.Helper()
	db, err := sqlutil.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	return db
}

func shardedStory(t *testing.T, open func(t *testing.T) *sqlutil.DB) {
	log, shards, urls := startShards(t, 2, open)
	sc, err := inthttp.NewShardedClient(urls, shardedPartitions, ihttp.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	input := &api.Input{Log: log, Topic: inTopic, Wait: sc}
	alice := "@alice:" + serverName
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Two rooms on each shard, created and written through the sharded wait.
	owned := map[int][]string{}
	for i := 0; len(owned[0]) < 2 || len(owned[1]) < 2; i++ {
		roomID := fmt.Sprintf("!r%d-%d:%s", i, time.Now().UnixNano(), serverName)
		owner := sc.ShardForRoom(roomID)
		if want := int(eventlog.PartitionFor([]byte(roomID), shardedPartitions)) % 2; owner != want {
			t.Fatalf("room %s routed to shard %d, its partition's shard is %d", roomID, owner, want)
		}
		if len(owned[owner]) == 2 {
			continue
		}
		owned[owner] = append(owned[owner], roomID)
		create := roomtest.CreateEvent(t, testKey, serverName, gomatrixserverlib.RoomVersionV10, alice, roomID)
		res, err := input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: api.InputRoomEvents{
			RoomID: roomID, RoomVersion: string(gomatrixserverlib.RoomVersionV10), Atomic: true, Events: []api.InputRoomEvent{
				{Kind: api.KindNew, Event: &api.Event{PDU: create}},
				roomtest.Proto(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}),
				roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": roomID}),
			}}})
		if err != nil {
			t.Fatalf("create %s: %v", roomID, err)
		}
		for j, r := range res.Results {
			if r.Err != nil {
				t.Fatalf("create %s event %d rejected: %v", roomID, j, r.Err)
			}
		}
	}

	var all []string
	for owner, rooms := range owned {
		other := shards[1-owner]
		for _, roomID := range rooms {
			all = append(all, roomID)
			info, err := sc.QueryRoomInfo(ctx, &api.QueryRoomInfoRequest{RoomID: roomID})
			if err != nil || !info.Exists {
				t.Fatalf("room info of %s: %+v %v", roomID, info, err)
			}
			st, err := sc.QueryCurrentState(ctx, &api.QueryCurrentStateRequest{RoomID: roomID, Tuples: []api.StateKeyTuple{{EventType: spec.MRoomName}}})
			if err != nil || len(st.StateEvents) != 1 {
				t.Fatalf("state of %s: %+v %v", roomID, st, err)
			}
			m, err := sc.QueryMembershipForUser(ctx, &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: alice})
			if err != nil || m.Membership != spec.Join {
				t.Fatalf("membership in %s: %+v %v", roomID, m, err)
			}
			nameID := st.StateEvents[0].EventID()
			evs, err := sc.QueryEventsByID(ctx, &api.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{nameID}})
			if err != nil || len(evs.Events) != 1 {
				t.Fatalf("events of %s: %+v %v", roomID, evs, err)
			}
			at, err := sc.QueryStateAtEvent(ctx, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: nameID, After: true})
			if err != nil || !at.EventKnown || len(at.StateEvents) != 3 {
				t.Fatalf("state at %s: %+v %v", nameID, at, err)
			}
			// Only the owner was asked, and only the owner knows the room.
			if other.saw(roomID) || !shards[owner].saw(roomID) {
				t.Fatalf("room %s (shard %d) was queried on the wrong shard", roomID, owner)
			}
			if info, _ := other.direct.QueryRoomInfo(ctx, &api.QueryRoomInfoRequest{RoomID: roomID}); info.Exists {
				t.Fatalf("shard %d also stored room %s", 1-owner, roomID)
			}
		}
	}

	// Queries that no room scopes are answered by every shard together.
	var names []string
	for _, roomID := range all {
		st, err := sc.QueryCurrentState(ctx, &api.QueryCurrentStateRequest{RoomID: roomID, Tuples: []api.StateKeyTuple{{EventType: spec.MRoomName}}})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, st.StateEvents[0].EventID())
	}
	anyRoom, err := sc.QueryEventsByID(ctx, &api.QueryEventsByIDRequest{EventIDs: names})
	if err != nil || len(anyRoom.Events) != len(names) {
		t.Fatalf("events by ID in any room: %d of %d (%v)", len(anyRoom.Events), len(names), err)
	}
	rooms, err := sc.QueryRoomsForUser(ctx, &api.QueryRoomsForUserRequest{UserID: alice, Membership: spec.Join})
	slices.Sort(all)
	if err != nil || !slices.Equal(rooms.RoomIDs, all) {
		t.Fatalf("rooms for alice: %v %v, want %v", rooms, err, all)
	}

	// Paging through the rooms a room at a time meets every shard's rooms once, in order.
	var listed []string
	for after := ""; ; {
		page, err := sc.QueryRooms(ctx, &api.QueryRoomsRequest{AfterRoomID: after, Limit: 1})
		if err != nil || len(page.RoomIDs) > 1 {
			t.Fatalf("rooms after %q: %+v %v", after, page, err)
		}
		if len(page.RoomIDs) == 0 {
			break
		}
		listed = append(listed, page.RoomIDs...)
		after = page.RoomIDs[0]
	}
	if !slices.Equal(listed, all) {
		t.Fatalf("rooms listed %v, want %v", listed, all)
	}
	for _, roomID := range all {
		tl, err := sc.QueryRoomEvents(ctx, &api.QueryRoomEventsRequest{RoomID: roomID})
		if err != nil || len(tl.Events) != 3 || tl.Events[2].Event.Type() != spec.MRoomCreate {
			t.Fatalf("timeline of %s from its shard: %+v %v", roomID, tl, err)
		}
	}

	shardedDirectory(ctx, t, sc, all, alice)

	// A wait on each partition goes to the shard consuming it.
	for p := int32(0); p < shardedPartitions; p++ {
		var roomID string
		for i := 0; roomID == "" || eventlog.PartitionFor([]byte(roomID), shardedPartitions) != p; i++ {
			roomID = fmt.Sprintf("!p%d-%d:%s", p, i, serverName)
		}
		b, _ := json.Marshal(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "hi"})}}) // plain data
		pos, err := log.Produce(ctx, inTopic, eventlog.Message{Key: []byte(roomID), Value: b})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sc.QueryInputResult(ctx, &api.QueryInputResultRequest{Partition: pos[0].Partition, Offset: pos[0].Offset})
		if err != nil || len(res.Results) != 1 || res.Results[0].Err == nil {
			t.Fatalf("partition %d: a message to an unknown room: %+v %v", p, res, err)
		}
	}
}

func TestShardedClientArguments(t *testing.T) {
	if _, err := inthttp.NewShardedClient(nil, 4, ihttp.ClientOptions{}); err == nil {
		t.Fatal("no shards accepted")
	}
	if _, err := inthttp.NewShardedClient([]string{"http://a", "http://b", "http://c"}, 2, ihttp.ClientOptions{}); err == nil {
		t.Fatal("more shards than partitions accepted")
	}
}

// shardedDirectory: aliases and the published directory over shards with separate
// databases: an alias lives on its hash's shard, whatever its room's shard.
func shardedDirectory(ctx context.Context, t *testing.T, sc *inthttp.ShardedClient, rooms []string, alice string) {
	t.Helper()
	for i, roomID := range rooms {
		alias := fmt.Sprintf("#a%d:%s", i, serverName)
		if res, err := sc.PerformSetRoomAlias(ctx, &api.PerformSetRoomAliasRequest{Alias: alias, RoomID: roomID, Creator: alice}); err != nil || !res.Created {
			t.Fatalf("alias %s: %+v %v", alias, res, err)
		}
		if res, err := sc.PerformSetRoomAlias(ctx, &api.PerformSetRoomAliasRequest{Alias: alias, RoomID: rooms[0], Creator: alice}); err != nil || res.Created || res.RoomID != roomID {
			t.Fatalf("alias %s taken again: %+v %v", alias, res, err)
		}
		if res, err := sc.QueryRoomAlias(ctx, &api.QueryRoomAliasRequest{Alias: alias}); err != nil || res.RoomID != roomID {
			t.Fatalf("resolve %s: %+v %v", alias, res, err)
		}
		if res, err := sc.QueryAliasesForRoom(ctx, &api.QueryAliasesForRoomRequest{RoomID: roomID}); err != nil || !slices.Equal(res.Aliases, []string{alias}) {
			t.Fatalf("aliases of %s: %+v %v", roomID, res, err)
		}
		if _, err := sc.PerformSetRoomVisibility(ctx, &api.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: true}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := api.ListPublicRooms(ctx, sc, api.PublicRoomsRequest{})
	if err != nil || len(list.Chunk) != len(rooms) {
		t.Fatalf("public rooms %+v %v", list, err)
	}
	for i, r := range list.Chunk {
		if r.RoomID != rooms[i] || r.Name != rooms[i] || r.NumJoinedMembers != 1 {
			t.Fatalf("entry %d: %+v, want room %s", i, r, rooms[i])
		}
	}
}
