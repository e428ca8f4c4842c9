package roomserver_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver"
	"github.com/matrix-org/dendrite/roomserver/api"
)

const serverName = "test.local"

// harness is a running roomserver on one database with the embedded log.
type harness struct {
	t      testing.TB
	rs     *roomserver.RoomServer
	input  *api.Input
	key    ed25519.PrivateKey
	output string
	log    eventlog.Log
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, db *sqlutil.DB, key ed25519.PrivateKey) *harness {
	t.Helper()
	log, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{DefaultPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, db, key, log)
}

// startOn runs the roomserver on log, which the harness closes.
func startOn(t testing.TB, db *sqlutil.DB, key ed25519.PrivateKey, log eventlog.Log) *harness {
	t.Helper()
	return startWith(t, db, key, log, &config.RoomServer{Shards: 1})
}

// startWith starts a roomserver with cfg on log.
func startWith(t testing.TB, db *sqlutil.DB, key ed25519.PrivateKey, log eventlog.Log, cfg *config.RoomServer) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	rs, err := roomserver.New(ctx, roomserver.Deps{
		Cfg: cfg, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: key,
		DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rs: rs, key: key, output: "out", log: log, cancel: cancel, done: make(chan error, 1),
		input: &api.Input{Log: log, Topic: "in", Wait: rs.API()}}
	go func() { h.done <- rs.Run(ctx) }()
	return h
}

func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Fatalf("roomserver run: %v", err)
	}
	if err := h.log.Close(); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) submit(in api.InputRoomEvents) []api.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: in})
	if err != nil {
		h.t.Fatalf("input: %v", err)
	}
	return res.Results
}

// newRoom creates a room with alice joined and a public join rule; returns its ID.
func (h *harness) newRoom(version gomatrixserverlib.RoomVersion, alice string) string {
	h.t.Helper()
	roomID := ""
	if version != gomatrixserverlib.RoomVersionV12 {
		roomID = fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), serverName)
	}
	create := roomtest.CreateEvent(h.t, h.key, serverName, version, alice, roomID)
	roomID = create.RoomID().String()
	res := h.submit(api.InputRoomEvents{RoomID: roomID, RoomVersion: string(version), Atomic: true, Events: []api.InputRoomEvent{
		{Kind: api.KindNew, Event: &api.Event{PDU: create}},
		roomtest.Proto(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}),
		roomtest.Proto(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), powerLevels(version, alice)),
		roomtest.Proto(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}),
	}})
	for i, r := range res {
		if r.Err != nil {
			h.t.Fatalf("create event %d rejected: %v", i, r.Err)
		}
	}
	return roomID
}

