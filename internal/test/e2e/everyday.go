package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Tags checks room tags (favourites, low priority, user tags) with a real Matrix client:
// add, replace, list and remove, m.tag room account data in /sync, and the refusals.
func Tags(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "tagger"), Register(t, baseURL, "peeker")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "tagged"})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	if tags, err := alice.GetTags(ctx, room.RoomID); err != nil || len(tags.Tags) != 0 {
		t.Fatalf("tags of an untagged room %+v %v", tags, err)
	}
	if err = alice.AddTag(ctx, room.RoomID, event.RoomTagFavourite, 0.25); err != nil {
		t.Fatalf("add m.favourite: %v", err)
	}
	if err = alice.AddTagWithCustomData(ctx, room.RoomID, "u.work", map[string]any{}); err != nil {
		t.Fatalf("add u.work: %v", err)
	}
	if err = alice.AddTag(ctx, room.RoomID, event.RoomTagFavourite, 0.5); err != nil {
		t.Fatalf("replace m.favourite: %v", err)
	}
	tags, err := alice.GetTags(ctx, room.RoomID)
	if order, _ := tags.Tags[event.RoomTagFavourite].Order.Float64(); err != nil || len(tags.Tags) != 2 || order != 0.5 {
		t.Fatalf("tags %+v %v", tags, err)
	}
	if _, ok := tags.Tags["u.work"]; !ok {
		t.Fatalf("u.work missing from %+v", tags)
	}
	want := map[string]bool{"m.favourite": true, "u.work": true}
	WaitSyncTags(t, alice, room.RoomID, first.NextBatch, want)
	if err = alice.RemoveTag(ctx, room.RoomID, "u.work"); err != nil {
		t.Fatalf("remove u.work: %v", err)
	}
	if err = alice.RemoveTag(ctx, room.RoomID, "u.never"); err != nil {
		t.Fatalf("removing an absent tag: %v", err)
	}
	WaitSyncTags(t, alice, room.RoomID, first.NextBatch, map[string]bool{"m.favourite": true})
	if tags, err = alice.GetTags(ctx, room.RoomID); err != nil || len(tags.Tags) != 1 {
		t.Fatalf("tags after removal %+v %v", tags, err)
	}
	// Tags are the user's own: bob neither sees nor changes alice's.
	if tags, err = bob.GetTags(ctx, room.RoomID); err != nil || len(tags.Tags) != 0 {
		t.Fatalf("bob sees tags %+v %v", tags, err)
	}
	_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildClientURL("v3", "user", alice.UserID, "rooms", room.RoomID, "tags"), nil, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "user", alice.UserID, "rooms", room.RoomID, "tags", "u.x"), map[string]any{}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	tagURL := alice.BuildClientURL("v3", "user", alice.UserID, "rooms", room.RoomID, "tags", "u.bad")
	_, err = alice.MakeRequest(ctx, http.MethodPut, tagURL, map[string]any{"order": "first"}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
	_, err = alice.MakeRequest(ctx, http.MethodPut, tagURL, []int{1}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "user", alice.UserID, "rooms", "not-a-room", "tags", "u.x"), map[string]any{}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
}

