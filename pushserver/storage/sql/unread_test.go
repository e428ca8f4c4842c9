package sql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
)

// recount is what the unread counts are by the notification rows alone (how they were
// counted before the summary).
func recount(t *testing.T, db *sqlutil.DB, roomID string, users []string) map[string]map[string]api.Counts {
	t.Helper()
	out := map[string]map[string]api.Counts{}
	for _, u := range users {
		out[u] = map[string]api.Counts{}
	}
	rows, err := db.QueryContext(context.Background(), `SELECT user_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)
		FROM pushserver_notifications WHERE room_id = $1 AND NOT is_read GROUP BY user_id, thread_id`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var u, thread string
		var c api.Counts
		if err := rows.Scan(&u, &thread, &c.NotificationCount, &c.HighlightCount); err != nil {
			t.Fatal(err)
		}
		out[u][thread] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func withTx(t *testing.T, db *sqlutil.DB, fn func(tx *sql.Tx) error) {
	t.Helper()
	if err := db.WithTx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// addEvent records an event at ts that notifies users in thread, highlighting when
// highlight, and returns its position.
func addEvent(t *testing.T, db *sqlutil.DB, store *pushsql.Database, roomID, eventID, thread string, ts int64, highlight bool, users ...string) int64 {
	t.Helper()
	var pos int64
	withTx(t, db, func(tx *sql.Tx) error {
		var err error
		if pos, _, err = store.AddEvent(context.Background(), tx, roomID, eventID); err != nil {
			return err
		}
		var ns []storage.Notification
		for _, u := range users {
			ns = append(ns, storage.Notification{UserID: u, RoomID: roomID, EventID: eventID, ThreadID: thread,
				Actions: json.RawMessage(`["notify"]`), Highlight: highlight, Pos: pos, TS: ts})
		}
		return store.AddNotifications(context.Background(), tx, ns)
	})
	return pos
}

// TestUnreadSummaryMatchesRows records notifications in the main timeline and a thread,
// records one event twice, and reads with threaded and unthreaded receipts: after every
// step the summary's counts (UnreadCounts, UnreadTotal) are the counts of the unread rows.
func TestUnreadSummaryMatchesRows(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		const room = "!r:x"
		users := []string{"@a:x", "@b:x"}
		check := func(step string) {
			t.Helper()
			var got map[string]map[string]api.Counts
			withTx(t, db, func(tx *sql.Tx) error {
				got, err = store.UnreadCounts(ctx, tx, room, users)
				return err
			})
			want := recount(t, db, room, users)
			for _, u := range users {
				if !maps.Equal(got[u], want[u]) {
					t.Fatalf("%s: counts of %s = %v, rows say %v", step, u, got[u], want[u])
				}
				total, err := store.UnreadTotal(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				sum := 0
				for _, c := range want[u] {
					sum += c.NotificationCount
				}
				if total != sum {
					t.Fatalf("%s: total of %s = %d, rows say %d", step, u, total, sum)
				}
			}
		}
		var pos []int64
		for i := range 6 {
			thread := ""
			if i%2 == 1 {
				thread = "$root"
			}
			pos = append(pos, addEvent(t, db, store, room, fmt.Sprintf("$e%d", i), thread, 1000, i%3 == 0, users...))
		}
		check("recorded")
		addEvent(t, db, store, room, "$e2", "", 1000, false, users...)
		check("recorded twice")
		withTx(t, db, func(tx *sql.Tx) error {
			_, err := store.MarkRead(ctx, tx, "@a:x", room, "$root", pos[3])
			return err
		})
		check("thread read")
		withTx(t, db, func(tx *sql.Tx) error {
			_, err := store.MarkRead(ctx, tx, "@a:x", room, "", pos[4])
			return err
		})
		check("room read")
		withTx(t, db, func(tx *sql.Tx) error {
			changed, err := store.MarkRead(ctx, tx, "@b:x", room, "", pos[5])
			if err == nil && !changed {
				err = fmt.Errorf("reading everything changed nothing")
			}
			return err
		})
		check("all read")
	})
}
