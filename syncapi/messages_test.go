package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

func (h *harness) messages(token, roomID string, q url.Values) (types.MessagesResponse, int) {
	h.t.Helper()
	var res types.MessagesResponse
	code := h.get(token, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages", q, &res)
	return res, code
}

// walkAll pages through a whole room and returns the event IDs in the order received.
func (h *harness) walkAll(token, roomID, dir string, limit int) []string {
	h.t.Helper()
	var ids []string
	q := url.Values{"dir": {dir}, "limit": {fmt.Sprint(limit)}}
	for pages := 0; pages < 10000; pages++ {
		res, code := h.messages(token, roomID, q)
		if code != 200 {
			h.t.Fatalf("messages: status %d", code)
		}
		ids = append(ids, eventIDs(res.Chunk)...)
		if res.End == "" {
			return ids
		}
		q.Set("from", res.End)
	}
	h.t.Fatal("pagination never ended")
	return nil
}

func TestMessagesPaginationIsExact(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		senders := []string{alice, h.user("s1"), h.user("s2"), h.user("s3")}
		for _, s := range senders[1:] {
			h.member(roomID, s, s, spec.Join)
		}
		var wg sync.WaitGroup
		for _, s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 30; i++ {
					h.send(roomID, s, fmt.Sprintf("%s-%d", s, i))
				}
			}()
		}
		wg.Wait()
		h.waitConsumed()
		forward := h.walkAll(alice, roomID, "f", 1000)
		if len(forward) != 4+3+120 {
			t.Fatalf("want %d events, got %d", 4+3+120, len(forward))
		}
		backwardRef := slices.Clone(forward)
		slices.Reverse(backwardRef)
		for _, size := range []int{1, 10, 100} {
			if got := h.walkAll(alice, roomID, "b", size); !slices.Equal(got, backwardRef) {
				t.Fatalf("backward walk at page size %d: %d events, differs from the forward order", size, len(got))
			}
			if got := h.walkAll(alice, roomID, "f", size); !slices.Equal(got, forward) {
				t.Fatalf("forward walk at page size %d differs", size)
			}
		}
		// Lazy-loaded members come with the chunk.
		res, _ := h.messages(alice, roomID, url.Values{"dir": {"b"}, "limit": {"5"}, "filter": {`{"lazy_load_members":true}`}})
		if len(res.State) == 0 {
			t.Fatal("no lazy-loaded members in /messages")
		}
		for _, e := range res.State {
			if e.Type != spec.MRoomMember {
				t.Fatalf("lazy state has %s", e.Type)
			}
		}
	})
}

func TestHistoryVisibility(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(alice, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"}))
		before := h.send(roomID, alice, "before-bob")
		h.member(roomID, bob, bob, spec.Join)
		during := h.send(roomID, alice, "while-bob")
		leave := h.member(roomID, bob, bob, spec.Leave)
		after := h.send(roomID, alice, "after-bob")
		h.waitConsumed()

		got := h.walkAll(bob, roomID, "b", 10)
		if slices.Contains(got, before) || slices.Contains(got, after) {
			t.Fatalf("bob sees events outside his membership: %v", got)
		}
		if !slices.Contains(got, during) || !slices.Contains(got, leave) {
			t.Fatalf("bob misses events of his membership: %v", got)
		}
		if fwd := h.walkAll(bob, roomID, "f", 3); slices.Contains(fwd, after) || slices.Contains(fwd, before) {
			t.Fatalf("forward walk leaks: %v", fwd)
		}
		if all := h.walkAll(alice, roomID, "b", 10); !slices.Contains(all, before) || !slices.Contains(all, after) {
			t.Fatal("alice misses events")
		}
		var cr types.ContextResponse
		if code := h.get(bob, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(before), nil, &cr); code != 404 {
			t.Fatalf("context of an invisible event: status %d", code)
		}
		if _, code := h.messages(h.user("stranger"), roomID, url.Values{"dir": {"b"}}); code != 403 {
			t.Fatalf("stranger: status %d", code)
		}
	})
}

func TestContext(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		var ids []string
		for i := 0; i < 9; i++ {
			ids = append(ids, h.send(roomID, alice, fmt.Sprint("c", i)))
		}
		h.waitConsumed()
		var cr types.ContextResponse
		if code := h.get(alice, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(ids[4]), url.Values{"limit": {"4"}}, &cr); code != 200 {
			t.Fatalf("context: %d", code)
		}
		if cr.Event.EventID != ids[4] || !slices.Equal(eventIDs(cr.EventsBefore), []string{ids[3], ids[2]}) || !slices.Equal(eventIDs(cr.EventsAfter), []string{ids[5], ids[6]}) {
			t.Fatalf("context: before %v event %s after %v", eventIDs(cr.EventsBefore), cr.Event.EventID, eventIDs(cr.EventsAfter))
		}
		if len(cr.State) < 4 || cr.Start == "" || cr.End == "" {
			t.Fatalf("context state/tokens: %d %q %q", len(cr.State), cr.Start, cr.End)
		}
		// The tokens continue exactly where the context ends.
		res, _ := h.messages(alice, roomID, url.Values{"dir": {"f"}, "from": {cr.End}, "limit": {"2"}})
		if !slices.Equal(eventIDs(res.Chunk), []string{ids[7], ids[8]}) {
			t.Fatalf("after context end: %v", eventIDs(res.Chunk))
		}
		res, _ = h.messages(alice, roomID, url.Values{"dir": {"b"}, "from": {cr.Start}, "limit": {"1"}})
		if !slices.Equal(eventIDs(res.Chunk), []string{ids[1]}) {
			t.Fatalf("before context start: %v", eventIDs(res.Chunk))
		}
	})
}