func TestRoomLifecycle(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		for _, version := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12} {
			t.Run("v"+string(version), func(t *testing.T) {
				h := start(t, db, roomtest.NewKey(t))
				defer h.stop()
				alice, bob := "@alice:"+serverName, "@bob:"+serverName
				roomID := h.newRoom(version, alice)
				ctx := context.Background()

				// A stranger cannot send.
				res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(bob, "m.room.message", nil, map[string]string{"body": "hi"})}})
				if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
					t.Fatalf("stranger's message: want M_FORBIDDEN, got %+v", res[0])
				}
				// Bob joins and sends; the send is idempotent per transaction.
				res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"})}})
				if res[0].Err != nil {
					t.Fatalf("join: %v", res[0].Err)
				}
				msg := roomtest.Proto(bob, "m.room.message", nil, map[string]string{"body": "hi"})
				msg.TxnID = &api.TransactionID{UserID: bob, DeviceID: "D", TransactionID: "t1"}
				first := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{msg}})
				again := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{msg}})
				if first[0].Err != nil || first[0].EventID == "" || again[0].EventID != first[0].EventID {
					t.Fatalf("txn replay: first %+v again %+v", first[0], again[0])
				}
				m, err := h.rs.API().QueryMembershipForUser(ctx, &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: bob})
				if err != nil || m.Membership != spec.Join {
					t.Fatalf("bob membership: %+v %v", m, err)
				}
				// Bob may not change the power levels.
				res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(bob, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{bob: 100}})}})
				if res[0].Err == nil {
					t.Fatal("bob changed the power levels")
				}
				// Alice renames the room; current state and state at events follow.
				res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "one"})}})
				nameID := res[0].EventID
				cur, err := h.rs.API().QueryCurrentState(ctx, &api.QueryCurrentStateRequest{RoomID: roomID, Tuples: []api.StateKeyTuple{{EventType: spec.MRoomName}}})
				if err != nil || len(cur.StateEvents) != 1 || cur.StateEvents[0].EventID() != nameID {
					t.Fatalf("current name: %+v %v", cur, err)
				}
				before, err := h.rs.API().QueryStateAtEvent(ctx, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: nameID})
				if err != nil || !before.EventKnown {
					t.Fatal(err)
				}
				for _, e := range before.StateEvents {
					if e.Type() == spec.MRoomName {
						t.Fatal("state before the name event has a name")
					}
				}
				all, _ := h.rs.API().QueryCurrentState(ctx, &api.QueryCurrentStateRequest{RoomID: roomID})
				if len(all.StateEvents) != 6 {
					t.Fatalf("want 6 state events, got %d", len(all.StateEvents))
				}
				// Bob redacts his own message; the stored copy is redacted.
				redaction := roomtest.Proto(bob, spec.MRoomRedaction, nil, map[string]string{"redacts": first[0].EventID})
				redaction.Proto.Redacts = first[0].EventID
				res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{redaction}})
				if res[0].Err != nil {
					t.Fatalf("redaction: %v", res[0].Err)
				}
				evs, err := h.rs.API().QueryEventsByID(ctx, &api.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{first[0].EventID}})
				if err != nil || len(evs.Events) != 1 {
					t.Fatalf("query redacted event: %+v %v", evs, err)
				}
				if string(evs.Events[0].Content()) != "{}" {
					t.Fatalf("message not redacted: %s", evs.Events[0].Content())
				}
				rooms, _ := h.rs.API().QueryRoomsForUser(ctx, &api.QueryRoomsForUserRequest{UserID: bob, Membership: spec.Join})
				if !slices.Contains(rooms.RoomIDs, roomID) {
					t.Fatalf("rooms for bob: %v", rooms.RoomIDs)
				}
			})
		}
	})
}

func TestAtomicCreateRejectsWhole(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := "!atomic:" + serverName
		create := roomtest.CreateEvent(t, h.key, serverName, gomatrixserverlib.RoomVersionV10, alice, roomID)
		res := h.submit(api.InputRoomEvents{RoomID: roomID, RoomVersion: "10", Atomic: true, Events: []api.InputRoomEvent{
			{Kind: api.KindNew, Event: &api.Event{PDU: create}},
			roomtest.Proto("@mallory:"+serverName, spec.MRoomMember, roomtest.StateKey("@mallory:"+serverName), map[string]string{"membership": "join"}),
		}})
		if res[0].Err == nil || res[1].Err == nil {
			t.Fatalf("atomic batch partly accepted: %+v", res)
		}
		info, err := h.rs.API().QueryRoomInfo(context.Background(), &api.QueryRoomInfoRequest{RoomID: roomID})
		if err != nil || info.Exists {
			t.Fatalf("room exists after rejected creation: %+v %v", info, err)
		}
	})
}

// TestLocalInviteOfRemoteUserRefused: a local (KindNew) invite of another server's user
// is refused, in an existing room and in a room's creation batch (nothing is created):
// only the federationapi's invite v2, with the invitee server's signature, makes one. An
// invite of a local user is a local event as before.
func TestLocalInviteOfRemoteUserRefused(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, bob, remote := "@alice:"+serverName, "@bob:"+serverName, "@bob:other.example"
		invite := func(target string) api.InputRoomEvent {
			return roomtest.Proto(alice, spec.MRoomMember, roomtest.StateKey(target), map[string]any{"membership": "invite", "is_direct": true})
		}
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{invite(remote)}})
		if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("local invite of %s: want M_FORBIDDEN, got %+v", remote, res[0])
		}
		if res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{invite(bob)}}); res[0].Err != nil {
			t.Fatalf("local invite of %s: %v", bob, res[0].Err)
		}
		ctx := context.Background()
		if m, err := h.rs.API().QueryMembershipForUser(ctx, &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: remote}); err != nil || m.Membership == spec.Invite {
			t.Fatalf("%s after the refused invite: %+v %v", remote, m, err)
		}

		created := "!withinvite:" + serverName
		create := roomtest.CreateEvent(t, h.key, serverName, gomatrixserverlib.RoomVersionV10, alice, created)
		res = h.submit(api.InputRoomEvents{RoomID: created, RoomVersion: "10", Atomic: true, Events: []api.InputRoomEvent{
			{Kind: api.KindNew, Event: &api.Event{PDU: create}},
			roomtest.Proto(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}),
			invite(remote),
		}})
		if res[2].Err == nil || res[2].Err.Code != "M_FORBIDDEN" {
			t.Fatalf("invite of %s in a creation batch: %+v", remote, res)
		}
		if info, err := h.rs.API().QueryRoomInfo(ctx, &api.QueryRoomInfoRequest{RoomID: created}); err != nil || info.Exists {
			t.Fatalf("room exists after a refused creation batch: %+v %v", info, err)
		}
	})
}

