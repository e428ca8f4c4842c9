package sql_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/searchapi/storage"
	searchsql "github.com/matrix-org/dendrite/searchapi/storage/sql"
)

var defaults = searchsql.Options{TextSearchConfig: "simple", Tokenizer: "unicode61 remove_diacritics 2"}

func open(t testing.TB, db *sqlutil.DB) *searchsql.Database {
	t.Helper()
	d, err := searchsql.Open(context.Background(), db, defaults)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func store(t testing.TB, db *sqlutil.DB, d *searchsql.Database, evs ...storage.Event) {
	t.Helper()
	err := db.WithTx(context.Background(), func(tx *sql.Tx) error { return d.StoreEvents(context.Background(), tx, evs) })
	if err != nil {
		t.Fatal(err)
	}
}

func msg(id, room, sender string, ts int64, body string) storage.Event {
	return storage.Event{EventID: id, RoomID: room, Sender: sender, Type: "m.room.message", OriginServerTS: ts, RoomPos: ts,
		Key: storage.KeyBody, Text: storage.IndexText(body)}
}

func ids(rs []storage.Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.EventID
	}
	return out
}

func search(t testing.TB, d *searchsql.Database, q storage.Query) []string {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = 100
	}
	if q.Order == "" {
		q.Order = storage.OrderRecent
	}
	rs, err := d.Search(context.Background(), &q)
	if err != nil {
		t.Fatalf("search %v: %v", q.Words, err)
	}
	return ids(rs)
}

// TestSearchMatches checks what a query matches on both engines: every word, the last
// one as a prefix, case-insensitively, in any script, within the given rooms and
// filters, and that operators and SQL in a search term are only text.
func TestSearchMatches(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		d := open(t, db)
		store(t, db, d,
			msg("$1", "!a", "@alice:x", 1, "The Quick brown fox"),
			msg("$2", "!a", "@bob:x", 2, "a quick reply"),
			msg("$3", "!b", "@alice:x", 3, "quickly, the fox"),
			msg("$4", "!b", "@bob:x", 4, "Привет мир, ünïcode"),
			msg("$5", "!c", "@alice:x", 5, "fox in another room"),
			storage.Event{EventID: "$6", RoomID: "!a", Sender: "@alice:x", Type: "m.room.name", OriginServerTS: 6, RoomPos: 6, Key: storage.KeyName, Text: "fox den"},
			storage.Event{EventID: "$7", RoomID: "!a", Sender: "@alice:x", Type: "m.room.member", OriginServerTS: 7, RoomPos: 7},
		)
		ab := []string{"!a", "!b"}
		for _, tc := range []struct {
			name string
			q    storage.Query
			want []string
		}{
			{"word", storage.Query{Words: []string{"fox"}, Rooms: ab}, []string{"$6", "$3", "$1"}},
			{"prefix of the last word", storage.Query{Words: []string{"quick"}, Rooms: ab}, []string{"$3", "$2", "$1"}},
			{"every word", storage.Query{Words: []string{"quick", "fox"}, Rooms: ab}, []string{"$1"}},
			{"no prefix but the last", storage.Query{Words: []string{"quic", "fox"}, Rooms: ab}, nil},
			{"other script", storage.Query{Words: storage.Tokenize("ПРИВЕТ", 0), Rooms: ab}, []string{"$4"}},
			{"rooms", storage.Query{Words: []string{"fox"}, Rooms: []string{"!c"}}, []string{"$5"}},
			{"keys", storage.Query{Words: []string{"fox"}, Rooms: ab, Keys: []string{storage.KeyName}}, []string{"$6"}},
			{"senders", storage.Query{Words: []string{"quick"}, Rooms: ab, Senders: []string{"@bob:x"}}, []string{"$2"}},
			{"not senders", storage.Query{Words: []string{"quick"}, Rooms: ab, NotSenders: []string{"@bob:x"}}, []string{"$3", "$1"}},
			{"types", storage.Query{Words: []string{"fox"}, Rooms: ab, Types: []string{"m.room.message"}}, []string{"$3", "$1"}},
			{"operators are text", storage.Query{Words: storage.Tokenize(`"fox" AND -quick* NEAR(x, 2) OR \'; DROP TABLE searchapi_events; -- `, 0), Rooms: ab}, nil},
			{"a lone operator word", storage.Query{Words: storage.Tokenize(`NEAR OR AND NOT`, 0), Rooms: ab}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := search(t, d, tc.q); !slices.Equal(got, tc.want) {
					t.Errorf("got %v, want %v", got, tc.want)
				}
			})
		}
		if _, err := d.Search(context.Background(), &storage.Query{Rooms: ab, Limit: 1}); !errors.Is(err, storage.ErrBadQuery) {
			t.Fatalf("no words: %v", err)
		}
		if n, err := d.Count(context.Background(), &storage.Query{Words: []string{"fox"}, Rooms: ab}); err != nil || n != 3 {
			t.Fatalf("count %d %v", n, err)
		}
	})
}

