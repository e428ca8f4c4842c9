package sql_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
)

// TestDeviceListChanges: who enters a user's device_lists.changed and .left between two
// positions, for each way the users sharing a room with them can change: their own joins
// (every member of the room), a room-mate's new keys (a stranger's are not theirs to see),
// a member who leaves the only room shared (left) or one of two shared rooms (nothing), and
// the user leaving a room (its members they no longer share a room with are left).
func TestDeviceListChanges(t *testing.T) {
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
		const a, b, c, dd, e = "@a:x", "@b:x", "@c:x", "@d:x", "@e:x"
		w := newMemberWriter(t, d, a, "r1", "r2", "r3")
		member := w.member
		keys := func(users ...string) {
			t.Helper()
			for _, u := range users {
				w.off.Next++
				applied, err := d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: u, StreamID: w.off.Next}}, w.off)
				if err != nil {
					t.Fatal(err)
				}
				w.pos = applied.Position
			}
		}
		check := func(what string, from int64, changed, left []string) {
			t.Helper()
			dl, err := d.DeviceListChanges(ctx, a, from, w.pos)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(dl.Changed) != fmt.Sprint(changed) || fmt.Sprint(dl.Left) != fmt.Sprint(left) {
				t.Fatalf("%s: changed %v left %v, want changed %v left %v", what, dl.Changed, dl.Left, changed, left)
			}
		}
		member("r1", b, "join")
		member("r2", c, "join")
		member("r2", dd, "join")
		member("r3", c, "join")

		from := w.pos
		member("r1", a, "join")
		check("a joins r1", from, []string{a, b}, nil)
		from = w.pos
		member("r2", a, "join")
		check("a joins r2", from, []string{a, c, dd}, nil)
		from = w.pos
		keys(b, e)
		check("keys of a room-mate and a stranger", from, []string{b}, nil)
		from = w.pos
		member("r2", dd, "leave")
		check("d leaves the only room shared", from, nil, []string{dd})
		member("r3", a, "join")
		from = w.pos
		member("r2", c, "leave")
		check("c leaves one of two rooms shared", from, nil, nil)
		from = w.pos
		member("r1", a, "leave")
		check("a leaves r1", from, nil, []string{b})
	})
}

// TestDeviceListChangesRoomCounts: a room-mate's new keys reach device_lists.changed and a
// stranger's do not, whichever side is in many rooms (sharingARoom starts from the user's
// rooms when they are few, from the candidates' memberships otherwise): a user in one room
// with a mate in twelve, a user in twelve rooms with a mate in one, and a user in no room.
func TestDeviceListChangesRoomCounts(t *testing.T) {
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
		const few, many, busy, lonely, stranger = "@few:x", "@many:x", "@busy:x", "@lonely:x", "@stranger:x"
		var names []string
		for i := range 12 {
			names = append(names, fmt.Sprint("r", i))
		}
		w := newMemberWriter(t, d, busy, append(names, "elsewhere")...)
		for _, name := range names {
			w.member(name, busy, "join")
		}
		w.member("r3", few, "join")
		for _, name := range names {
			w.member(name, many, "join")
		}
		w.member("r5", lonely, "join")
		w.member("r5", lonely, "leave")
		w.member("elsewhere", stranger, "join")
		from := w.pos
		for _, u := range []string{busy, few, stranger} {
			w.off.Next++
			applied, err := d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: u, StreamID: w.off.Next}}, w.off)
			if err != nil {
				t.Fatal(err)
			}
			w.pos = applied.Position
		}
		for _, c := range []struct {
			user string
			want []string
		}{
			{few, []string{busy, few}},
			{many, []string{busy, few}},
			{busy, []string{busy, few}},
			{lonely, nil},
		} {
			dl, err := d.DeviceListChanges(ctx, c.user, from, w.pos)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(dl.Changed) != fmt.Sprint(c.want) || len(dl.Left) != 0 {
				t.Errorf("%s: changed %v left %v, want changed %v", c.user, dl.Changed, dl.Left, c.want)
			}
		}
	})
}