func TestRestartKeepsRoomsAndOutputs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		key := roomtest.NewKey(t)
		alice := "@alice:" + serverName
		h := start(t, db, key)
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "before"})}})
		h.stop()

		h = start(t, db, key)
		defer h.stop()
		res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "after"})}})
		if res[0].Err != nil {
			t.Fatalf("send after restart: %v", res[0].Err)
		}
		// Every accepted event reached the output log exactly once, in order.
		seen := map[string]int{}
		var order []string
		var total int64
		ends, err := h.log.EndOffsets(context.Background(), "out")
		if err != nil {
			t.Fatal(err)
		}
		for p, end := range ends {
			total += end
			for _, value := range h.records(int32(p)) {
				var out api.OutputRoomEvent
				if err := json.Unmarshal(value, &out); err != nil {
					t.Fatal(err)
				}
				seen[out.NewRoomEvent.Event.EventID()]++
				order = append(order, out.NewRoomEvent.Event.Type())
			}
		}
		if total != 6 || len(seen) != 6 {
			t.Fatalf("want 6 outputs for 6 events, got %d records, %d distinct: %v", total, len(seen), order)
		}
		if order[0] != spec.MRoomCreate {
			t.Fatalf("first output is %s", order[0])
		}
	})
}

// powerLevels gives alice 100, except in versions where the creator is privileged anyway.
func powerLevels(version gomatrixserverlib.RoomVersion, creator string) map[string]any {
	if gomatrixserverlib.MustGetRoomVersion(version).PrivilegedCreators() {
		return map[string]any{}
	}
	return map[string]any{"users": map[string]int{creator: 100}}
}

// TestConcurrentJoinsThenSends joins many users at once (so their joins share input
// batches) and then has each of them send: every join must be part of the room's state.
func TestConcurrentJoinsThenSends(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		const users = 20
		errs := make(chan error, users)
		for i := 0; i < users; i++ {
			go func(i int) {
				u := fmt.Sprintf("@u%d:%s", i, serverName)
				res, err := h.input.InputRoomEvents(context.Background(), &api.InputRoomEventsRequest{Input: api.InputRoomEvents{
					RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(u, spec.MRoomMember, roomtest.StateKey(u), map[string]string{"membership": "join"})}}})
				if err == nil && res.Results[0].Err != nil {
					err = res.Results[0].Err
				}
				errs <- err
			}(i)
		}
		for i := 0; i < users; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("join: %v", err)
			}
		}
		for i := 0; i < users; i++ {
			go func(i int) {
				u := fmt.Sprintf("@u%d:%s", i, serverName)
				res, err := h.input.InputRoomEvents(context.Background(), &api.InputRoomEventsRequest{Input: api.InputRoomEvents{
					RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(u, "m.room.message", nil, map[string]string{"body": "hi"})}}})
				if err == nil && res.Results[0].Err != nil {
					err = fmt.Errorf("%s: %w", u, res.Results[0].Err)
				}
				errs <- err
			}(i)
		}
		for i := 0; i < users; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("send: %v", err)
			}
		}
	})
}

