package sql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
)

// TestEnqueuePushesInBatches queues more pushes than one INSERT writes, for users with
// and without pushers: each pusher gets one push per notification of its user, in order,
// and a pusher whose queue was postponed keeps its new pushes behind the postponed head.
func TestEnqueuePushesInBatches(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		users := []string{"@a:x", "@b:x", "@nopusher:x"}
		for _, u := range users[:2] {
			for _, app := range []string{"app1", "app2"} {
				p := &storage.StoredPusher{UserID: u, DeviceID: "D", Pusher: api.Pusher{PushKey: "k", Kind: api.PusherKindHTTP, AppID: app,
					Data: json.RawMessage(`{"url":"https://gw.test/_matrix/push/v1/notify"}`)}}
				if err = store.UpsertPusher(ctx, p, true); err != nil {
					t.Fatal(err)
				}
			}
		}
		enqueue := func(first, n int) {
			t.Helper()
			var ns []storage.Notification
			for i := first; i < first+n; i++ {
				for _, u := range users {
					ns = append(ns, storage.Notification{UserID: u, RoomID: "!r:x", EventID: fmt.Sprintf("$e%03d", i), Actions: json.RawMessage(`["notify"]`)})
				}
			}
			if err := db.WithTx(ctx, func(tx *sql.Tx) error { return store.EnqueuePushes(ctx, tx, ns, nil) }); err != nil {
				t.Fatal(err)
			}
		}
		enqueue(0, 1)
		a1 := storage.PusherKey{UserID: "@a:x", AppID: "app1", PushKey: "k"}
		later := time.Now().Add(time.Hour).UnixMilli()
		heads, _, err := store.QueueHeads(ctx, a1, time.Now().UnixMilli(), 0, 10)
		if err != nil || len(heads) != 1 {
			t.Fatalf("heads %v, %v", heads, err)
		}
		head := heads[0]
		if err = store.Postpone(ctx, a1, head.Seq, later); err != nil {
			t.Fatal(err)
		}
		enqueue(1, 120)
		var total int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pushserver_push_queue").Scan(&total); err != nil || total != 4*121 {
			t.Fatalf("%d pushes queued (%v), want %d", total, err, 4*121)
		}
		var early int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pushserver_push_queue WHERE user_id = '@a:x' AND app_id = 'app1' AND next_ts < $1", later).
			Scan(&early); err != nil || early != 0 {
			t.Fatalf("%d pushes of the postponed pusher due before its head (%v)", early, err)
		}
		b2 := storage.PusherKey{UserID: "@b:x", AppID: "app2", PushKey: "k"}
		// Read past the pushes read before (the deliverer's cursor, before their removal
		// commits), then from the head once they are removed.
		var after int64
		var read []int64
		for i := 0; i < 121; {
			heads, _, err := store.QueueHeads(ctx, b2, time.Now().UnixMilli(), after, 50)
			if err != nil || len(heads) != min(50, 121-i) {
				t.Fatalf("push %d: %d heads, %v", i, len(heads), err)
			}
			for _, head := range heads {
				if head.EventID != fmt.Sprintf("$e%03d", i) {
					t.Fatalf("push %d: head %+v", i, head)
				}
				after = head.Seq
				read = append(read, head.Seq)
				i++
			}
		}
		if err = store.Delivered(ctx, read[:100]); err != nil {
			t.Fatal(err)
		}
		heads, _, err = store.QueueHeads(ctx, b2, time.Now().UnixMilli(), 0, 50)
		if err != nil || len(heads) != 21 || heads[0].EventID != "$e100" {
			t.Fatalf("after removing 100: %d heads (%v)", len(heads), err)
		}
	})
}
