package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/types"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingList and the other request types below are the MSC4186 request body, written
// here as a client would.
type slidingList struct {
	Range         []int          `json:"range,omitempty"`
	TimelineLimit int            `json:"timeline_limit"`
	RequiredState any            `json:"required_state"`
	Filters       map[string]any `json:"filters,omitempty"`
}

type slidingSub struct {
	TimelineLimit int `json:"timeline_limit"`
	RequiredState any `json:"required_state"`
}

type slidingReq struct {
	ConnID     string                 `json:"conn_id,omitempty"`
	Pos        string                 `json:"pos,omitempty"`
	Timeout    int                    `json:"timeout,omitempty"`
	Lists      map[string]slidingList `json:"lists,omitempty"`
	Subs       map[string]slidingSub  `json:"room_subscriptions,omitempty"`
	Extensions map[string]any         `json:"extensions,omitempty"`
}

// slidingRaw posts body and returns the status and the answer.
func (h *harness) slidingRaw(token string, body any) (int, []byte) {
	h.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		h.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+slidingPath, bytes.NewReader(b)) // the URL is well-formed
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// sliding posts body and fails the test unless the answer is 200.
func (h *harness) sliding(token string, body any) *types.SlidingResponse {
	h.t.Helper()
	code, raw := h.slidingRaw(token, body)
	if code != http.StatusOK {
		h.t.Fatalf("sliding sync: %d %s", code, raw)
	}
	var res types.SlidingResponse
	if err := json.Unmarshal(raw, &res); err != nil {
		h.t.Fatalf("decode: %v: %s", err, raw)
	}
	return &res
}

