package pushserver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/pushserver"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestReaderReplayIsIdempotent consumes messages, then consumes them all again from
// offset 0 (a redelivery after a crash): every local member but the sender has one
// notification per message, and no more after the replay, whose marker message proves
// the replay was consumed.
func TestReaderReplayIsIdempotent(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // as above
		const server = "replay.test"
		roomID := "!replay:" + server
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		var members []storage.Member
		for i := range 4 {
			members = append(members, storage.Member{UserID: fmt.Sprintf("@u%d:%s", i, server), Membership: "join"})
		}
		members = append(members, storage.Member{UserID: "@remote:elsewhere.test", Membership: "join"})
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return store.AddRoom(ctx, tx, roomID, members, nil) }); err != nil {
			t.Fatal(err)
		}
		remote := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: server, Version: "10", RoomID: roomID}
		produce := func(n, depth int) {
			t.Helper()
			for i := range n {
				ev := remote.Event("@u0:"+server, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"}, int64(depth+i), nil, nil)
				value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}})
				if err != nil {
					t.Fatal(err)
				}
				if _, err = log.Produce(ctx, "out", eventlog.Message{Key: []byte(roomID), Value: value}); err != nil {
					t.Fatal(err)
				}
			}
		}
		topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		run := func(want int) {
			t.Helper()
			s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
				Logger: logrus.NewEntry(logger)})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(rctx) }()
			deadline := time.Now().Add(30 * time.Second)
			var n int
			for n != want && time.Now().Before(deadline) {
				if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pushserver_notifications").Scan(&n); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("%d notifications, want %d", n, want)
			}
		}
		produce(3, 10)
		run(3 * 3)
		if _, err = db.ExecContext(ctx, "DELETE FROM pushserver_log_offsets"); err != nil {
			t.Fatal(err)
		}
		produce(1, 20)
		run(4 * 3)
	})
}