// TestShardFlushesOnlyItsOutbox: shards may share a database; at start a shard produces the
// pending outputs of its own rooms and leaves the others' to their shard (produced rows stay,
// marked, for replay).
func TestShardFlushesOnlyItsOutbox(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const partitions = 4
		log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: partitions})
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close() // nolint: errcheck // nothing to do about a failed close in a test
		logger := logrus.New()
		logger.SetLevel(logrus.WarnLevel)
		rs, err := roomserver.New(ctx, roomserver.Deps{
			Cfg: &config.RoomServer{Shards: 2}, Shard: 0, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: roomtest.NewKey(t),
			DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger),
		})
		if err != nil {
			t.Fatal(err)
		}
		var mine, theirs []string
		for i := range 12 {
			roomID := fmt.Sprintf("!r%d:%s", i, serverName)
			if _, err := db.ExecContext(ctx, "INSERT INTO roomserver_outbox (room_id, payload) VALUES ($1, $2)", roomID, []byte(roomID)); err != nil {
				t.Fatal(err)
			}
			if eventlog.PartitionFor([]byte(roomID), partitions)%2 == 0 {
				mine = append(mine, roomID)
			} else {
				theirs = append(theirs, roomID)
			}
		}
		done := make(chan error, 1)
		go func() { done <- rs.Run(ctx) }()
		left := func() []string {
			rows, err := db.QueryContext(ctx, "SELECT room_id FROM roomserver_outbox WHERE NOT produced ORDER BY seq")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close() // nolint: errcheck // read-only
			var ids []string
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			return ids
		}
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(left(), theirs) {
			if time.Now().After(deadline) {
				t.Fatalf("outbox holds %v, want the other shard's %v", left(), theirs)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var produced []string
		ends, err := log.EndOffsets(ctx, "out")
		if err != nil {
			t.Fatal(err)
		}
		for p := int32(0); p < partitions; p++ {
			end := ends[p]
			if end == 0 {
				continue
			}
			if p%2 != 0 {
				t.Fatalf("output produced to partition %d of the other shard", p)
			}
			cctx, ccancel := context.WithCancel(ctx)
			_ = log.Consume(cctx, "out", p, 0, func(_ context.Context, recs []eventlog.Record) error { // ends when cancelled
				for _, r := range recs {
					produced = append(produced, string(r.Key))
				}
				if recs[len(recs)-1].Offset+1 >= end {
					ccancel()
				}
				return nil
			})
			ccancel()
		}
		slices.Sort(produced)
		slices.Sort(mine)
		if !slices.Equal(produced, mine) {
			t.Fatalf("produced %v, want %v", produced, mine)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestOutputReplayWindow: the roomserver keeps produced outputs for replay until they are
// older than room_server.output_replay_window; then asking for them is 404 M_NOT_FOUND
// (the reader must be rebuilt), while asking from the partition's last sequence is an
// empty answer, and so is asking from 0 (the oldest kept: none), with the last sequence, so
// that a reader past the window learns where to go on (eventlog.OwnerSequenced).
func TestOutputReplayWindow(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		log, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{DefaultPartitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // Close never fails
		h := startWith(t, db, roomtest.NewKey(t), log, &config.RoomServer{Shards: 1, OutputReplayWindow: config.Duration(time.Nanosecond)})
		defer h.stop()
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, "@alice:"+serverName)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		partition := eventlog.PartitionFor([]byte(roomID), 4)
		for {
			res, err := h.rs.API().QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Partition: partition, AfterSeq: 1})
			var merr *matrixerr.Error
			if errors.As(err, &merr) && merr.Code == "M_NOT_FOUND" {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatalf("outputs never pruned: %d records", len(res.Records))
			}
			time.Sleep(50 * time.Millisecond) // polling with the test's deadline
		}
		res, err := h.rs.API().QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Partition: partition, AfterSeq: 1 << 40})
		if err != nil || len(res.Records) != 0 || res.LastSeq == 0 {
			t.Fatalf("after the last sequence: %+v, %v; want no records and the last sequence", res, err)
		}
		res, err = h.rs.API().QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Partition: partition})
		if err != nil || len(res.Records) != 0 || res.LastSeq < 2 {
			t.Fatalf("from 0 with every record pruned: %+v, %v; want no records and the last sequence", res, err)
		}
	})
}

