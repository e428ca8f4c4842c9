package sql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
)

// sizeMessages, sizeMembers and sizeSpan shape BenchmarkNotificationBytes: messages sent
// into rooms of sizeMembers local members, their timestamps spread evenly over sizeSpan.
const (
	sizeMessages = 6000
	sizeMembers  = 20
	sizeRooms    = 10
	sizeSpan     = 72 * time.Hour
)

// BenchmarkNotificationBytes records what the push reader records for sizeMessages
// messages in rooms of 20 members (each notifying the 19 members but the sender with the
// default ["notify"]; one in fifty a highlight), spread over three days of event time,
// into a fresh SQLite database, and reports its file size per message (db-bytes/msg):
// "kept" keeps every notification, "pruned" prunes, every simulated hour, with the
// default retentions (a day, thirty days for highlights) as the push server does.
func BenchmarkNotificationBytes(b *testing.B) {
	b.Run("kept", func(b *testing.B) { benchNotificationBytes(b, false) })
	b.Run("pruned", func(b *testing.B) { benchNotificationBytes(b, true) })
}

func benchNotificationBytes(b *testing.B, pruned bool) {
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "push.db")
		db, err := sqlutil.Open("file:" + path)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now().Add(-sizeSpan)
		lastPrune := start
		for i := range sizeMessages {
			ts := start.Add(sizeSpan * time.Duration(i) / sizeMessages)
			recordMessage(ctx, b, db, store, i, ts)
			if pruned && ts.Sub(lastPrune) >= time.Hour {
				pruneAll(b, store, ts.Add(-24*time.Hour).UnixMilli(), ts.Add(-720*time.Hour).UnixMilli(), 1000)
				lastPrune = ts
			}
		}
		b.StopTimer()
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size())/sizeMessages, "db-bytes/msg")
		b.StartTimer()
	}
}

// recordMessage records message i, sent at ts, as the push reader does.
func recordMessage(ctx context.Context, b *testing.B, db *sqlutil.DB, store *pushsql.Database, i int, ts time.Time) {
	b.Helper()
	roomID := fmt.Sprintf("!room%d:bench.test", i%sizeRooms)
	eventID := fmt.Sprintf("$event%08d-abcdefghijklmnopqrstuvwxyz0123456", i)
	err := db.WithTx(ctx, func(tx *sql.Tx) error {
		pos, _, err := store.AddEvent(ctx, tx, roomID, eventID)
		if err != nil {
			return err
		}
		sender := i % sizeMembers
		var ns []storage.Notification
		for m := range sizeMembers {
			if m == sender {
				continue
			}
			n := storage.Notification{UserID: fmt.Sprintf("@user%d:bench.test", m), RoomID: roomID, EventID: eventID,
				Actions: json.RawMessage(`["notify"]`), Pos: pos, TS: ts.UnixMilli()}
			if i%50 == 0 {
				n.Highlight = true
				n.Actions = json.RawMessage(`["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]`)
			}
			ns = append(ns, n)
		}
		return store.AddNotifications(ctx, tx, ns)
	})
	if err != nil {
		b.Fatal(err)
	}
}
