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
	rows, err := db.QueryContext(context.Background(), `SELECT u.id, n.thread_id, COUNT(*), SUM(CASE WHEN n.highlight THEN 1 ELSE 0 END)
		FROM pushserver_notifications n JOIN pushserver_nids u ON u.nid = n.user_nid JOIN pushserver_nids r ON r.nid = n.room_nid
		WHERE r.id = $1 AND NOT n.is_read GROUP BY u.id, n.thread_id`, roomID)
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
		if pos, _, err = store.AddEvent(context.Background(), tx, eventID, ts); err != nil {
			return err
		}
		var ns []storage.Notification
		for _, u := range users {
			ns = append(ns, storage.Notification{UserID: u, RoomID: roomID, EventID: eventID, ThreadID: thread,
				Actions: json.RawMessage(`["notify"]`), Highlight: highlight, Pos: pos})
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

		// More after the receipts: each receipt reads on from where the last one left
		// (the summary's unread_after), one behind reads nothing.
		for i := 6; i < 10; i++ {
			thread := ""
			if i%2 == 1 {
				thread = "$root"
			}
			pos = append(pos, addEvent(t, db, store, room, fmt.Sprintf("$e%d", i), thread, 1000, false, users...))
		}
		check("recorded after the receipts")
		markRead := func(user, thread string, at int64, wantChanged bool) {
			t.Helper()
			withTx(t, db, func(tx *sql.Tx) error {
				changed, err := store.MarkRead(ctx, tx, user, room, thread, at)
				if err == nil && changed != wantChanged {
					err = fmt.Errorf("receipt of %s in %q at %d changed %v, want %v", user, thread, at, changed, wantChanged)
				}
				return err
			})
		}
		markRead("@a:x", "$root", pos[9], true)
		check("thread read again")
		markRead("@a:x", "", pos[2], false)
		check("a receipt behind")
		markRead("@a:x", "", pos[6], true)
		check("room read to the first new")
		markRead("@a:x", "", pos[9], true)
		check("room read again")
		markRead("@b:x", "$root", pos[7], true)
		markRead("@b:x", "", pos[9], true)
		check("all read again")
		if left := recount(t, db, room, users); len(left["@a:x"])+len(left["@b:x"]) != 0 {
			t.Fatalf("unread after reading everything: %v", left)
		}
	})
}

// prune runs PruneNotifications to the end, in batches of two.
func prune(t *testing.T, store *pushsql.Database, notifyBefore, highlightBefore int64) int {
	t.Helper()
	return pruneAll(t, store, notifyBefore, highlightBefore, 2)
}