// BenchmarkDeviceListChangesFanOut is one room-mate's device_lists after a key change of a
// user in 200 rooms, the room-mate being in one of them: what each of the user's hundreds
// of room-mates' syncs asks when the user adds a device.
func BenchmarkDeviceListChangesFanOut(b *testing.B) {
	for _, engine := range []string{"sqlite", "postgres"} {
		b.Run(engine, func(b *testing.B) {
			dsn := "file:" + filepath.Join(b.TempDir(), "bench.db")
			if engine == "postgres" {
				dsn = test.PostgresDSN(b)
			}
			db, err := sqlutil.Open(dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
			ctx := context.Background()
			offsets, err := eventlog.NewOffsetStore(ctx, db, "syncapi")
			if err != nil {
				b.Fatal(err)
			}
			d, err := sql.Open(ctx, db, offsets)
			if err != nil {
				b.Fatal(err)
			}
			const alice, mate = "@alice:x", "@mate:x"
			var names []string
			for i := range 200 {
				names = append(names, fmt.Sprint("r", i))
			}
			w := newMemberWriter(b, d, alice, names...)
			for _, name := range names {
				w.member(name, alice, "join")
			}
			w.member("r7", mate, "join")
			from := w.pos
			w.off.Next++
			applied, err := d.WriteKeyChanges(ctx, []storage.KeyChange{{UserID: alice, StreamID: 1}}, w.off)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				dl, err := d.DeviceListChanges(ctx, mate, from, applied.Position)
				if err != nil || len(dl.Changed) != 1 {
					b.Fatalf("changed %v, %v", dl.Changed, err)
				}
			}
		})
	}
}

// memberWriter writes membership events of rooms it creates into a syncapi database, as
// the OutputRoomEvent consumer would.
type memberWriter struct {
	t     testing.TB
	d     *sql.Database
	rooms map[string]*memberRoom
	off   storage.Offset
	pos   int64 // the position of the last write
}

type memberRoom struct {
	r       *roomtest.Remote
	last    gomatrixserverlib.PDU
	members map[string]string // user -> current member event ID
}

func newMemberWriter(t testing.TB, d *sql.Database, creator string, names ...string) *memberWriter {
	key := roomtest.NewKey(t)
	w := &memberWriter{t: t, d: d, rooms: map[string]*memberRoom{}, off: storage.Offset{Topic: "out"}}
	for _, name := range names {
		create := roomtest.CreateEvent(t, key, "x", gomatrixserverlib.RoomVersionV10, creator, "!"+name+":x")
		w.rooms[name] = &memberRoom{r: &roomtest.Remote{T: t, Key: key, Origin: "x", Version: gomatrixserverlib.RoomVersionV10, RoomID: create.RoomID().String()},
			last: create, members: map[string]string{}}
	}
	return w
}

// member stores user's membership of room name.
func (w *memberWriter) member(name, user, membership string) {
	w.t.Helper()
	rm := w.rooms[name]
	ev := rm.r.Event(user, spec.MRoomMember, &user, map[string]any{"membership": membership}, rm.last.Depth()+1, []gomatrixserverlib.PDU{rm.last}, nil)
	ne := storage.NewRoomEvent{Event: ev, AddsState: []gomatrixserverlib.PDU{ev}}
	if old, ok := rm.members[user]; ok {
		ne.RemovesStateEventIDs = []string{old}
	}
	w.off.Next++
	applied, err := w.d.WriteRoomEvents(context.Background(), []storage.NewRoomEvent{ne}, w.off)
	if err != nil {
		w.t.Fatal(err)
	}
	w.pos = applied.Position
	rm.last, rm.members[user] = ev, ev.EventID()
}

