package sql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
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
// into a fresh database, and reports its size per message (db-bytes/msg): on SQLite the
// file's size, on PostgreSQL the sum of pg_total_relation_size (rows, indexes and TOAST)
// of the push server's tables. "kept" keeps every notification, "pruned" prunes, every
// simulated hour, with the default retentions (a day, thirty days for highlights) as the
// push server does; on PostgreSQL each prune is followed by the VACUUM that autovacuum
// would run, so that the deleted rows' space is reused as SQLite reuses its free pages.
func BenchmarkNotificationBytes(b *testing.B) {
	engines := []struct {
		name string
		dsn  func(b *testing.B) string
		size func(b *testing.B, db *sqlutil.DB, dsn string) int64
	}{
		{"sqlite", func(b *testing.B) string { return "file:" + filepath.Join(b.TempDir(), "push.db") }, sqliteBytes},
		{"postgres", func(b *testing.B) string { return test.PostgresDSN(b) }, postgresBytes},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			b.Run("kept", func(b *testing.B) { benchNotificationBytes(b, e.dsn, e.size, false) })
			b.Run("pruned", func(b *testing.B) { benchNotificationBytes(b, e.dsn, e.size, true) })
		})
	}
}

// sqliteBytes is the size of the closed database's file.
func sqliteBytes(b *testing.B, db *sqlutil.DB, dsn string) int64 {
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(strings.TrimPrefix(dsn, "file:"))
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

// postgresBytes is the size of the push server's tables with their indexes.
func postgresBytes(b *testing.B, db *sqlutil.DB, _ string) int64 {
	defer db.Close() // nolint: errcheck // only read from
	var n int64
	if err := db.QueryRowContext(context.Background(), `SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c
		JOIN pg_namespace ns ON ns.oid = c.relnamespace
		WHERE c.relkind = 'r' AND ns.nspname = current_schema() AND c.relname LIKE 'pushserver%'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

func benchNotificationBytes(b *testing.B, dsn func(b *testing.B) string, size func(b *testing.B, db *sqlutil.DB, dsn string) int64, pruned bool) {
	for b.Loop() {
		b.StopTimer()
		source := dsn(b)
		db, err := sqlutil.Open(source)
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
				if db.Engine() == sqlutil.Postgres {
					if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
						b.Fatal(err)
					}
				}
				lastPrune = ts
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(size(b, db, source))/sizeMessages, "db-bytes/msg")
		b.StartTimer()
	}
}

// recordMessage records message i, sent at ts, as the push reader does.
func recordMessage(ctx context.Context, b testing.TB, db *sqlutil.DB, store *pushsql.Database, i int, ts time.Time) {
	b.Helper()
	roomID := fmt.Sprintf("!room%d:bench.test", i%sizeRooms)
	eventID := fmt.Sprintf("$event%08d-abcdefghijklmnopqrstuvwxyz0123456", i)
	err := db.WithTx(ctx, func(tx *sql.Tx) error {
		pos, _, err := store.AddEvent(ctx, tx, eventID, ts.UnixMilli())
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
				Actions: json.RawMessage(`["notify"]`), Pos: pos}
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