// wantSlidingError fails unless body is answered with status and errcode.
func (h *harness) wantSlidingError(token string, body any, status int, errcode string) {
	h.t.Helper()
	code, raw := h.slidingRaw(token, body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(raw, &e) // a non-JSON answer fails below
	if code != status || e.ErrCode != errcode {
		h.t.Fatalf("want %d %s, got %d %s", status, errcode, code, raw)
	}
}

func timelineBodies(r *types.SlidingRoom) []string {
	var out []string
	for _, e := range r.Timeline {
		var c struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(e.Content, &c) // non-messages have no body
		out = append(out, c.Body)
	}
	return out
}

func stateKeys(r *types.SlidingRoom) []string {
	var out []string
	for _, e := range r.RequiredState {
		sk := ""
		if e.StateKey != nil {
			sk = *e.StateKey
		}
		out = append(out, e.Type+"|"+sk)
	}
	slices.Sort(out)
	return out
}

func roomIDs(res *types.SlidingResponse) []string {
	var out []string
	for id := range res.Rooms {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func sortedCopy(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestSlidingListsAndUpdates: a list's range gets the most recent rooms, each whole once,
// with its count; a message in an old room brings only that room back, with only the new
// event, at the top of the order; a response with nothing new has no rooms; widening the
// range sends only the rooms not sent yet.
func TestSlidingListsAndUpdates(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		var rooms []string // oldest first
		for i := 0; i < 25; i++ {
			rooms = append(rooms, h.newRoom(alice))
			h.send(rooms[i], alice, fmt.Sprint("hello ", i))
			h.waitConsumed() // rooms in other partitions of the log may be applied in any order
		}
		list := slidingList{Range: []int{0, 9}, TimelineLimit: 1, RequiredState: [][]string{{"m.room.create", ""}}}
		res := h.sliding(alice, slidingReq{ConnID: "c", Lists: map[string]slidingList{"all": list}})
		if res.Lists["all"].Count != 25 {
			t.Fatalf("count %d", res.Lists["all"].Count)
		}
		if got, want := roomIDs(res), sortedCopy(rooms[15:]); !slices.Equal(got, want) {
			t.Fatalf("first window %v, want the 10 most recent %v", got, want)
		}
		// Bump stamps order the window as the list does.
		for i := 16; i < 25; i++ {
			if *res.Rooms[rooms[i]].BumpStamp <= *res.Rooms[rooms[i-1]].BumpStamp {
				t.Fatalf("bump stamps out of order at %d", i)
			}
		}
		for i, id := range rooms[15:] {
			r := res.Rooms[id]
			if !r.Initial || !r.Limited || r.Membership != spec.Join || !slices.Equal(timelineBodies(r), []string{fmt.Sprint("hello ", 15+i)}) ||
				!slices.Equal(stateKeys(r), []string{"m.room.create|"}) || r.PrevBatch == "" || *r.JoinedCount != 1 || *r.NumLive != 0 {
				t.Fatalf("room %d: %+v", 15+i, r)
			}
		}
		pos := res.Pos

		// Nothing new: no rooms.
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: pos, Lists: map[string]slidingList{"all": list}})
		if len(res.Rooms) != 0 {
			t.Fatalf("nothing changed, yet rooms %v", roomIDs(res))
		}
		pos = res.Pos

		// A message in a room of the window: only that room, only the new event.
		h.send(rooms[20], alice, "update")
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: pos, Timeout: 10000, Lists: map[string]slidingList{"all": list}})
		r := res.Rooms[rooms[20]]
		if len(res.Rooms) != 1 || r == nil || r.Initial || !slices.Equal(timelineBodies(r), []string{"update"}) || r.Limited || *r.NumLive != 1 ||
			r.BumpStamp == nil || r.RequiredState != nil || r.Name != nil {
			t.Fatalf("after the update: rooms %v, room 20 %+v", roomIDs(res), r)
		}
		pos = res.Pos

		// A message in an old room moves it into the window: it comes whole, being new to
		// the connection, and its one event is live.
		h.send(rooms[3], alice, "bump")
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: pos, Timeout: 10000, Lists: map[string]slidingList{"all": list}})
		r = res.Rooms[rooms[3]]
		if len(res.Rooms) != 1 || r == nil || !r.Initial || !slices.Equal(timelineBodies(r), []string{"bump"}) || *r.NumLive != 1 || r.BumpStamp == nil {
			t.Fatalf("after the bump: rooms %v, room 3 %+v", roomIDs(res), r)
		}
		pos = res.Pos

		// The widened range sends the rooms not sent yet: rooms[3] is first now, so the 20
		// most recent are rooms[3] and rooms[6:].
		list.Range = []int{0, 19}
		res = h.sliding(alice, slidingReq{ConnID: "c", Pos: pos, Lists: map[string]slidingList{"all": list}})
		if got, want := roomIDs(res), sortedCopy(rooms[6:15]); !slices.Equal(got, want) {
			t.Fatalf("widened window sent %v, want %v", got, want)
		}
		// The messages pagination token works as a /messages from.
		var msgs types.MessagesResponse
		if code := h.get(alice, "/_matrix/client/v3/rooms/"+rooms[6]+"/messages", map[string][]string{"dir": {"b"}, "from": {res.Pos}}, &msgs); code != http.StatusOK || len(msgs.Chunk) == 0 {
			t.Fatalf("messages from pos: %d %d", code, len(msgs.Chunk))
		}
	})
}

