package sql_test

import (
	"context"
	"slices"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
)

func TestAccountDataPositionsAndOffsets(t *testing.T) {
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
		if _, err = sql.Open(ctx, db, offsets); err != nil { // migrating twice is a no-op
			t.Fatal(err)
		}
		change := storage.AccountDataChange{UserID: "@a:x", Type: "m.t", Content: []byte(`{"a":1}`)}
		off := storage.Offset{Topic: "cd", Partition: 2, Next: 1}
		applied, err := d.WriteAccountData(ctx, []storage.AccountDataChange{change}, off)
		if err != nil || applied.Position != 1 || len(applied.Users) != 1 {
			t.Fatalf("first write: %+v %v", applied, err)
		}
		// Redelivery of the same content takes no position and reports nothing.
		off.Next = 2
		applied, err = d.WriteAccountData(ctx, []storage.AccountDataChange{change}, off)
		if err != nil || applied.Position != 0 || len(applied.Users) != 0 {
			t.Fatalf("replay: %+v %v", applied, err)
		}
		change.RoomID, change.Content = "!r:x", []byte(`{"b":2}`)
		off.Next = 3
		if applied, err = d.WriteAccountData(ctx, []storage.AccountDataChange{change}, off); err != nil || applied.Position != 2 {
			t.Fatalf("second change: %+v %v", applied, err)
		}
		if next, err := d.NextOffset(ctx, "cd", 2); err != nil || next != 3 {
			t.Fatalf("offset %d %v", next, err)
		}
		if max, err := d.MaxPosition(ctx); err != nil || max != 2 {
			t.Fatalf("max position %d %v", max, err)
		}
		ads, err := d.AccountData(ctx, "@a:x", 1, 2)
		if err != nil || len(ads) != 1 || ads[0].RoomID != "!r:x" || string(ads[0].Content) != `{"b":2}` {
			t.Fatalf("account data after 1: %+v %v", ads, err)
		}
	})
}

// TestPrivateKeyChanges: a change with NotifyOnly (a user-signing key, a signature on
// another user's key) shows in that user's device_lists only, once per stream ID, and wakes
// only them.
func TestPrivateKeyChanges(t *testing.T) {
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
		off := storage.Offset{Topic: "keys", Partition: 0, Next: 1}
		applied, err := d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: "@b:x", StreamID: 4, NotifyOnly: "@a:x"}}, off)
		if err != nil || applied.Position != 1 || len(applied.KeyUsers) != 0 || len(applied.Users) != 1 || applied.Users[0] != "@a:x" {
			t.Fatalf("first write: %+v %v", applied, err)
		}
		off.Next++
		if applied, err = d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: "@b:x", StreamID: 4, NotifyOnly: "@a:x"}}, off); err != nil || applied.Position != 0 {
			t.Fatalf("redelivery: %+v %v", applied, err)
		}
		for user, want := range map[string][]string{"@a:x": {"@b:x"}, "@b:x": nil, "@c:x": nil} {
			dl, err := d.DeviceListChanges(ctx, user, 0, 1)
			if err != nil || !slices.Equal(dl.Changed, want) {
				t.Fatalf("device lists of %s: %+v %v, want changed %v", user, dl, err, want)
			}
		}
	})
}

// TestKeyChangesRedelivered checks that a redelivered OutputKeyChangeEvent (same or older
// stream ID) takes no position, so no client sees the user again.
func TestKeyChangesRedelivered(t *testing.T) {
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
		off := storage.Offset{Topic: "keys", Partition: 0, Next: 1}
		applied, err := d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: "@a:x", StreamID: 2}}, off)
		if err != nil || applied.Position != 1 || len(applied.KeyUsers) != 1 {
			t.Fatalf("first write: %+v %v", applied, err)
		}
		for _, stream := range []int64{2, 1} {
			off.Next++
			applied, err = d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: "@a:x", StreamID: stream}}, off)
			if err != nil || applied.Position != 0 || len(applied.KeyUsers) != 0 {
				t.Fatalf("redelivery of stream %d: %+v %v", stream, applied, err)
			}
		}
		off.Next++
		if applied, err = d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: "@a:x", StreamID: 3}}, off); err != nil || applied.Position != 2 {
			t.Fatalf("next change: %+v %v", applied, err)
		}
		// @a:x is the user themself: their own change shows in their device lists.
		dl, err := d.DeviceListChanges(ctx, "@a:x", 1, 2)
		if err != nil || len(dl.Changed) != 1 || dl.Changed[0] != "@a:x" {
			t.Fatalf("device lists %+v %v", dl, err)
		}
	})
}