// TestReplayChangesNothing re-produces every output record: the sync API must dedupe them.
func TestReplayChangesNothing(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		redacted := h.send(roomID, alice, "secret")
		red := roomtest.Proto(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": redacted})
		red.Proto.Redacts = redacted
		h.submit(roomID, red)
		h.send(roomID, alice, "m2")
		h.accountData(alice, "", "m.x", map[string]int{"a": 1})
		h.waitConsumed()
		beforeSync := h.sync(alice)
		beforeIDs := h.walkAll(alice, roomID, "f", 100)

		ctx := context.Background()
		for _, topic := range []string{outTopic, clientTopic} {
			ends, err := h.log.EndOffsets(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			for p, end := range ends {
				if end == 0 {
					continue
				}
				var msgs []eventlog.Message
				cctx, cancel := context.WithCancel(ctx)
				_ = h.log.Consume(cctx, topic, int32(p), 0, func(_ context.Context, recs []eventlog.Record) error { // ends with ctx.Err() once cancelled
					for _, r := range recs {
						msgs = append(msgs, eventlog.Message{Key: r.Key, Value: r.Value})
						if r.Offset == end-1 {
							cancel()
						}
					}
					return nil
				})
				if _, err := h.log.Produce(ctx, topic, msgs...); err != nil {
					t.Fatal(err)
				}
			}
		}
		h.waitConsumed()
		if after := h.sync(alice, "since", beforeSync.NextBatch); !after.IsEmpty() {
			t.Fatalf("replay produced a non-empty sync: %+v", after)
		}
		afterIDs := h.walkAll(alice, roomID, "f", 100)
		if !slices.Equal(beforeIDs, afterIDs) {
			t.Fatalf("replay changed the timeline: %d -> %d events", len(beforeIDs), len(afterIDs))
		}
		res, _ := h.messages(alice, roomID, url.Values{"dir": {"b"}, "limit": {"100"}})
		for _, e := range res.Chunk {
			if e.EventID == redacted {
				var c map[string]any
				_ = json.Unmarshal(e.Content, &c) // content is JSON
				if len(c) != 0 {
					t.Fatalf("redacted event still has content %s", e.Content)
				}
				return
			}
		}
		t.Fatal("redacted event missing")
	})
}

// TestRedactedEventNamesItsRedaction: a redacted event carries its redaction as
// unsigned.redacted_because and the redaction's ID as unsigned.redacted_by (sytest "Can
// receive redactions from regular users over federation in room version N" reads the latter
// from /messages).
func TestRedactedEventNamesItsRedaction(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		target := h.send(roomID, alice, "oops")
		red := roomtest.Proto(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": target})
		red.Proto.Redacts = target
		redactionID := h.submit(roomID, red)[0]
		h.waitConsumed()
		res, _ := h.messages(alice, roomID, url.Values{"dir": {"b"}, "limit": {"10"}})
		for _, e := range res.Chunk {
			if e.EventID != target {
				continue
			}
			var unsigned struct {
				RedactedBy      string `json:"redacted_by"`
				RedactedBecause struct {
					EventID string `json:"event_id"`
				} `json:"redacted_because"`
			}
			if err := json.Unmarshal(e.Unsigned, &unsigned); err != nil {
				t.Fatalf("unsigned %s: %v", e.Unsigned, err)
			}
			if unsigned.RedactedBy != redactionID || unsigned.RedactedBecause.EventID != redactionID {
				t.Fatalf("redacted event's unsigned %s, want redaction %s", e.Unsigned, redactionID)
			}
			return
		}
		t.Fatalf("redacted event missing from %v", eventIDs(res.Chunk))
	})
}

// TestWorldReadableMessagesForStrangers: a user who was never in a room pages its
// /messages while the room is world readable, and sees the events sent under
// world_readable visibility only; once the room stops being world readable, 403.
func TestWorldReadableMessagesForStrangers(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, stranger := h.user("alice"), h.user("stranger")
		roomID := h.newRoom(alice, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"}))
		private := h.send(roomID, alice, "private")
		h.submit(roomID, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "world_readable"}))
		open := h.send(roomID, alice, "for everyone")
		h.waitConsumed()

		for _, dir := range []string{"b", "f"} {
			got := h.walkAll(stranger, roomID, dir, 2)
			if !slices.Contains(got, open) || slices.Contains(got, private) {
				t.Fatalf("stranger walking %s: %v", dir, got)
			}
		}
		h.submit(roomID, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "shared"}))
		h.waitConsumed()
		if _, code := h.messages(stranger, roomID, url.Values{"dir": {"b"}}); code != 403 {
			t.Fatalf("stranger once the room is no longer world readable: status %d", code)
		}
	})
}
