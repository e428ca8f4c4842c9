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

// listed is a notification as GET /notifications shows it, with its event's position.
func listed(n storage.Notification) string {
	return fmt.Sprintf("%s %s thread=%q %s highlight=%v ts=%d read=%v pos=%d", n.RoomID, n.EventID, n.ThreadID, n.Actions,
		n.Highlight, n.TS, n.Read, n.Pos)
}

// TestMigrateSlimNotifications builds a database at schema 5 (notifications as rows of
// text) with read and unread notifications in two rooms, a thread and a highlight, and one
// notification whose event pushserver_events never held, then opens it: every user's
// notifications list as before (room, event, thread, actions, highlight, timestamp, read,
// position), the events keep their positions and the orphan gets one after them, the
// unread counts are unchanged, and receipts, recording again and pruning work on the
// migrated rows.
func TestMigrateSlimNotifications(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if err := sqlutil.Migrate(ctx, db, "pushserver", pushsql.MigrationsUpTo(5)); err != nil {
			t.Fatal(err)
		}
		pos := map[string]int64{}
		for _, e := range []struct{ id, room string }{{"$e1", "!r:x"}, {"$e2", "!r:x"}, {"$e3", "!s:x"}} {
			var p int64
			if err := db.QueryRowContext(ctx, `INSERT INTO pushserver_events (event_id, room_id) VALUES ($1, $2) RETURNING pos`,
				e.id, e.room).Scan(&p); err != nil {
				t.Fatal(err)
			}
			pos[e.id] = p
		}
		const highlightActions = `["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]`
		rows := []struct {
			user, room, event, thread, actions string
			highlight, read                    bool
			ts                                 int64
		}{
			{"@a:x", "!r:x", "$e1", "", "", false, true, 1000},
			{"@b:x", "!r:x", "$e1", "", "", false, false, 1000},
			{"@a:x", "!r:x", "$e2", "$root", highlightActions, true, false, 2000},
			{"@a:x", "!s:x", "$e3", "", "", false, false, 3000},
			{"@a:x", "!s:x", "$orphan", "", "", false, false, 4000},
		}
		for _, r := range rows {
			p, ok := pos[r.event]
			if !ok {
				p = 99
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO pushserver_notifications (user_id, room_id, event_id, thread_id, actions,
				highlight, pos, ts, is_read) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				r.user, r.room, r.event, r.thread, r.actions, r.highlight, p, r.ts, r.read); err != nil {
				t.Fatal(err)
			}
		}
		// The summary as schema 5 kept it for those rows.
		for _, u := range []struct {
			user, room, thread string
			notifs, highlights int
		}{{"@b:x", "!r:x", "", 1, 0}, {"@a:x", "!r:x", "$root", 1, 1}, {"@a:x", "!s:x", "", 2, 0}} {
			if _, err := db.ExecContext(ctx, `INSERT INTO pushserver_unread (user_id, room_id, thread_id, notifs, highlights)
				VALUES ($1, $2, $3, $4, $5)`, u.user, u.room, u.thread, u.notifs, u.highlights); err != nil {
				t.Fatal(err)
			}
		}
		users := []string{"@a:x", "@b:x"}
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		orphan, ok, err := store.EventPosition(ctx, nil, "$orphan")
		if err != nil || !ok || orphan <= pos["$e3"] {
			t.Fatalf("position of the event only a notification held = %d, %v, %v; want one after %d", orphan, ok, err, pos["$e3"])
		}
		pos["$orphan"] = orphan
		for id, want := range pos {
			if got, ok, err := store.EventPosition(ctx, nil, id); err != nil || !ok || got != want {
				t.Fatalf("position of %s = %d, %v, %v; want %d", id, got, ok, err, want)
			}
		}
		list := func(user string, before int64, limit int) []storage.Notification {
			t.Helper()
			ns, err := store.Notifications(ctx, user, before, limit, false)
			if err != nil {
				t.Fatal(err)
			}
			return ns
		}
		for _, user := range users {
			var want []string
			for i := len(rows) - 1; i >= 0; i-- {
				r := rows[i]
				if r.user != user {
					continue
				}
				n := storage.Notification{RoomID: r.room, EventID: r.event, ThreadID: r.thread, Actions: json.RawMessage(r.actions),
					Highlight: r.highlight, TS: r.ts, Read: r.read, Pos: pos[r.event]}
				if r.actions == "" {
					n.Actions = json.RawMessage(`["notify"]`)
				}
				want = append(want, listed(n))
			}
			var got []string
			for _, n := range list(user, 0, 10) {
				got = append(got, listed(n))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("notifications of %s after the migration:\n%s\nwant\n%s", user, got, want)
			}
		}
		page := list("@a:x", 0, 2)
		if rest := list("@a:x", page[1].ID, 10); len(rest) != 2 || rest[0].EventID != "$e2" || rest[1].EventID != "$e1" {
			t.Fatalf("the page after %s is %v", page[1].EventID, rest)
		}
		counts := func() map[string]map[string]api.Counts {
			t.Helper()
			out := map[string]map[string]api.Counts{}
			withTx(t, db, func(tx *sql.Tx) error {
				for _, room := range []string{"!r:x", "!s:x"} {
					c, err := store.UnreadCounts(ctx, tx, room, users)
					if err != nil {
						return err
					}
					for u, threads := range c {
						for thread, n := range threads {
							if out[room+u] == nil {
								out[room+u] = map[string]api.Counts{}
							}
							out[room+u][thread] = n
						}
					}
				}
				return nil
			})
			return out
		}
		want := map[string]map[string]api.Counts{
			"!r:x@b:x": {"": {NotificationCount: 1}},
			"!r:x@a:x": {"$root": {NotificationCount: 1, HighlightCount: 1}},
			"!s:x@a:x": {"": {NotificationCount: 2}},
		}
		if got := counts(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Fatalf("counts after the migration = %v, want %v", got, want)
		}
		// Recording a migrated notification again changes nothing.
		withTx(t, db, func(tx *sql.Tx) error {
			return store.AddNotifications(ctx, tx, []storage.Notification{{UserID: "@b:x", RoomID: "!r:x", EventID: "$e1",
				Actions: json.RawMessage(`["notify"]`), Pos: pos["$e1"]}})
		})
		if got := counts(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Fatalf("counts after recording a migrated notification again = %v, want %v", got, want)
		}
		withTx(t, db, func(tx *sql.Tx) error {
			changed, err := store.MarkRead(ctx, tx, "@a:x", "!s:x", "", pos["$e3"])
			if err == nil && !changed {
				err = fmt.Errorf("a receipt on a migrated notification changed nothing")
			}
			return err
		})
		want["!s:x@a:x"] = map[string]api.Counts{"": {NotificationCount: 1}}
		if got := counts(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Fatalf("counts after a receipt = %v, want %v", got, want)
		}
		// The migrated timestamps decide what pruning deletes: every notification before
		// 3500 but the highlight.
		if n := pruneAll(t, store, 3500, 0, 2); n != 3 {
			t.Fatalf("pruned %d notifications, want 3", n)
		}
		var left []string
		for _, n := range list("@a:x", 0, 10) {
			left = append(left, n.EventID)
		}
		if fmt.Sprint(left) != "[$orphan $e2]" || len(list("@b:x", 0, 10)) != 0 {
			t.Fatalf("after pruning @a:x has %v, @b:x %v", left, list("@b:x", 0, 10))
		}
	})
}