// TestReaderSkipsMembersIgnoringTheSender: a member whose m.ignored_user_list holds the
// sender gets no notification for the sender's events, and gets them again once the list
// no longer holds the sender (sytest 49ignore.pl "Ignore user in existing room": the room
// must not come back in /sync for its notification count).
func TestReaderSkipsMembersIgnoringTheSender(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // as above
		const server = "ignore.test"
		roomID := "!ignore:" + server
		sender, ignorer, other := "@sender:"+server, "@ignorer:"+server, "@other:"+server
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		members := []storage.Member{{UserID: sender, Membership: "join"}, {UserID: ignorer, Membership: "join"}, {UserID: other, Membership: "join"}}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return store.AddRoom(ctx, tx, roomID, members, nil) }); err != nil {
			t.Fatal(err)
		}
		remote := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: server, Version: "10", RoomID: roomID}
		depth := int64(10)
		send := func(from string) {
			t.Helper()
			depth++
			ev := remote.Event(from, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"}, depth, nil, nil)
			value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err = log.Produce(ctx, "out", eventlog.Message{Key: []byte(roomID), Value: value}); err != nil {
				t.Fatal(err)
			}
		}
		ignore := func(users map[string]any) {
			t.Helper()
			content, _ := json.Marshal(map[string]any{"ignored_users": users}) // test content always encodes
			value, _ := json.Marshal(uapi.OutputClientData{Type: uapi.OutputClientDataTypeAccountData,
				AccountData: &uapi.AccountDataChange{UserID: ignorer, Type: "m.ignored_user_list", Content: content}})
			if _, err := log.Produce(ctx, "clientdata", eventlog.Message{Key: []byte(ignorer), Value: value}); err != nil {
				t.Fatal(err)
			}
		}
		topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
			Logger: logrus.NewEntry(logger)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		// notified waits until user has want notifications (other's count is the marker
		// that the events before it were processed).
		notified := func(user string, want int) int {
			t.Helper()
			var n int
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_notifications n
					JOIN pushserver_nids u ON u.nid = n.user_nid WHERE u.id = $1`, user).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == want {
					break
				}
			}
			return n
		}
		ignore(map[string]any{sender: map[string]any{}})
		send(sender)
		send(other)
		if n := notified(sender, 1); n != 1 {
			t.Fatalf("marker: sender has %d notifications", n)
		}
		if n := notified(ignorer, 1); n != 1 {
			t.Fatalf("ignorer has %d notifications, want only the one of the other member", n)
		}
		if n := notified(other, 1); n != 1 {
			t.Fatalf("other member has %d notifications", n)
		}
		ignore(map[string]any{})
		send(sender)
		if n := notified(ignorer, 2); n != 2 {
			t.Fatalf("after unignoring, ignorer has %d notifications", n)
		}
	})
}

// TestReaderBatchSeesStateChanges: events consumed in one batch are each evaluated with
// the room's members as the batch's earlier events left them (the reader reads a room's
// state once per batch): a member who joins is notified of the messages after the join,
// one who leaves is not, and a new display name highlights from the next message on.
func TestReaderBatchSeesStateChanges(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // as above
		const server = "batch.test"
		roomID := "!batch:" + server
		sender, leaver, joiner, renamed := "@sender:"+server, "@leaver:"+server, "@joiner:"+server, "@renamed:"+server
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		members := []storage.Member{{UserID: sender, Membership: "join"}, {UserID: leaver, Membership: "join"}, {UserID: renamed, Membership: "join", DisplayName: "Old"}}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return store.AddRoom(ctx, tx, roomID, members, nil) }); err != nil {
			t.Fatal(err)
		}
		remote := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: server, Version: "10", RoomID: roomID}
		depth := int64(10)
		produce := func(out rsapi.OutputNewRoomEvent) string {
			t.Helper()
			value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &out})
			if err != nil {
				t.Fatal(err)
			}
			if _, err = log.Produce(ctx, "out", eventlog.Message{Key: []byte(roomID), Value: value}); err != nil {
				t.Fatal(err)
			}
			return out.Event.EventID()
		}
		message := func(body string) string {
			depth++
			return produce(rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: remote.Event(sender, "m.room.message", nil,
				map[string]string{"msgtype": "m.text", "body": body}, depth, nil, nil)}})
		}
		member := func(user, membership, name string) {
			depth++
			ev := remote.Event(user, "m.room.member", &user, map[string]string{"membership": membership, "displayname": name}, depth, nil, nil)
			produce(rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}, AddsStateEventIDs: []string{ev.EventID()}})
		}
		m1 := message("one")
		member(joiner, "join", "")
		member(leaver, "leave", "")
		member(renamed, "join", "New")
		m2 := message("hello New")
		marker := message("marker")
		topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
			Logger: logrus.NewEntry(logger)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_notifications n
				JOIN pushserver_events e ON e.pos = n.pos WHERE e.event_id = $1`, marker).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the marker was not evaluated")
			}
		}
		rows, err := db.QueryContext(ctx, `SELECT u.id, e.event_id, n.highlight FROM pushserver_notifications n
			JOIN pushserver_nids u ON u.nid = n.user_nid JOIN pushserver_events e ON e.pos = n.pos WHERE e.event_id <> $1`, marker)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close() // nolint: errcheck // read-only
		got := map[string]bool{}
		for rows.Next() {
			var user, event string
			var highlight bool
			if err := rows.Scan(&user, &event, &highlight); err != nil {
				t.Fatal(err)
			}
			got[fmt.Sprintf("%s %s %v", user, event, highlight)] = true
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{leaver + " " + m1 + " false": true, renamed + " " + m1 + " false": true,
			joiner + " " + m2 + " false": true, renamed + " " + m2 + " true": true}
		if !maps.Equal(got, want) {
			t.Fatalf("notifications %v, want %v", got, want)
		}
	})
}
