package sql_test

import (
	"context"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
)

// TestEphemeralWritesDedupe checks that typing, receipts, to-device messages and presence
// take a position only when they change, so redelivery changes nothing, and what the
// readers return.
func TestEphemeralWritesDedupe(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d := sql.OpenForTest(t, db)
		off := storage.Offset{Topic: "t", Partition: 0, Next: 1}

		typing := []storage.Typing{{RoomID: "!r:x", Users: []storage.TypingUser{{UserID: "@a:x", ExpiresTS: 10}}}}
		a, err := d.WriteTyping(ctx, typing, off)
		if err != nil || a.Position != 1 || len(a.EphemeralRooms) != 1 {
			t.Fatalf("typing: %+v %v", a, err)
		}
		if a, err = d.WriteTyping(ctx, typing, off); err != nil || a.Position != 0 {
			t.Fatalf("typing replay: %+v %v", a, err)
		}
		got, err := d.Typing(ctx, []string{"!r:x", "!other:x"}, 0, 1)
		if err != nil || len(got) != 1 || got[0].Users[0].UserID != "@a:x" {
			t.Fatalf("typing read: %+v %v", got, err)
		}

		pub := storage.Receipt{RoomID: "!r:x", UserID: "@b:x", Type: "m.read", EventID: "$e1", TS: 5}
		priv := storage.Receipt{RoomID: "!r:x", UserID: "@b:x", Type: "m.read.private", EventID: "$e1", TS: 5}
		if a, err = d.WriteReceipts(ctx, []storage.Receipt{pub, priv}, off); err != nil || a.Position != 3 ||
			len(a.EphemeralRooms) != 1 || len(a.Users) != 1 {
			t.Fatalf("receipts: %+v %v", a, err)
		}
		if a, err = d.WriteReceipts(ctx, []storage.Receipt{pub}, off); err != nil || a.Position != 0 {
			t.Fatalf("receipt replay: %+v %v", a, err)
		}
		if rs, err := d.Receipts(ctx, "@a:x", []string{"!r:x"}, 0, 3); err != nil || len(rs) != 1 || rs[0].Type != "m.read" {
			t.Fatalf("another user must not see the private receipt: %+v %v", rs, err)
		}
		if rs, err := d.Receipts(ctx, "@b:x", []string{"!r:x"}, 0, 3); err != nil || len(rs) != 2 {
			t.Fatalf("the receipt's user sees both: %+v %v", rs, err)
		}
		for _, c := range []struct {
			what        string
			find        func(ctx context.Context, after, upTo int64) ([]string, error)
			after, upTo int64
			want        int
		}{{"typing", d.TypingRooms, 0, 1, 1}, {"typing later", d.TypingRooms, 1, 3, 0}, {"receipts", d.ReceiptRooms, 1, 3, 1}, {"receipts earlier", d.ReceiptRooms, 0, 1, 0}} {
			if rooms, err := c.find(ctx, c.after, c.upTo); err != nil || len(rooms) != c.want || c.want == 1 && rooms[0] != "!r:x" {
				t.Fatalf("rooms with %s in (%d, %d]: %v %v", c.what, c.after, c.upTo, rooms, err)
			}
		}

		msg := storage.ToDeviceMessage{MessageID: "m1", UserID: "@b:x", DeviceID: "D", Sender: "@a:x", Type: "m.test", Content: []byte(`{"n":1}`)}
		if a, err = d.WriteToDevice(ctx, []storage.ToDeviceMessage{msg}, off); err != nil || a.Position != 4 {
			t.Fatalf("to-device: %+v %v", a, err)
		}
		if msgs, err := d.ToDevice(ctx, "@b:x", "D", 4); err != nil || len(msgs) != 1 || string(msgs[0].Content) != `{"n":1}` {
			t.Fatalf("to-device read: %+v %v", msgs, err)
		}
		if msgs, err := d.ToDevice(ctx, "@b:x", "OTHER", 4); err != nil || len(msgs) != 0 {
			t.Fatalf("another device: %+v %v", msgs, err)
		}
		if err = d.AckToDevice(ctx, "@b:x", "D", 4); err != nil {
			t.Fatal(err)
		}
		if msgs, err := d.ToDevice(ctx, "@b:x", "D", 4); err != nil || len(msgs) != 0 {
			t.Fatalf("acknowledged messages must not come again: %+v %v", msgs, err)
		}
		// A redelivery after the acknowledgement is recognised until pruned.
		if a, err = d.WriteToDevice(ctx, []storage.ToDeviceMessage{msg}, off); err != nil || a.Position != 0 {
			t.Fatalf("to-device redelivery: %+v %v", a, err)
		}

		status := "away"
		p := storage.Presence{UserID: "@a:x", Presence: "unavailable", StatusMsg: &status, LastActiveTS: 7}
		if a, err = d.WritePresence(ctx, []storage.Presence{p}, off); err != nil || a.Position != 5 || len(a.PresenceUsers) != 1 {
			t.Fatalf("presence: %+v %v", a, err)
		}
		if a, err = d.WritePresence(ctx, []storage.Presence{p}, off); err != nil || a.Position != 0 {
			t.Fatalf("presence replay: %+v %v", a, err)
		}
		// Nobody shares a room with @a:x yet: only @a:x sees it.
		if ps, err := d.Presence(ctx, "@a:x", 0, 5); err != nil || len(ps) != 1 || *ps[0].StatusMsg != "away" {
			t.Fatalf("own presence: %+v %v", ps, err)
		}
		if ps, err := d.Presence(ctx, "@b:x", 0, 5); err != nil || len(ps) != 0 {
			t.Fatalf("a stranger's presence: %+v %v", ps, err)
		}
		// Incremental syncs take the other path, with the same answers.
		if ps, err := d.Presence(ctx, "@a:x", 4, 5); err != nil || len(ps) != 1 {
			t.Fatalf("own presence, incremental: %+v %v", ps, err)
		}
		if ps, err := d.Presence(ctx, "@b:x", 4, 5); err != nil || len(ps) != 0 {
			t.Fatalf("a stranger's presence, incremental: %+v %v", ps, err)
		}
		// PresenceOf reads listed users' presence whoever asks, up to a position.
		if ps, err := d.PresenceOf(ctx, []string{"@a:x", "@nobody:x"}, 5); err != nil || len(ps) != 1 || ps[0].UserID != "@a:x" || ps[0].Presence != "unavailable" {
			t.Fatalf("presence of listed users: %+v %v", ps, err)
		}
		if ps, err := d.PresenceOf(ctx, []string{"@a:x"}, 4); err != nil || len(ps) != 0 {
			t.Fatalf("presence of listed users before it was written: %+v %v", ps, err)
		}
	})
}