// pruneAll runs PruneNotifications to the end in batches of batch and reports how many
// it deleted.
func pruneAll(t testing.TB, store *pushsql.Database, notifyBefore, highlightBefore int64, batch int) int {
	t.Helper()
	var after int64
	total := 0
	for {
		last, n, done, err := store.PruneNotifications(context.Background(), after,
			storage.PruneCutoffs{NotifyBefore: notifyBefore, HighlightBefore: highlightBefore, Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if done {
			return total
		}
		after = last
	}
}

// TestPruneNotifications prunes notifications older than a day and highlights older than
// a month: /notifications keeps the rest, the unread counts keep the pruned ones until a
// receipt covers the newest pruned one (a receipt before it leaves them), and a second
// run deletes nothing.
func TestPruneNotifications(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		const room, day = "!r:x", int64(24 * 3600 * 1000)
		now := 100 * day
		users := []string{"@a:x", "@b:x"}
		events := []struct {
			id        string
			age       int64
			highlight bool
			kept      bool
		}{
			{"$ancient-highlight", 40 * day, true, false},
			{"$old", 3 * day, false, false},
			{"$old-highlight", 3 * day, true, true},
			{"$yesterday", day + 1, false, false},
			{"$recent", day / 2, false, true},
			{"$recent-highlight", day / 2, true, true},
		}
		pos := map[string]int64{}
		for _, e := range events {
			pos[e.id] = addEvent(t, db, store, room, e.id, "", now-e.age, e.highlight, users...)
		}
		withTx(t, db, func(tx *sql.Tx) error {
			_, err := store.MarkRead(ctx, tx, "@b:x", room, "", pos["$old"])
			return err
		})
		counts := func() map[string]map[string]api.Counts {
			t.Helper()
			var c map[string]map[string]api.Counts
			withTx(t, db, func(tx *sql.Tx) error {
				c, err = store.UnreadCounts(ctx, tx, room, users)
				return err
			})
			return c
		}
		before := counts()
		if n := prune(t, store, now-day, now-30*day); n != 3*len(users) {
			t.Fatalf("pruned %d notifications, want %d", n, 3*len(users))
		}
		ns, err := store.Notifications(ctx, "@a:x", 0, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, n := range ns {
			kept = append([]string{n.EventID}, kept...)
			if !n.Highlight && string(n.Actions) != `["notify"]` {
				t.Fatalf("actions of %s = %s", n.EventID, n.Actions)
			}
		}
		if fmt.Sprint(kept) != "[$old-highlight $recent $recent-highlight]" {
			t.Fatalf("kept %v", kept)
		}
		after := counts()
		for _, u := range users {
			if !maps.Equal(before[u], after[u]) {
				t.Fatalf("pruning changed the counts of %s from %v to %v", u, before[u], after[u])
			}
		}
		if n := prune(t, store, now-day, now-30*day); n != 0 {
			t.Fatalf("a second run pruned %d", n)
		}
		withTx(t, db, func(tx *sql.Tx) error {
			_, err := store.MarkRead(ctx, tx, "@a:x", room, "", pos["$old"])
			return err
		})
		if got := counts()["@a:x"][""]; got != (api.Counts{NotificationCount: 6, HighlightCount: 3}) {
			t.Fatalf("after a receipt before the newest pruned notification, counts = %+v", got)
		}
		withTx(t, db, func(tx *sql.Tx) error {
			_, err := store.MarkRead(ctx, tx, "@a:x", room, "", pos["$recent"])
			return err
		})
		if got := counts()["@a:x"][""]; got != (api.Counts{NotificationCount: 1, HighlightCount: 1}) {
			t.Fatalf("after a receipt past the pruned notifications, counts = %+v", got)
		}
	})
}

// TestMigrateUnreadSummary builds a database at schema 3 (before the summary) with read
// and unread notifications stored as that release stored them, then opens it: the
// summary counts what the rows counted, and the plain actions read back unchanged.
func TestMigrateUnreadSummary(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if err := sqlutil.Migrate(ctx, db, "pushserver", pushsql.MigrationsUpTo(3)); err != nil {
			t.Fatal(err)
		}
		rows := []struct {
			user, event, thread, actions string
			highlight, read              bool
		}{
			{"@a:x", "$1", "", `["notify"]`, false, true},
			{"@a:x", "$2", "", `["notify"]`, false, false},
			{"@a:x", "$3", "$root", `["notify",{"set_tweak":"highlight"}]`, true, false},
			{"@b:x", "$3", "$root", `["notify"]`, false, false},
		}
		for i, r := range rows {
			if _, err := db.ExecContext(ctx, `INSERT INTO pushserver_notifications (user_id, room_id, event_id, thread_id, actions,
				highlight, pos, ts, is_read) VALUES ($1, '!r:x', $2, $3, $4, $5, $6, 1000, $7)`,
				r.user, r.event, r.thread, r.actions, r.highlight, i+1, r.read); err != nil {
				t.Fatal(err)
			}
		}
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]map[string]api.Counts
		withTx(t, db, func(tx *sql.Tx) error {
			got, err = store.UnreadCounts(ctx, tx, "!r:x", []string{"@a:x", "@b:x"})
			return err
		})
		want := map[string]map[string]api.Counts{
			"@a:x": {"": {NotificationCount: 1}, "$root": {NotificationCount: 1, HighlightCount: 1}},
			"@b:x": {"$root": {NotificationCount: 1}},
		}
		for u := range want {
			if !maps.Equal(got[u], want[u]) {
				t.Fatalf("counts of %s = %v, want %v", u, got[u], want[u])
			}
		}
		ns, err := store.Notifications(ctx, "@a:x", 0, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range ns {
			if w := rows[len(ns)-1-i].actions; string(n.Actions) != w {
				t.Fatalf("actions of %s = %s, want %s", n.EventID, n.Actions, w)
			}
		}
		// The migrated summary's rows read from the start.
		withTx(t, db, func(tx *sql.Tx) error {
			changed, err := store.MarkRead(ctx, tx, "@a:x", "!r:x", "", 3)
			if err == nil && !changed {
				err = fmt.Errorf("reading the migrated notifications changed nothing")
			}
			if err == nil {
				got, err = store.UnreadCounts(ctx, tx, "!r:x", []string{"@a:x"})
			}
			return err
		})
		if len(got["@a:x"]) != 0 {
			t.Fatalf("counts of @a:x after reading everything = %v", got["@a:x"])
		}
	})
}