// TestStoreIdempotentAndRedact replays a batch (nothing changes) and redacts an event (it
// is no longer found, but keeps its place for context).
func TestStoreIdempotentAndRedact(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		d := open(t, db)
		batch := []storage.Event{msg("$1", "!a", "@a:x", 1, "secret plan"), msg("$2", "!a", "@a:x", 2, "another secret")}
		store(t, db, d, batch...)
		store(t, db, d, batch...)
		q := storage.Query{Words: []string{"secret"}, Rooms: []string{"!a"}}
		if got := search(t, d, q); !slices.Equal(got, []string{"$2", "$1"}) {
			t.Fatalf("after replay: %v", got)
		}
		err := db.WithTx(context.Background(), func(tx *sql.Tx) error {
			if err := d.Redact(context.Background(), tx, "$1"); err != nil {
				return err
			}
			return d.Redact(context.Background(), tx, "$unknown")
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := search(t, d, q); !slices.Equal(got, []string{"$2"}) {
			t.Fatalf("after redaction: %v", got)
		}
		if before, _, err := d.Around(context.Background(), "!a", 2, 5, 5); err != nil || !slices.Equal(before, []string{"$1"}) {
			t.Fatalf("redacted event's place: %v %v", before, err)
		}
	})
}

// TestPagination pages through 57 matches 10 at a time in both orders, with ties in rank
// and timestamp, and gets each exactly once, in order.
func TestPagination(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		d := open(t, db)
		var evs []storage.Event
		for i := range 57 {
			body := "needle"
			if i%3 == 0 {
				body = "needle needle hay"
			}
			ev := msg("$"+string(rune('A'+i)), "!a", "@a:x", int64(i/4), body)
			ev.RoomPos = int64(i)
			evs = append(evs, ev)
		}
		store(t, db, d, evs...)
		for _, order := range []string{storage.OrderRank, storage.OrderRecent} {
			t.Run(order, func(t *testing.T) {
				q := storage.Query{Words: []string{"needle"}, Rooms: []string{"!a"}, Order: order, Limit: 10}
				seen := map[string]bool{}
				var last *storage.Result
				for range 10 {
					rs, err := d.Search(context.Background(), &q)
					if err != nil {
						t.Fatal(err)
					}
					for i := range rs {
						r := rs[i]
						if seen[r.EventID] {
							t.Fatalf("%s repeated", r.EventID)
						}
						seen[r.EventID] = true
						if last != nil && (order == storage.OrderRank && r.Rank > last.Rank || order == storage.OrderRecent && r.OriginServerTS > last.OriginServerTS) {
							t.Fatalf("%s out of order after %s", r.EventID, last.EventID)
						}
						last = &r
					}
					if len(rs) < q.Limit {
						break
					}
					q.After = &rs[len(rs)-1].Cursor
				}
				if len(seen) != 57 {
					t.Fatalf("saw %d of 57", len(seen))
				}
			})
		}
	})
}

// TestAround orders context by room position, backfilled events (negative positions)
// before the rest.
func TestAround(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		d := open(t, db)
		ev := func(id string, pos int64) storage.Event {
			return storage.Event{EventID: id, RoomID: "!a", Sender: "@a:x", Type: "m.room.member", RoomPos: pos}
		}
		store(t, db, d, ev("$1", 1), ev("$2", 2), ev("$3", 3), ev("$b1", -4), ev("$b2", -5), storage.Event{EventID: "$o", RoomID: "!o", RoomPos: 2})
		before, after, err := d.Around(context.Background(), "!a", 2, 3, 3)
		if err != nil || !slices.Equal(before, []string{"$1", "$b1", "$b2"}) || !slices.Equal(after, []string{"$3"}) {
			t.Fatalf("around: %v %v %v", before, after, err)
		}
	})
}

// TestLowestPos is where the reindex places a room's missing history: below the lowest
// position the room has (0 for a room without events), per room.
func TestLowestPos(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		d := open(t, db)
		lowest := func(room string) int64 {
			t.Helper()
			var pos int64
			err := db.WithTx(context.Background(), func(tx *sql.Tx) (err error) {
				pos, err = d.LowestPos(context.Background(), tx, room)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		if got := lowest("!empty"); got != 0 {
			t.Fatalf("room without events: %d", got)
		}
		back := msg("$b", "!a", "@a:x", 1, "old")
		back.RoomPos = -7
		store(t, db, d, msg("$1", "!a", "@a:x", 5, "new"), back, msg("$2", "!b", "@a:x", 3, "other"))
		if got := lowest("!a"); got != -7 {
			t.Fatalf("room with a backfilled event: %d, want -7", got)
		}
		if got := lowest("!b"); got != 3 {
			t.Fatalf("room with new events only: %d, want 3", got)
		}
	})
}
