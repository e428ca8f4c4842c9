package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// searchAnswer is the room_events part of a /search answer, or the error.
type searchAnswer struct {
	Status  int
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
	Count   int
	Results []struct {
		Rank    float64        `json:"rank"`
		Result  map[string]any `json:"result"`
		Context *struct {
			ProfileInfo  map[string]map[string]string `json:"profile_info"`
			EventsBefore []map[string]any             `json:"events_before"`
			EventsAfter  []map[string]any             `json:"events_after"`
		} `json:"context"`
	}
	Highlights []string                                         `json:"highlights"`
	State      map[string][]map[string]any                      `json:"state"`
	Groups     map[string]map[string]struct{ Results []string } `json:"groups"`
	NextBatch  string                                           `json:"next_batch"`
}

// bodies are the results' bodies, in order.
func (a *searchAnswer) bodies() []string {
	var out []string
	for _, r := range a.Results {
		content, _ := r.Result["content"].(map[string]any)
		body, _ := content["body"].(string)
		out = append(out, body)
	}
	return out
}

// searchRaw posts body to /search (with next_batch when set).
func searchRaw(t *testing.T, c *mautrix.Client, body any, nextBatch string) *searchAnswer {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	u := c.HomeserverURL.String() + "/_matrix/client/v3/search"
	if nextBatch != "" {
		u += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // nolint: errcheck // read-only
	var raw struct {
		ErrCode          string `json:"errcode"`
		Error            string `json:"error"`
		SearchCategories struct {
			RoomEvents json.RawMessage `json:"room_events"`
		} `json:"search_categories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("search answer is not JSON (%d): %v", resp.StatusCode, err)
	}
	out := &searchAnswer{Status: resp.StatusCode, ErrCode: raw.ErrCode, Error: raw.Error}
	if len(raw.SearchCategories.RoomEvents) > 0 {
		if err := json.Unmarshal(raw.SearchCategories.RoomEvents, out); err != nil {
			t.Fatalf("room_events: %v", err)
		}
	}
	return out
}

// criteria is a room_events search body.
func criteria(term string, extra map[string]any) map[string]any {
	re := map[string]any{"search_term": term}
	for k, v := range extra {
		re[k] = v
	}
	return map[string]any{"search_categories": map[string]any{"room_events": re}}
}

func searchOK(t *testing.T, c *mautrix.Client, term string, extra map[string]any, nextBatch string) *searchAnswer {
	t.Helper()
	a := searchRaw(t, c, criteria(term, extra), nextBatch)
	if a.Status != http.StatusOK {
		t.Fatalf("search %q: %d %s %s", term, a.Status, a.ErrCode, a.Error)
	}
	return a
}

func say(t *testing.T, c *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	res, err := c.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return res.EventID
}

// Search checks POST /search with real clients: a rare word found in two rooms and not
// in a third user's room, filters, both orders, prefix matching, context with profiles,
// state, groups and highlights, pagination through 120 results, redaction, history
// visibility for a user who joined later and then left, and the client mistakes.
func Search(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "seeker"), Register(t, baseURL, "latecomer"), Register(t, baseURL, "stranger")
	mk := func(c *mautrix.Client, name string, state ...*event.Event) id.RoomID {
		t.Helper()
		res, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: name, Preset: "public_chat", InitialState: state})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		return res.RoomID
	}
	roomA, roomB, roomC := mk(alice, "alpha"), mk(alice, "beta"), mk(carol, "carol's")
	msgA := say(t, alice, roomA, "Meet me in Zanzibar at noon")
	say(t, alice, roomB, "zanzibar again, later")
	say(t, carol, roomC, "zanzibar is my secret")

	t.Run("found in two rooms, not in a third user's", func(t *testing.T) {
		if own := searchOK(t, carol, "zanzibar", nil, ""); !slices.Equal(own.bodies(), []string{"zanzibar is my secret"}) {
			t.Fatalf("carol finds %v", own.bodies())
		}
		a := searchOK(t, alice, "ZANZIBAR", map[string]any{"order_by": "recent"}, "")
		if !slices.Equal(a.bodies(), []string{"zanzibar again, later", "Meet me in Zanzibar at noon"}) || a.Count != 2 || a.NextBatch != "" {
			t.Fatalf("recent: %v count %d next %q", a.bodies(), a.Count, a.NextBatch)
		}
		if !slices.Contains(a.Highlights, "zanzibar") {
			t.Fatalf("highlights %v", a.Highlights)
		}
		if r := searchOK(t, alice, "zanzibar", map[string]any{"order_by": "rank"}, ""); len(r.Results) != 2 || r.Results[0].Rank < r.Results[1].Rank {
			t.Fatalf("rank: %+v", r.Results)
		}
	})
	t.Run("filters and prefixes", func(t *testing.T) {
		a := searchOK(t, alice, "zanzi", map[string]any{"filter": map[string]any{"rooms": []id.RoomID{roomA}}}, "")
		if !slices.Equal(a.bodies(), []string{"Meet me in Zanzibar at noon"}) {
			t.Fatalf("room filter with a prefix: %v", a.bodies())
		}
		if a := searchOK(t, alice, "zanzibar", map[string]any{"filter": map[string]any{"not_rooms": []id.RoomID{roomA}}}, ""); len(a.Results) != 1 {
			t.Fatalf("not_rooms: %v", a.bodies())
		}
		if a := searchOK(t, alice, "beta", map[string]any{"keys": []string{"content.name"}}, ""); len(a.Results) != 1 || a.Results[0].Result["type"] != "m.room.name" {
			t.Fatalf("room names: %+v", a.Results)
		}
		if a := searchOK(t, alice, "zanzibar", map[string]any{"filter": map[string]any{"senders": []string{"@nobody:x"}}}, ""); len(a.Results) != 0 {
			t.Fatalf("senders: %v", a.bodies())
		}
	})
	t.Run("context, profiles, state and groups", func(t *testing.T) {
		say(t, alice, roomA, "after the meeting")
		a := searchOK(t, alice, "noon", map[string]any{
			"event_context": map[string]any{"before_limit": 2, "after_limit": 1, "include_profile": true},
			"include_state": true, "groupings": map[string]any{"group_by": []map[string]string{{"key": "room_id"}, {"key": "sender"}}},
		}, "")
		if len(a.Results) != 1 || a.Results[0].Context == nil {
			t.Fatalf("results %+v", a.Results)
		}
		c := a.Results[0].Context
		if len(c.EventsBefore) != 2 || len(c.EventsAfter) != 1 || c.EventsAfter[0]["content"].(map[string]any)["body"] != "after the meeting" {
			t.Fatalf("context %+v", c)
		}
		if c.ProfileInfo[string(alice.UserID)] == nil {
			t.Fatalf("profile_info %+v", c.ProfileInfo)
		}
		if len(a.State[string(roomA)]) == 0 {
			t.Fatalf("state %+v", a.State)
		}
		if got := a.Groups["room_id"][string(roomA)].Results; !slices.Equal(got, []string{string(msgA)}) {
			t.Fatalf("groups %+v", a.Groups)
		}
		if got := a.Groups["sender"][string(alice.UserID)].Results; len(got) != 1 {
			t.Fatalf("groups %+v", a.Groups)
		}
	})
	t.Run("pagination through 120 results", func(t *testing.T) {
		roomE := mk(alice, "many")
		for i := range 120 {
			say(t, alice, roomE, fmt.Sprintf("wombat number %d", i))
		}
		for _, order := range []string{"recent", "rank"} {
			seen := map[string]bool{}
			next, pages := "", 0
			for {
				a := searchOK(t, alice, "wombat", map[string]any{"order_by": order, "filter": map[string]any{"limit": 50}}, next)
				pages++
				for _, r := range a.Results {
					id := r.Result["event_id"].(string)
					if seen[id] {
						t.Fatalf("%s: %s repeated on page %d", order, id, pages)
					}
					seen[id] = true
				}
				if a.Count != 120 {
					t.Fatalf("%s: count %d", order, a.Count)
				}
				if next = a.NextBatch; next == "" {
					break
				}
				if pages > 5 {
					t.Fatalf("%s: too many pages", order)
				}
			}
			if len(seen) != 120 || pages != 3 {
				t.Fatalf("%s: %d results in %d pages", order, len(seen), pages)
			}
		}
		first := searchOK(t, alice, "wombat", map[string]any{"order_by": "recent", "filter": map[string]any{"limit": 3}}, "")
		if !slices.Equal(first.bodies(), []string{"wombat number 119", "wombat number 118", "wombat number 117"}) {
			t.Fatalf("newest first: %v", first.bodies())
		}
	})
	t.Run("redacted messages are not found", func(t *testing.T) {
		if _, err := alice.RedactEvent(ctx, roomA, msgA); err != nil {
			t.Fatal(err)
		}
		a := searchOK(t, alice, "zanzibar", nil, "")
		if !slices.Equal(a.bodies(), []string{"zanzibar again, later"}) {
			t.Fatalf("after redaction: %v", a.bodies())
		}
	})
	t.Run("history visibility", func(t *testing.T) {
		roomD := mk(alice, "delta", &event.Event{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}})
		say(t, alice, roomD, "quokka before bob")
		if _, err := bob.JoinRoomByID(ctx, roomD); err != nil {
			t.Fatal(err)
		}
		say(t, alice, roomD, "quokka with bob")
		if a := searchOK(t, bob, "quokka", nil, ""); !slices.Equal(a.bodies(), []string{"quokka with bob"}) {
			t.Fatalf("bob, joined later: %v", a.bodies())
		}
		if _, err := bob.LeaveRoom(ctx, roomD); err != nil {
			t.Fatal(err)
		}
		say(t, alice, roomD, "quokka after bob")
		if a := searchOK(t, alice, "quokka", nil, ""); len(a.Results) != 3 {
			t.Fatalf("alice: %v", a.bodies())
		}
		if a := searchOK(t, bob, "quokka", nil, ""); !slices.Equal(a.bodies(), []string{"quokka with bob"}) {
			t.Fatalf("bob, after leaving: %v", a.bodies())
		}
	})
	t.Run("client mistakes", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			body   any
			next   string
			status int
			code   string
		}{
			{"no search_term", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "", 400, "M_BAD_JSON"},
			{"empty search_term", criteria("", nil), "", 400, "M_INVALID_PARAM"},
			{"search_term of another type", criteria("x", map[string]any{"search_term": 5}), "", 400, "M_BAD_JSON"},
			{"no categories", map[string]any{}, "", 400, "M_BAD_JSON"},
			{"unknown category", map[string]any{"search_categories": map[string]any{"everything": map[string]any{}}}, "", 400, "M_INVALID_PARAM"},
			{"unknown order", criteria("x", map[string]any{"order_by": "random"}), "", 400, "M_INVALID_PARAM"},
			{"unknown key", criteria("x", map[string]any{"keys": []string{"content.secret"}}), "", 400, "M_INVALID_PARAM"},
			{"negative limit", criteria("x", map[string]any{"filter": map[string]any{"limit": -1}}), "", 400, "M_INVALID_PARAM"},
			{"bad next_batch", criteria("x", nil), "garbage", 400, "M_INVALID_PARAM"},
			{"next_batch of the other order", criteria("x", map[string]any{"order_by": "recent"}), "r.3ff0000000000000.5", 400, "M_INVALID_PARAM"},
			{"operators are text", criteria(`"zanzibar" AND * NEAR(a b) OR \' ; DROP TABLE x; -- %_`, nil), "", 200, ""},
			{"punctuation only", criteria(`*"'\`, nil), "", 200, ""},
		} {
			a := searchRaw(t, alice, tc.body, tc.next)
			if a.Status != tc.status || a.ErrCode != tc.code {
				t.Errorf("%s: %d %s %q, want %d %s", tc.name, a.Status, a.ErrCode, a.Error, tc.status, tc.code)
			}
		}
	})
}

// SearchCount is how many events of c's rooms /search finds for term (its count).
func SearchCount(t *testing.T, c *mautrix.Client, term string) int {
	t.Helper()
	return searchOK(t, c, term, nil, "").Count
}
