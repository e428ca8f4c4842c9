package syncapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// hugeLimit is the limit that made /sync loop forever: limit+1 overflowed.
const hugeLimit = "9223372036854775807"

// getWithin is an authenticated GET that must answer within a generous deadline: a request
// that never ends fails the test instead of hanging it. It decodes a 200 into out.
func (h *harness) getWithin(token, path string, q url.Values, out any) int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+path+"?"+q.Encode(), nil) // the URL is well-formed
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s?%s: %v", path, q.Encode(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s?%s: %v", path, q.Encode(), err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			h.t.Fatalf("decode %s: %v: %s", path, err, body)
		}
	}
	return resp.StatusCode
}

// TestHugeLimits checks that limits at the top of the integer range, inline or in a stored
// filter, in /sync, /messages and /context, answer promptly with the room's events, clamped
// to the documented maxima, instead of looping.
func TestHugeLimits(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		var sent []string
		for _, body := range []string{"m0", "m1", "m2", "m3", "m4"} {
			sent = append(sent, h.send(roomID, alice, body))
		}
		h.waitConsumed()
		huge := `{"presence":{"limit":` + hugeLimit + `},"account_data":{"limit":` + hugeLimit + `},"room":{"timeline":{"limit":` + hugeLimit +
			`},"state":{"limit":` + hugeLimit + `},"ephemeral":{"limit":` + hugeLimit + `},"account_data":{"limit":` + hugeLimit + `}}}`
		h.mu.Lock()
		h.filters["alice/huge"] = []byte(huge)
		h.mu.Unlock()
		syncPath := "/_matrix/client/v3/sync"
		for _, filter := range []string{huge, "huge"} {
			var res types.SyncResponse
			if code := h.getWithin(alice, syncPath, url.Values{"filter": {filter}}, &res); code != http.StatusOK {
				t.Fatalf("initial sync with filter %s: status %d", filter, code)
			}
			tl := res.Rooms.Join[roomID].Timeline
			// The whole room: create, member, power levels, join rules and the messages.
			if got := eventIDs(tl.Events); len(got) != 4+len(sent) || tl.Events[0].Type != spec.MRoomCreate || !slices.Equal(got[4:], sent) || tl.Limited {
				t.Fatalf("initial sync with filter %s: timeline %v limited %v", filter, got, tl.Limited)
			}
			next := h.send(roomID, alice, "after-"+filter)
			h.waitConsumed()
			since := res.NextBatch
			res = types.SyncResponse{}
			if code := h.getWithin(alice, syncPath, url.Values{"filter": {filter}, "since": {since}}, &res); code != http.StatusOK {
				t.Fatalf("incremental sync with filter %s: status %d", filter, code)
			}
			if got := eventIDs(res.Rooms.Join[roomID].Timeline.Events); !slices.Equal(got, []string{next}) {
				t.Fatalf("incremental sync with filter %s: timeline %v, want %s", filter, got, next)
			}
			sent = append(sent, next)
		}
		msgs := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages"
		for _, limit := range []string{hugeLimit, "99999999999999999999"} {
			var mr types.MessagesResponse
			if code := h.getWithin(alice, msgs, url.Values{"dir": {"b"}, "limit": {limit}, "filter": {`{"limit":` + hugeLimit + `}`}}, &mr); code != http.StatusOK {
				t.Fatalf("messages with limit %s: status %d", limit, code)
			}
			if got := eventIDs(mr.Chunk); len(got) != 4+len(sent) || got[0] != sent[len(sent)-1] || mr.End != "" {
				t.Fatalf("messages with limit %s: %v end %q", limit, got, mr.End)
			}
			var cr types.ContextResponse
			ctxPath := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/context/" + url.PathEscape(sent[2])
			if code := h.getWithin(alice, ctxPath, url.Values{"limit": {limit}}, &cr); code != http.StatusOK {
				t.Fatalf("context with limit %s: status %d", limit, code)
			}
			if cr.Event.EventID != sent[2] || len(cr.EventsBefore) != 6 || len(cr.EventsAfter) != len(sent)-3 {
				t.Fatalf("context with limit %s: %d before, %d after", limit, len(cr.EventsBefore), len(cr.EventsAfter))
			}
		}
		var res types.SyncResponse
		if code := h.getWithin(alice, syncPath, url.Values{"timeout": {"99999999999999999999"}, "since": {"s1"}}, &res); code != http.StatusOK {
			t.Fatalf("sync with a huge timeout: status %d", code)
		}
		for _, c := range []struct {
			path string
			q    url.Values
		}{
			{syncPath, url.Values{"filter": {`{"room":{"timeline":{"limit":-1}}}`}}},
			{syncPath, url.Values{"filter": {`{"room":{"ephemeral":{"limit":-1}}}`}}},
			{syncPath, url.Values{"filter": {`{"presence":{"limit":-1}}`}}},
			{syncPath, url.Values{"filter": {`{"room":{"timeline":{"limit":99999999999999999999}}}`}}},
			{syncPath, url.Values{"timeout": {"-1"}}},
			{msgs, url.Values{"dir": {"b"}, "limit": {"-1"}}},
			{msgs, url.Values{"dir": {"b"}, "limit": {"-99999999999999999999"}}},
			{msgs, url.Values{"dir": {"b"}, "filter": {`{"limit":-1}`}}},
		} {
			if code := h.getWithin(alice, c.path, c.q, nil); code != http.StatusBadRequest {
				t.Errorf("%s?%s: status %d, want 400", c.path, c.q.Encode(), code)
			}
		}
	})
}