// TestSlidingRequiredState: required_state's object form with lazy members and exclude,
// the pair form's "*" and "$ME", the room's name, heroes and counts, and a subscription's
// own timeline limit.
func TestSlidingRequiredState(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol := h.user("alice"), h.user("bob"), h.user("carol")
		roomID := h.newRoom(alice,
			roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "the room"}),
			roomtest.Proto(alice, spec.MRoomTopic, roomtest.StateKey(""), map[string]string{"topic": "a topic"}))
		h.member(roomID, bob, bob, spec.Join)
		h.member(roomID, carol, carol, spec.Join)
		for i := 0; i < 3; i++ {
			h.send(roomID, bob, fmt.Sprint("bob ", i))
		}
		unnamed := h.newRoom(alice)
		h.member(unnamed, bob, bob, spec.Join)
		h.waitConsumed()

		sub := func(rs any, limit int) map[string]slidingSub {
			return map[string]slidingSub{roomID: {TimelineLimit: limit, RequiredState: rs}}
		}
		all := "m.room.create| m.room.join_rules| m.room.member|" + alice + " m.room.member|" + bob + " m.room.member|" + carol +
			" m.room.name| m.room.power_levels| m.room.topic|"
		for _, c := range []struct {
			name  string
			rs    any
			limit int
			want  string
		}{
			{"lazy members", map[string]any{"include": []any{map[string]any{}}, "lazy_members": true}, 2,
				"m.room.create| m.room.join_rules| m.room.member|" + bob + " m.room.name| m.room.power_levels| m.room.topic|"},
			{"exclude", map[string]any{"include": []any{map[string]any{}}, "exclude": []any{map[string]any{"type": spec.MRoomTopic}, map[string]any{"type": spec.MRoomMember}}}, 0,
				"m.room.create| m.room.join_rules| m.room.name| m.room.power_levels|"},
			{"pair wildcards", [][]string{{"*", "*"}}, 1, all},
			{"pair $ME", [][]string{{spec.MRoomMember, "$ME"}}, 1, "m.room.member|" + alice},
			{"pair $LAZY with a type wildcard", [][]string{{"m.room.name", "*"}, {spec.MRoomMember, "$LAZY"}}, 1, "m.room.member|" + bob + " m.room.name|"},
			{"pair $LAZY with all members", [][]string{{spec.MRoomMember, "*"}, {spec.MRoomMember, "$LAZY"}}, 1,
				"m.room.member|" + alice + " m.room.member|" + bob + " m.room.member|" + carol},
			{"state key wildcard", map[string]any{"include": []any{map[string]any{"state_key": ""}}}, 0,
				"m.room.create| m.room.join_rules| m.room.name| m.room.power_levels| m.room.topic|"},
		} {
			t.Run(c.name, func(t *testing.T) {
				res := h.sliding(alice, slidingReq{ConnID: c.name, Subs: sub(c.rs, c.limit)})
				r := res.Rooms[roomID]
				if r == nil {
					t.Fatalf("no room: %+v", res)
				}
				if got := fmt.Sprint(stateKeys(r)); got != "["+c.want+"]" {
					t.Fatalf("required_state %s, want [%s]", got, c.want)
				}
				if len(r.Timeline) != c.limit || string(r.Name) != `"the room"` || *r.JoinedCount != 3 || *r.InvitedCount != 0 || r.Heroes != nil || r.Lists != nil {
					t.Fatalf("room %+v", r)
				}
			})
		}
		res := h.sliding(alice, slidingReq{Subs: map[string]slidingSub{unnamed: {TimelineLimit: 1, RequiredState: [][]string{}}}})
		if r := res.Rooms[unnamed]; r == nil || r.Name != nil || len(r.Heroes) != 1 || r.Heroes[0].UserID != bob {
			t.Fatalf("unnamed room: %+v", r)
		}
		// A room the user was never in is ignored.
		other := h.newRoom(bob)
		h.waitConsumed()
		if res = h.sliding(alice, slidingReq{Subs: map[string]slidingSub{other: {TimelineLimit: 1}}}); len(res.Rooms) != 0 {
			t.Fatalf("a room alice never joined was sent: %v", roomIDs(res))
		}
	})
}

// TestSlidingFilters: is_dm from m.direct, is_invite(d), is_encrypted and spaces.
func TestSlidingFilters(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		plain := h.newRoom(alice)
		dm := h.newRoom(alice)
		encrypted := h.newRoom(alice, roomtest.Proto(alice, "m.room.encryption", roomtest.StateKey(""), map[string]string{"algorithm": "m.megolm.v1.aes-sha2"}))
		space := h.newRoom(alice, roomtest.Proto(alice, "m.space.child", roomtest.StateKey(plain), map[string]any{"via": []string{serverName}}))
		invite := h.newRoom(bob)
		h.member(invite, bob, alice, spec.Invite)
		h.accountData(alice, "", "m.direct", map[string][]string{bob: {dm}})
		h.waitConsumed()
		lists := map[string]slidingList{}
		for name, f := range map[string]map[string]any{
			"dm": {"is_dm": true}, "notdm": {"is_dm": false, "is_invite": false}, "invited": {"is_invited": true},
			"encrypted": {"is_encrypted": true}, "space": {"spaces": []string{space}},
		} {
			lists[name] = slidingList{Range: []int{0, 99}, TimelineLimit: 0, Filters: f}
		}
		res := h.sliding(alice, slidingReq{Lists: lists})
		for name, want := range map[string][]string{
			"dm": {dm}, "notdm": {plain, encrypted, space}, "invited": {invite}, "encrypted": {encrypted}, "space": {plain},
		} {
			var got []string
			for id, r := range res.Rooms {
				if slices.Contains(r.Lists, name) {
					got = append(got, id)
				}
			}
			if !slices.Equal(sortedCopy(got), sortedCopy(want)) || res.Lists[name].Count != len(want) {
				t.Errorf("list %s: %v (count %d), want %v", name, got, res.Lists[name].Count, want)
			}
		}
		if r := res.Rooms[dm]; r.IsDM == nil || !*r.IsDM {
			t.Errorf("dm room not flagged: %+v", r)
		}
		if r := res.Rooms[invite]; r.Membership != spec.Invite || len(r.StrippedState) == 0 || r.Timeline != nil {
			t.Errorf("invite: %+v", r)
		}
	})
}