// TestOutputsStoreEventsOnce: an outbox row keeps its event's number, not its JSON, which
// roomserver_events holds. Replay (QueryOutputRecords) and a restart that produces the rows
// not marked produced put the event back: the records are those produced first, except
// that an event redacted since comes back redacted.
func TestOutputsStoreEventsOnce(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		key := roomtest.NewKey(t)
		h := start(t, db, key)
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV11, alice)
		message := func(body string) string {
			res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
				roomtest.Proto(alice, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": body})}})
			wantOK(t, "message", res)
			return res[0].EventID
		}
		message("kept")
		gone := message("secret")
		redaction := roomtest.Proto(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": gone})
		redaction.Proto.Redacts = gone
		wantOK(t, "redaction", h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{redaction}}))

		ctx := context.Background()
		var whole, withBody int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN event_nid = 0 THEN 1 END),
			COUNT(CASE WHEN payload LIKE '%"body"%' THEN 1 END) FROM roomserver_outbox`).Scan(&whole, &withBody); err != nil {
			t.Fatal(err)
		}
		if whole != 0 || withBody != 0 {
			t.Fatalf("outbox rows holding their event: %d without its number, %d with a message body", whole, withBody)
		}

		partition := eventlog.PartitionFor([]byte(roomID), 4)
		produced := h.records(partition)
		if len(produced) != 7 {
			t.Fatalf("produced %d records, want 7", len(produced))
		}
		res, err := h.rs.API().QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Partition: partition})
		if err != nil {
			t.Fatal(err)
		}
		replayed := make([][]byte, len(res.Records))
		for i, r := range res.Records {
			replayed[i] = r
		}
		sameOutputs(t, "replayed", produced, replayed, gone)

		h.stop()
		if _, err := db.ExecContext(ctx, "UPDATE roomserver_outbox SET produced = FALSE"); err != nil {
			t.Fatal(err)
		}
		h = start(t, db, key)
		defer h.stop()
		deadline := time.Now().Add(10 * time.Second)
		again := h.records(partition)
		for len(again) < 2*len(produced) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
			again = h.records(partition)
		}
		sameOutputs(t, "produced again at start", produced, again[len(produced):], gone)
	})
}

// sameOutputs fails unless the records of got are those of want, except that the event
// gone is redacted in got.
func sameOutputs(t *testing.T, what string, want, got [][]byte, gone string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s %d records, want %d", what, len(got), len(want))
	}
	for i, raw := range got {
		var was, now api.OutputRoomEvent
		if err := json.Unmarshal(want[i], &was); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &now); err != nil {
			t.Fatal(err)
		}
		ev := now.NewRoomEvent.Event
		if ev.PDU == nil || now.Seq != was.Seq || ev.EventID() != was.NewRoomEvent.Event.EventID() ||
			now.NewRoomEvent.RedactsEventID != was.NewRoomEvent.RedactsEventID ||
			!slices.Equal(now.NewRoomEvent.AddsStateEventIDs, was.NewRoomEvent.AddsStateEventIDs) {
			t.Fatalf("%s record %d is %s, produced as %s", what, i, raw, want[i])
		}
		wantJSON, wantRedacted := string(was.NewRoomEvent.Event.JSON()), false
		if ev.EventID() == gone {
			redacted, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).RedactEventJSON(was.NewRoomEvent.Event.JSON())
			if err != nil {
				t.Fatal(err)
			}
			wantJSON, wantRedacted = string(redacted), true
		}
		if string(ev.JSON()) != wantJSON || ev.Redacted() != wantRedacted {
			t.Fatalf("%s record %d has event %s (redacted %v), want %s (redacted %v)", what, i, ev.JSON(), ev.Redacted(), wantJSON, wantRedacted)
		}
	}
}

// records reads every record of the output topic's partition.
func (h *harness) records(partition int32) [][]byte {
	h.t.Helper()
	ctx := context.Background()
	ends, err := h.log.EndOffsets(ctx, h.output)
	if err != nil {
		h.t.Fatal(err)
	}
	end := ends[partition]
	var out [][]byte
	if end == 0 {
		return out
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = h.log.Consume(cctx, h.output, partition, 0, func(_ context.Context, recs []eventlog.Record) error { // ends when cancelled
		for _, r := range recs {
			out = append(out, r.Value)
			if r.Offset == end-1 {
				cancel()
			}
		}
		return nil
	})
	return out
}