// WaitSyncTags syncs from since until the room's m.tag account data holds exactly the
// wanted tags, or fails after a deadline.
func WaitSyncTags(t *testing.T, c *mautrix.Client, roomID id.RoomID, since string, want map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last json.RawMessage
	for time.Now().Before(deadline) {
		res, err := c.SyncRequest(context.Background(), 0, since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		if room := res.Rooms.Join[roomID]; room != nil {
			for _, ev := range room.AccountData.Events {
				if ev.Type.Type != "m.tag" {
					continue
				}
				last = ev.Content.VeryRaw
				var content struct {
					Tags map[string]json.RawMessage `json:"tags"`
				}
				if json.Unmarshal(ev.Content.VeryRaw, &content) == nil && sameKeys(content.Tags, want) {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("m.tag in /sync never became %v; last %s", want, last)
}

func sameKeys(got map[string]json.RawMessage, want map[string]bool) bool {
	if len(got) != len(want) {
		return false
	}
	for k := range got {
		if !want[k] {
			return false
		}
	}
	return true
}

// UserDirectory checks POST /user_directory/search with a real Matrix client: users who
// share a room with the searcher and users in public rooms are found by user ID and by
// display name (case and accents ignored), others are not; display name changes and leaves
// update the directory; limit and limited. The searcher finds themself only through a public
// room.
func UserDirectory(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "udalice"), Register(t, baseURL, "udbob")
	carol, dave := Register(t, baseURL, "udcarol"), Register(t, baseURL, "uddave")
	if err := bob.SetDisplayName(ctx, "Élodie Bobson"); err != nil {
		t.Fatal(err)
	}
	private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, private.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	public, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"}); err != nil {
		t.Fatal(err)
	}

	found := func(c *mautrix.Client, term string, limit int) *mautrix.RespSearchUserDirectory {
		t.Helper()
		res, err := c.SearchUserDirectory(ctx, term, limit)
		if err != nil {
			t.Fatalf("search %q: %v", term, err)
		}
		return res
	}
	ids := func(res *mautrix.RespSearchUserDirectory) map[id.UserID]string {
		out := map[id.UserID]string{}
		for _, u := range res.Results {
			// The spec's field is display_name; mautrix reads a profile's displayname,
			// so the spec's field lands in Extra.
			out[u.UserID], _ = u.Extra["display_name"].(string)
		}
		return out
	}
	if got := ids(found(alice, "udbob", 10)); got[bob.UserID] != "Élodie Bobson" || len(got) != 1 {
		t.Fatalf("by user ID: %v", got)
	}
	if got := ids(found(alice, "ELODIE bob", 10)); len(got) != 1 || got[bob.UserID] == "" {
		t.Fatalf("by display name without case and accents: %v", got)
	}
	if got := ids(found(alice, "udcarol", 10)); len(got) != 1 {
		t.Fatalf("a member of a public room: %v", got)
	}
	if got := ids(found(alice, "uddave", 10)); len(got) != 0 {
		t.Fatalf("a user alice shares no room with is found: %v", got)
	}
	if got := ids(found(dave, "udbob", 10)); len(got) != 0 {
		t.Fatalf("dave finds a user of a private room: %v", got)
	}
	all := found(alice, "ud", 10)
	if len(all.Results) != 2 || all.Limited {
		t.Fatalf("every findable user: %+v", all)
	}
	if one := found(alice, "ud", 1); len(one.Results) != 1 || !one.Limited {
		t.Fatalf("limit 1: %+v", one)
	}

	if err = bob.SetDisplayName(ctx, "Robert"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new display name in the directory", func() bool {
		return ids(found(alice, "robert", 10))[bob.UserID] == "Robert" && len(found(alice, "elodie", 10).Results) == 0
	})
	if _, err = dave.JoinRoom(ctx, public.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dave in the public room is found", func() bool { return len(found(alice, "uddave", 10).Results) == 1 })
	if _, err = bob.LeaveRoom(ctx, private.RoomID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob gone once he left", func() bool { return len(found(alice, "udbob", 10).Results) == 0 })

	search := alice.BuildClientURL("v3", "user_directory", "search")
	_, err = alice.MakeRequest(ctx, http.MethodPost, search, map[string]any{"limit": 1}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_MISSING_PARAM")
	_, err = alice.MakeRequest(ctx, http.MethodPost, search, map[string]any{"search_term": "x", "limit": -1}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.MakeRequest(ctx, http.MethodPost, search, map[string]any{"search_term": 7}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
	var big mautrix.RespSearchUserDirectory
	if _, err = alice.MakeRequest(ctx, http.MethodPost, search, map[string]any{"search_term": "ud", "limit": 1e12}, &big); err != nil || len(big.Results) != 2 {
		t.Fatalf("a huge limit is clamped: %+v %v", big, err)
	}
}

// waitFor polls cond until it holds, or fails after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