// TestSlidingLongPollWakes: a request with a pos and a timeout waits and is woken by a new
// message, which it carries.
func TestSlidingLongPollWakes(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 5}}
		pos := h.sliding(alice, slidingReq{Lists: list}).Pos
		done := make(chan *types.SlidingResponse, 1)
		go func() { done <- h.sliding(alice, slidingReq{Pos: pos, Timeout: 60000, Lists: list}) }()
		h.send(roomID, alice, "wake up")
		select {
		case res := <-done:
			if r := res.Rooms[roomID]; r == nil || !slices.Equal(timelineBodies(r), []string{"wake up"}) {
				t.Fatalf("woken with %+v", res.Rooms[roomID])
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the long poll was not woken by the message")
		}
	})
}

// TestSlidingPosAndBadInput: a pos that is unknown, garbage, of another device, of
// another conn_id, or older than one the connection used since is 400 M_UNKNOWN_POS; bad
// lists and configs are 400 M_INVALID_PARAM or M_MISSING_PARAM, never a 500.
func TestSlidingPosAndBadInput(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		h.newRoom(alice)
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1}}
		first := h.sliding(alice, slidingReq{ConnID: "a", Lists: list}).Pos
		second := h.sliding(alice, slidingReq{ConnID: "a", Pos: first, Lists: list}).Pos
		// Retrying with the pos just used works (the response may have been lost) ...
		h.sliding(alice, slidingReq{ConnID: "a", Pos: first, Lists: list})
		// ... but once the newer one is used, the older one is gone.
		h.sliding(alice, slidingReq{ConnID: "a", Pos: second, Lists: list})
		for _, c := range []struct {
			name, token string
			body        slidingReq
		}{
			{"superseded", alice, slidingReq{ConnID: "a", Pos: first, Lists: list}},
			{"unknown", alice, slidingReq{ConnID: "a", Pos: "s1_999999", Lists: list}},
			{"garbage", alice, slidingReq{ConnID: "a", Pos: "xyz", Lists: list}},
			{"other user", bob, slidingReq{ConnID: "a", Pos: second, Lists: list}},
			{"other connection", alice, slidingReq{ConnID: "b", Pos: second, Lists: list}},
		} {
			t.Run(c.name, func(t *testing.T) { h.wantSlidingError(c.token, c.body, http.StatusBadRequest, "M_UNKNOWN_POS") })
		}
		many := map[string]slidingList{}
		for i := 0; i <= types.MaxSlidingLists; i++ {
			many[fmt.Sprint("l", i)] = slidingList{TimelineLimit: 1}
		}
		for _, c := range []struct {
			name    string
			body    any
			errcode string
		}{
			{"start after end", slidingReq{Lists: map[string]slidingList{"a": {Range: []int{5, 2}, TimelineLimit: 1}}}, "M_INVALID_PARAM"},
			{"negative start", slidingReq{Lists: map[string]slidingList{"a": {Range: []int{-1, 2}, TimelineLimit: 1}}}, "M_INVALID_PARAM"},
			{"negative limit", slidingReq{Lists: map[string]slidingList{"a": {Range: []int{0, 2}, TimelineLimit: -1}}}, "M_INVALID_PARAM"},
			{"no limit", map[string]any{"lists": map[string]any{"a": map[string]any{"range": []int{0, 1}}}}, "M_MISSING_PARAM"},
			{"too many lists", slidingReq{Lists: many}, "M_INVALID_PARAM"},
			{"bad list name", slidingReq{Lists: map[string]slidingList{"a b": {TimelineLimit: 1}}}, "M_INVALID_PARAM"},
			{"bad required_state", slidingReq{Lists: map[string]slidingList{"a": {TimelineLimit: 1, RequiredState: []string{"x"}}}}, "M_INVALID_PARAM"},
			{"unknown list in extension", slidingReq{Lists: list, Extensions: map[string]any{"typing": map[string]any{"enabled": true, "lists": []string{"nope"}}}}, "M_INVALID_PARAM"},
			{"bad subscription", slidingReq{Subs: map[string]slidingSub{"not a room": {TimelineLimit: 1}}}, "M_INVALID_PARAM"},
			{"bad set_presence", map[string]any{"set_presence": "sleepy"}, "M_INVALID_PARAM"},
			{"wrong type", map[string]any{"lists": []int{1}}, "M_BAD_JSON"},
			{"bad to_device since", slidingReq{Extensions: map[string]any{"to_device": map[string]any{"enabled": true, "since": "x"}}}, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) { h.wantSlidingError(alice, c.body, http.StatusBadRequest, c.errcode) })
		}
		// A huge range end and limit are clamped, not refused.
		res := h.sliding(alice, slidingReq{Lists: map[string]slidingList{"a": {Range: []int{0, 1 << 40}, TimelineLimit: 1 << 30}}})
		if len(res.Rooms) != 1 {
			t.Fatalf("huge range: %v", roomIDs(res))
		}
	})
}

