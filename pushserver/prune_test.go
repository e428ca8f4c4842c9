package pushserver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// TestNotificationRetention runs the push server with push_server.notification_retention
// of a second and highlight_retention of an hour: a mention of @u1 followed by messages
// notify, the messages' notifications are deleted while the mention's is kept and every
// unread count stays; run again with highlight_retention of a second, the mention's is
// deleted too.
func TestNotificationRetention(t *testing.T) {
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
		const server = "retention.test"
		roomID := "!retention:" + server
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		var members []storage.Member
		for i := range 4 {
			members = append(members, storage.Member{UserID: fmt.Sprintf("@u%d:%s", i, server), Membership: "join"})
		}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return store.AddRoom(ctx, tx, roomID, members, nil) }); err != nil {
			t.Fatal(err)
		}
		remote := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: server, Version: "10", RoomID: roomID}
		for i, content := range []map[string]any{
			{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{"@u1:" + server}}},
			{"msgtype": "m.text", "body": "hi"},
			{"msgtype": "m.text", "body": "hi again"},
		} {
			ev := remote.Event("@u0:"+server, "m.room.message", nil, content, int64(10+i), nil, nil)
			value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err = log.Produce(ctx, "out", eventlog.Message{Key: []byte(roomID), Value: value}); err != nil {
				t.Fatal(err)
			}
		}
		topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		// run runs the push server with the retentions until the notifications of @u1
		// are want (event bodies, oldest first), then checks the unread counts.
		run := func(highlight time.Duration, want string) {
			t.Helper()
			cfg := &config.PushServer{NotificationRetention: config.Duration(time.Second), HighlightRetention: config.Duration(highlight)}
			s, err := pushserver.New(ctx, pushserver.Deps{Cfg: cfg, ServerName: server, DB: db, Log: log, Topics: topics,
				Logger: logrus.NewEntry(logger)})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(rctx) }()
			deadline := time.Now().Add(60 * time.Second)
			var got string
			for {
				var rows, others int
				if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pushserver_notifications").Scan(&rows); err != nil {
					t.Fatal(err)
				}
				if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_notifications n
					JOIN pushserver_nids u ON u.nid = n.user_nid WHERE u.id <> $1`, "@u1:"+server).Scan(&others); err != nil {
					t.Fatal(err)
				}
				ns, err := store.Notifications(ctx, "@u1:"+server, 0, 10, false)
				if err != nil {
					t.Fatal(err)
				}
				got = fmt.Sprint(len(ns), " highlights:", rows-others)
				var counts map[string]map[string]api.Counts
				err = db.WithTx(ctx, func(tx *sql.Tx) error {
					counts, err = store.UnreadCounts(ctx, tx, roomID, []string{"@u1:" + server, "@u2:" + server})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				recorded := counts["@u2:"+server]["main"].NotificationCount == 3
				if recorded && others == 0 && got == want {
					if c := counts["@u1:"+server]["main"]; c != (api.Counts{NotificationCount: 3, HighlightCount: 1}) {
						t.Fatalf("counts of @u1 after pruning = %+v", c)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("notifications of @u1: %s, of others %d (counts %v); want %s", got, others, counts, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		run(time.Hour, "1 highlights:1")
		run(time.Second, "0 highlights:0")
	})
}
