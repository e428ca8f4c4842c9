package sql_test

import (
	"context"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
)

// TestActivityIndex: the in-memory room activity holds what was stored before it was
// loaded and, asked up to a later position, what was stored since; member events are not
// of a bump type, so the bump stamp stays at the create event's (never stored here: 0).
func TestActivityIndex(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		offsets, err := eventlog.NewOffsetStore(ctx, db, "syncapi")
		if err != nil {
			t.Fatal(err)
		}
		d, err := sql.Open(ctx, db, offsets)
		if err != nil {
			t.Fatal(err)
		}
		const a = "@a:x"
		w := newMemberWriter(t, d, a, "r1", "r2")
		w.member("r1", a, "join")
		r1At := w.pos
		w.member("r2", a, "join")
		x, err := storage.NewActivityIndex(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		r1, r2 := w.rooms["r1"].r.RoomID, w.rooms["r2"].r.RoomID
		check := func(what string, upTo int64, want map[string]storage.RoomActivity) {
			t.Helper()
			got, err := x.Rooms(ctx, []string{r1, r2, "!unknown:x"}, upTo)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %+v, want %+v", what, got, want)
			}
			for id, a := range want {
				if got[id] != a {
					t.Fatalf("%s: %s is %+v, want %+v", what, id, got[id], a)
				}
			}
		}
		check("loaded", w.pos, map[string]storage.RoomActivity{r1: {Last: r1At}, r2: {Last: w.pos}})
		w.member("r1", "@b:x", "join")
		check("after a later event", w.pos, map[string]storage.RoomActivity{r1: {Last: w.pos}, r2: {Last: r1At + 1}})
	})
}