// TestSlidingSurvivesRestart: a pos handed out before the sync API restarts is still
// valid after it, and the next response carries only what changed.
func TestSlidingSurvivesRestart(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		quiet, busy := h.newRoom(alice), h.newRoom(alice)
		h.waitConsumed()
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1}}
		res := h.sliding(alice, slidingReq{ConnID: "main", Lists: list})
		if len(res.Rooms) != 2 {
			t.Fatalf("first response: %v", roomIDs(res))
		}
		h.stop()

		h = start(t, db)
		alice = h.user("alice")
		h.send(busy, alice, "after restart")
		h.waitConsumed()
		res = h.sliding(alice, slidingReq{ConnID: "main", Pos: res.Pos, Lists: list})
		if r := res.Rooms[busy]; len(res.Rooms) != 1 || r == nil || r.Initial || !slices.Equal(timelineBodies(r), []string{"after restart"}) {
			t.Fatalf("after restart: %v %+v", roomIDs(res), r)
		}
		if res.Rooms[quiet] != nil {
			t.Fatal("the unchanged room was sent again")
		}
	})
}

// TestSlidingAccountDataExtension: the account_data extension gives global and room
// account data whole at first, then only what changed.
func TestSlidingAccountDataExtension(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		roomID := h.newRoom(alice)
		h.accountData(alice, "", "m.test.global", map[string]int{"n": 1})
		h.accountData(alice, roomID, "m.test.room", map[string]int{"n": 1})
		h.waitConsumed()
		ext := map[string]any{"account_data": map[string]any{"enabled": true}}
		list := map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 1}}
		res := h.sliding(alice, slidingReq{Lists: list, Extensions: ext})
		ad := res.Extensions.AccountData
		if ad == nil || len(ad.Global) != 1 || ad.Global[0].Type != "m.test.global" || len(ad.Rooms[roomID]) != 1 {
			t.Fatalf("first account data: %+v", ad)
		}
		// A connection with no lists (matrix-rust-sdk's encryption connection) still gets
		// the global account data, and no rooms.
		if only := h.sliding(alice, slidingReq{ConnID: "ext", Extensions: ext}); len(only.Extensions.AccountData.Global) != 1 || len(only.Rooms) != 0 {
			t.Fatalf("extension-only connection: %+v", only)
		}
		h.accountData(alice, roomID, "m.test.room", map[string]int{"n": 2})
		res = h.sliding(alice, slidingReq{Pos: res.Pos, Timeout: 10000, Lists: list, Extensions: ext})
		ad = res.Extensions.AccountData
		if len(ad.Global) != 0 || len(ad.Rooms[roomID]) != 1 || string(ad.Rooms[roomID][0].Content) != `{"n":2}` || len(res.Rooms) != 0 {
			t.Fatalf("second account data: %+v, rooms %v", ad, roomIDs(res))
		}
	})
}