// TestMembershipCache: the cached membership history is what storage holds, at every
// position asked (older ones included), whole, per room and after a position, as
// memberships are added; a history asked beyond the committed position does not hide the
// changes stored later.
func TestMembershipCache(t *testing.T) {
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
		cached := storage.WithMembershipCache(d, 1<<20, nil)
		const a = "@a:x"
		w := newMemberWriter(t, d, a, "r1", "r2", "r3")
		same := func(what string, upTo int64) {
			t.Helper()
			want, err := d.MembershipHistory(ctx, a, upTo)
			if err != nil {
				t.Fatal(err)
			}
			got, err := cached.MembershipHistory(ctx, a, upTo)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.All()) != fmt.Sprint(want.All()) {
				t.Fatalf("%s (up to %d): cached %v, stored %v", what, upTo, got.All(), want.All())
			}
			for _, room := range []string{"r1", "r2", "r3"} {
				roomID := w.rooms[room].r.RoomID
				if g, s := got.Room(roomID), want.Room(roomID); fmt.Sprint(g) != fmt.Sprint(s) {
					t.Fatalf("%s (up to %d), room %s: cached %v, stored %v", what, upTo, room, g, s)
				}
			}
			for _, after := range []int64{0, upTo - 3, upTo - 1} {
				if g, s := got.After(after), want.After(after); fmt.Sprint(g) != fmt.Sprint(s) {
					t.Fatalf("%s (up to %d), after %d: cached %v, stored %v", what, upTo, after, g, s)
				}
			}
		}
		var positions []int64
		steps := []struct{ room, membership string }{{"r1", "join"}, {"r2", "invite"}, {"r2", "join"}, {"r3", "join"}, {"r1", "leave"}, {"r1", "join"}}
		for i, s := range steps {
			same(fmt.Sprintf("before step %d, ahead of what is committed", i), w.pos+5)
			w.member(s.room, a, s.membership)
			positions = append(positions, w.pos)
			same(fmt.Sprintf("after step %d", i), w.pos)
			for _, p := range positions {
				same(fmt.Sprintf("after step %d, at the older position %d", i, p), p)
			}
		}
	})
}

// TestUnsharedRemoteUsers: after membership changes, the other servers' users who share no
// joined room with a local user (of server x) any more: a remote user leaving the only room
// shared, a local user leaving a room whose remote member still shares another (nothing), the
// last local member of that other room leaving, and a ban elsewhere of a user still sharing a
// room (nothing). The server name is matched literally, not as a LIKE pattern.
func TestUnsharedRemoteUsers(t *testing.T) {
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
		const a, l, r, s, u = "@a:x", "@l:x", "@r:y", "@s:y", "@u:z"
		w := newMemberWriter(t, d, a, "r1", "r2", "r3")
		for _, m := range [][2]string{{"r1", a}, {"r1", r}, {"r1", s}, {"r2", l}, {"r2", s}, {"r3", a}, {"r3", u}} {
			w.member(m[0], m[1], "join")
		}
		check := func(what, server string, change storage.MemberChange, want []string) {
			t.Helper()
			w.member(change.RoomID, change.UserID, change.Membership)
			change.RoomID = w.rooms[change.RoomID].r.RoomID
			got, err := d.UnsharedRemoteUsers(ctx, server, []storage.MemberChange{change})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
		}
		check("r leaves the only room shared", "x", storage.MemberChange{RoomID: "r1", UserID: r, Membership: "leave"}, []string{r})
		check("a leaves r1, s still shares r2 with l", "x", storage.MemberChange{RoomID: "r1", UserID: a, Membership: "leave"}, nil)
		check("l leaves r2, the last room shared with s", "x", storage.MemberChange{RoomID: "r2", UserID: l, Membership: "leave"}, []string{s})
		check("u banned from r2, still in r3 with a", "x", storage.MemberChange{RoomID: "r2", UserID: u, Membership: "ban"}, nil)
		check("a server name with a LIKE wildcard", "%", storage.MemberChange{RoomID: "r2", UserID: u, Membership: "ban"}, []string{u})
	})
}