// TestSlidingActivityMigration fills the room activity table from events a sync API stored
// before the table existed: the list's order and bump stamps come from the migration.
func TestSlidingActivityMigration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		var rooms []string
		for i := 0; i < 3; i++ {
			rooms = append(rooms, h.newRoom(alice))
			h.waitConsumed()
		}
		h.send(rooms[0], alice, "latest")
		h.waitConsumed()
		h.stop()
		for _, stmt := range []string{"DROP TABLE syncapi_room_activity", "DROP TABLE syncapi_sliding_positions", "DELETE FROM syncapi_schema_version WHERE version >= 8"} {
			if _, err := db.ExecContext(context.Background(), stmt); err != nil {
				t.Fatal(err)
			}
		}
		h = start(t, db)
		h.user("alice")
		res := h.sliding(alice, slidingReq{Lists: map[string]slidingList{"all": {Range: []int{0, 0}, TimelineLimit: 1}}})
		if r := res.Rooms[rooms[0]]; len(res.Rooms) != 1 || r == nil || !slices.Equal(timelineBodies(r), []string{"latest"}) || r.BumpStamp == nil || *r.BumpStamp <= 0 {
			t.Fatalf("after the migration: %v %+v", roomIDs(res), r)
		}
	})
}

// TestSlidingRangeForms: Synapse's ranges (a union), an empty ranges (no room), no range at
// all (every room), pos and timeout in the query string, and txn_id echoed.
func TestSlidingRangeForms(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice := h.user("alice")
		var rooms []string // oldest first
		for i := 0; i < 4; i++ {
			rooms = append(rooms, h.newRoom(alice))
			h.waitConsumed()
		}
		for _, c := range []struct {
			name string
			list map[string]any
			want []string
		}{
			{"ranges union", map[string]any{"ranges": [][]int{{0, 0}, {2, 2}}, "timeline_limit": 0}, []string{rooms[3], rooms[1]}},
			{"empty ranges", map[string]any{"ranges": [][]int{}, "timeline_limit": 0}, nil},
			{"no range", map[string]any{"timeline_limit": 0}, rooms},
		} {
			t.Run(c.name, func(t *testing.T) {
				res := h.sliding(alice, map[string]any{"txn_id": "t1", "lists": map[string]any{"l": c.list}})
				if !slices.Equal(roomIDs(res), sortedCopy(c.want)) || res.Lists["l"].Count != 4 || res.TxnID != "t1" {
					t.Fatalf("rooms %v (count %d, txn %q), want %v", roomIDs(res), res.Lists["l"].Count, res.TxnID, c.want)
				}
			})
		}
		// Synapse's clients put pos and timeout in the query string.
		list := map[string]any{"l": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1}}
		pos := h.sliding(alice, map[string]any{"lists": list}).Pos
		h.send(rooms[0], alice, "query pos")
		b, _ := json.Marshal(map[string]any{"lists": list})                                                                // plain maps always encode
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+slidingPath+"?pos="+pos+"&timeout=10000", bytes.NewReader(b)) // the URL is well-formed
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res types.SlidingResponse
		if err = json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("query pos: %d %v", resp.StatusCode, err)
		}
		if r := res.Rooms[rooms[0]]; len(res.Rooms) != 1 || r == nil || r.Initial || !slices.Equal(timelineBodies(r), []string{"query pos"}) {
			t.Fatalf("query pos answered %v %+v", roomIDs(&res), r)
		}
	})
}

// TestSlidingWithdrawnInvite: an invite withdrawn by the inviter stays in the list (the user
// may not have seen it), with stripped state only, never the room's timeline.
func TestSlidingWithdrawnInvite(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		roomID := h.newRoom(bob)
		h.send(roomID, bob, "before the invite")
		h.member(roomID, bob, alice, spec.Invite)
		h.send(roomID, bob, "while invited")
		h.member(roomID, bob, alice, spec.Leave)
		h.waitConsumed()
		res := h.sliding(alice, slidingReq{Lists: map[string]slidingList{"all": {Range: []int{0, 9}, TimelineLimit: 10}}})
		r := res.Rooms[roomID]
		if r == nil || r.Membership != spec.Leave || r.Timeline != nil || len(r.StrippedState) == 0 {
			t.Fatalf("withdrawn invite: %+v", r)
		}
	})
}
