package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
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
	waitForSaying(t, func() string { return what }, cond)
}

// waitForSaying is waitFor whose timeout message is what() at the time, so that it can say
// what cond last saw.
func waitForSaying(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relationsOf is unsigned["m.relations"] of an event in its JSON form. mautrix's own type
// for it predates threads and edits as the spec has them now, so the tests read JSON.
func relationsOf(ev map[string]any) map[string]any {
	unsigned, _ := ev["unsigned"].(map[string]any)
	rel, _ := unsigned["m.relations"].(map[string]any)
	return rel
}

// getJSON GETs a client API URL and decodes the answer.
func getJSON(t *testing.T, c *mautrix.Client, url string) map[string]any {
	t.Helper()
	var out map[string]any
	if _, err := c.MakeRequest(context.Background(), http.MethodGet, url, nil, &out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return out
}

// findEvent is the event with the ID in a list of events in JSON form.
func findEvent(list any, eventID id.EventID) map[string]any {
	evs, _ := list.([]any)
	for _, e := range evs {
		if m, _ := e.(map[string]any); m["event_id"] == string(eventID) {
			return m
		}
	}
	return nil
}

// Relations checks threads, edits, reactions and references with a real Matrix client:
// /relations with its filters, paging, dir and recurse, bundled aggregations on /sync,
// /messages and /context, /threads with include, a redacted thread reply leaving the
// aggregation, and the refusals.
func Relations(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "relalice"), Register(t, baseURL, "relbob"), Register(t, baseURL, "relcarol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err = c.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	send := func(c *mautrix.Client, content map[string]any, evType event.Type) id.EventID {
		t.Helper()
		res, err := c.SendMessageEvent(ctx, room.RoomID, evType, content)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		return res.EventID
	}
	msg := func(body string, rel map[string]any) map[string]any {
		c := map[string]any{"msgtype": "m.text", "body": body}
		if rel != nil {
			c["m.relates_to"] = rel
		}
		return c
	}
	root := send(alice, msg("root", nil), event.EventMessage)
	reply1 := send(bob, msg("reply 1", map[string]any{"rel_type": "m.thread", "event_id": root}), event.EventMessage)
	reply2 := send(bob, msg("reply 2", map[string]any{"rel_type": "m.thread", "event_id": root}), event.EventMessage)
	edit := send(alice, map[string]any{"msgtype": "m.text", "body": "* root!", "m.new_content": map[string]any{"msgtype": "m.text", "body": "root!"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}}, event.EventMessage)
	send(bob, map[string]any{"msgtype": "m.text", "body": "* hijack", "m.new_content": map[string]any{"msgtype": "m.text", "body": "hijack"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}}, event.EventMessage)
	reaction := send(carol, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}}, event.EventReaction)
	ref := send(carol, msg("see root", map[string]any{"rel_type": "m.reference", "event_id": root}), event.EventMessage)
	onReaction := send(bob, msg("about the reaction", map[string]any{"rel_type": "m.reference", "event_id": reaction}), event.EventMessage)

	rels, err := carol.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{})
	if err != nil || len(rels.Chunk) != 5 || rels.NextBatch == "" || rels.Chunk[0].ID != ref {
		t.Fatalf("first page (newest first, default limit 5): %+v %v", rels, err)
	}
	rest, err := carol.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{From: rels.NextBatch})
	if err != nil || len(rest.Chunk) != 1 || rest.NextBatch != "" || rest.Chunk[0].ID != reply1 {
		t.Fatalf("second page: %+v %v", rest, err)
	}
	threads, err := carol.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, Dir: mautrix.DirectionForward})
	if err != nil || len(threads.Chunk) != 2 || threads.Chunk[0].ID != reply1 || threads.Chunk[1].ID != reply2 {
		t.Fatalf("m.thread forward: %+v %v", threads, err)
	}
	reactions, err := carol.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction})
	if err != nil || len(reactions.Chunk) != 1 || reactions.Chunk[0].ID != reaction {
		t.Fatalf("m.annotation m.reaction: %+v %v", reactions, err)
	}
	deep, err := carol.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{RelationType: event.RelReference, Recurse: true, Limit: 10})
	if err != nil || len(deep.Chunk) != 2 || deep.Chunk[0].ID != onReaction || deep.RecursionDepth != 2 {
		t.Fatalf("recursive m.reference: %+v %v", deep, err)
	}

	checkRoot := func(where string, ev map[string]any, wantCount float64, wantLatest id.EventID, participated bool) {
		t.Helper()
		rel := relationsOf(ev)
		thread, _ := rel["m.thread"].(map[string]any)
		latest, _ := thread["latest_event"].(map[string]any)
		if thread == nil || thread["count"] != wantCount || latest["event_id"] != string(wantLatest) || thread["current_user_participated"] != participated {
			t.Fatalf("%s: m.thread of the root %v", where, rel)
		}
		replace, _ := rel["m.replace"].(map[string]any)
		if replace == nil || replace["event_id"] != string(edit) {
			t.Fatalf("%s: m.replace of the root %v", where, rel)
		}
		refs, _ := rel["m.reference"].(map[string]any)
		if chunk, _ := refs["chunk"].([]any); len(chunk) != 1 {
			t.Fatalf("%s: m.reference of the root %v", where, rel)
		}
	}
	roomPath := func(c *mautrix.Client, version string, q map[string]string, parts ...any) string {
		return c.BuildURLWithQuery(append(mautrix.ClientURLPath{version, "rooms", room.RoomID}, parts...), q)
	}
	msgs := getJSON(t, carol, roomPath(carol, "v3", map[string]string{"dir": "b", "limit": "20"}, "messages"))
	rootEv := findEvent(msgs["chunk"], root)
	if rootEv == nil {
		t.Fatal("root not in /messages")
	}
	checkRoot("/messages for carol", rootEv, 2, reply2, false)
	cx := getJSON(t, bob, roomPath(bob, "v3", map[string]string{"limit": "2"}, "context", root))
	ctxEv, _ := cx["event"].(map[string]any)
	checkRoot("/context for bob", ctxEv, 2, reply2, true)
	synced := getJSON(t, alice, alice.BuildClientURL("v3", "sync"))
	joined, _ := synced["rooms"].(map[string]any)["join"].(map[string]any)
	tl, _ := joined[string(room.RoomID)].(map[string]any)["timeline"].(map[string]any)
	syncEv := findEvent(tl["events"], root)
	if syncEv == nil {
		t.Fatal("root not in /sync's timeline")
	}
	checkRoot("/sync for alice (the root's sender)", syncEv, 2, reply2, true)

	list := getJSON(t, carol, roomPath(carol, "v1", nil, "threads"))
	if chunk, _ := list["chunk"].([]any); len(chunk) != 1 || findEvent(chunk, root) == nil {
		t.Fatalf("threads: %v", list)
	}
	checkRoot("/threads", findEvent(list["chunk"], root), 2, reply2, false)
	if chunk, _ := getJSON(t, carol, roomPath(carol, "v1", map[string]string{"include": "participated"}, "threads"))["chunk"].([]any); len(chunk) != 0 {
		t.Fatalf("carol's threads: %v", chunk)
	}
	if chunk, _ := getJSON(t, bob, roomPath(bob, "v1", map[string]string{"include": "participated"}, "threads"))["chunk"].([]any); len(chunk) != 1 {
		t.Fatalf("bob's threads: %v", chunk)
	}

	if _, err = bob.RedactEvent(ctx, room.RoomID, reply2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redacted reply to leave the thread", func() bool {
		ev, _ := getJSON(t, carol, roomPath(carol, "v3", map[string]string{"limit": "0"}, "context", root))["event"].(map[string]any)
		thread, _ := relationsOf(ev)["m.thread"].(map[string]any)
		latest, _ := thread["latest_event"].(map[string]any)
		return thread != nil && thread["count"] == float64(1) && latest["event_id"] == string(reply1)
	})

	outsider := Register(t, baseURL, "reloutsider")
	_, err = outsider.GetRelations(ctx, room.RoomID, root, &mautrix.ReqGetRelations{})
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = carol.GetRelations(ctx, room.RoomID, "$nope", &mautrix.ReqGetRelations{})
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = carol.MakeRequest(ctx, http.MethodGet, roomPath(carol, "v1", map[string]string{"dir": "sideways"}, "relations", root), nil, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = carol.MakeRequest(ctx, http.MethodGet, roomPath(carol, "v1", map[string]string{"include": "mine"}, "threads"), nil, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
}

// Spaces checks GET /v1/rooms/{roomId}/hierarchy, GET /v1/room_summary and restricted
// joins with a real Matrix client: who sees which rooms of a space, suggested_only,
// max_depth and paging, summaries without leaking private rooms, and a restricted room
// joined by a member of its space and refused to others.
func Spaces(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "spalice"), Register(t, baseURL, "spbob"), Register(t, baseURL, "spcarol")
	server := alice.UserID.Homeserver()
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", RoomAliasName: "thespace",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Public"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"})
	if err != nil {
		t.Fatal(err)
	}
	restricted, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Members only", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.RoomID}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, child := range []id.RoomID{pub.RoomID, priv.RoomID, restricted.RoomID} {
		content := map[string]any{"via": []string{server}, "order": fmt.Sprintf("%02d", i), "suggested": child == pub.RoomID}
		if _, err = alice.SendStateEvent(ctx, space.RoomID, event.Type{Type: "m.space.child", Class: event.StateEventType}, child.String(), content); err != nil {
			t.Fatal(err)
		}
	}
	if _, err = alice.SendStateEvent(ctx, space.RoomID, event.Type{Type: "m.space.child", Class: event.StateEventType}, "!gone:"+server,
		map[string]any{}); err != nil {
		t.Fatal(err)
	}
	roomsOf := func(c *mautrix.Client, req *mautrix.ReqHierarchy) ([]id.RoomID, string) {
		t.Helper()
		res, err := c.Hierarchy(ctx, space.RoomID, req)
		if err != nil {
			t.Fatalf("hierarchy: %v", err)
		}
		var out []id.RoomID
		for _, r := range res.Rooms {
			out = append(out, r.RoomID)
		}
		return out, res.NextBatch
	}
	same := func(what string, got []id.RoomID, want ...id.RoomID) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
	got, _ := roomsOf(carol, &mautrix.ReqHierarchy{})
	same("carol, outside the space", got, space.RoomID, pub.RoomID)
	if _, err = carol.JoinRoom(ctx, restricted.RoomID.String(), nil); err == nil {
		t.Fatal("carol joined the restricted room without being in the space")
	}
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	if _, err = bob.JoinRoom(ctx, space.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	got, _ = roomsOf(bob, &mautrix.ReqHierarchy{})
	same("bob, in the space", got, space.RoomID, pub.RoomID, restricted.RoomID)
	got, _ = roomsOf(bob, &mautrix.ReqHierarchy{SuggestedOnly: true})
	same("suggested only", got, space.RoomID, pub.RoomID)
	zero := 0
	got, _ = roomsOf(bob, &mautrix.ReqHierarchy{MaxDepth: &zero})
	same("max_depth 0", got, space.RoomID)
	first, next := roomsOf(bob, &mautrix.ReqHierarchy{Limit: 2})
	rest, last := roomsOf(bob, &mautrix.ReqHierarchy{Limit: 2, From: next})
	if next == "" || last != "" {
		t.Fatalf("paging tokens %q %q", next, last)
	}
	same("two pages", append(first, rest...), space.RoomID, pub.RoomID, restricted.RoomID)
	res, err := bob.Hierarchy(ctx, space.RoomID, &mautrix.ReqHierarchy{Limit: 1})
	if err != nil || len(res.Rooms) != 1 || res.Rooms[0].RoomType != "m.space" || len(res.Rooms[0].ChildrenState) != 3 || res.Rooms[0].Name != "Space" {
		t.Fatalf("the space's own entry: %+v %v", res, err)
	}

	if _, err = bob.JoinRoom(ctx, restricted.RoomID.String(), nil); err != nil {
		t.Fatalf("bob, in the space, joins the restricted room: %v", err)
	}
	var member map[string]any
	if err = alice.StateEvent(ctx, restricted.RoomID, event.StateMember, bob.UserID.String(), &member); err != nil ||
		member["join_authorised_via_users_server"] != alice.UserID.String() {
		t.Fatalf("bob's join %v %v", member, err)
	}

	_, err = carol.Hierarchy(ctx, priv.RoomID, &mautrix.ReqHierarchy{})
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	summary := func(c *mautrix.Client, target string) (map[string]any, error) {
		var out map[string]any
		_, err := c.MakeRequest(ctx, http.MethodGet, c.BuildClientURL("v1", "room_summary", target), nil, &out)
		return out, err
	}
	if s, err := summary(carol, pub.RoomID.String()); err != nil || s["name"] != "Public" || s["join_rule"] != "public" ||
		s["membership"] != "leave" || s["room_version"] == nil || s["num_joined_members"] != float64(1) {
		t.Fatalf("summary of a public room for carol: %v %v", s, err)
	}
	if s, err := summary(bob, "#thespace:"+server); err != nil || s["room_type"] != "m.space" || s["membership"] != "join" {
		t.Fatalf("summary of the space by alias for bob: %v %v", s, err)
	}
	if s, err := summary(Client(t, baseURL), pub.RoomID.String()); err != nil || s["membership"] != nil {
		t.Fatalf("summary without a token: %v %v", s, err)
	}
	_, err = summary(carol, priv.RoomID.String())
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = summary(carol, "!nope:"+server)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = summary(Client(t, baseURL), restricted.RoomID.String())
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	if s, err := summary(bob, restricted.RoomID.String()); err != nil || fmt.Sprint(s["allowed_room_ids"]) != fmt.Sprint([]any{space.RoomID.String()}) {
		t.Fatalf("summary of the restricted room for bob: %v %v", s, err)
	}
}

// Knocking checks POST /knock with a real Matrix client: a knock appears in the knocker's
// /sync under rooms.knock with the room's stripped state, an invite accepts it and a kick
// rejects it, and rooms whose join rule is not knock refuse knocks.
func Knocking(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "knalice"), Register(t, baseURL, "knbob"), Register(t, baseURL, "kncarol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Door", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	start, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.KnockRoom(ctx, room.RoomID.String(), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil {
		t.Fatalf("knock: %v", err)
	}
	knocked, err := bob.SyncRequest(ctx, 0, start.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	k := knocked.Rooms.Knock[room.RoomID]
	if k == nil {
		t.Fatalf("no rooms.knock entry: %+v", knocked.Rooms)
	}
	var sawName, sawKnock bool
	for _, ev := range k.State.Events {
		sawName = sawName || ev.Type == event.StateRoomName
		sawKnock = sawKnock || ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "knock"
	}
	if !sawName || !sawKnock {
		t.Fatalf("knock_state %+v", k.State.Events)
	}
	var member map[string]any
	if err = alice.StateEvent(ctx, room.RoomID, event.StateMember, bob.UserID.String(), &member); err != nil || member["membership"] != "knock" || member["reason"] != "let me in" {
		t.Fatalf("alice sees bob's knock %v %v", member, err)
	}
	if _, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("accept the knock with an invite: %v", err)
	}
	invited, err := bob.SyncRequest(ctx, 0, knocked.NextBatch, "", false, "")
	if err != nil || invited.Rooms.Invite[room.RoomID] == nil || invited.Rooms.Knock[room.RoomID] != nil {
		t.Fatalf("bob's invite after the knock %+v %v", invited, err)
	}
	if _, err = bob.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}

	if _, err = carol.KnockRoom(ctx, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err = alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "no"}); err != nil {
		t.Fatalf("reject the knock with a kick: %v", err)
	}
	if err = alice.StateEvent(ctx, room.RoomID, event.StateMember, carol.UserID.String(), &member); err != nil || member["membership"] != "leave" {
		t.Fatalf("carol after the rejection %v %v", member, err)
	}
	_, err = carol.JoinRoom(ctx, room.RoomID.String(), nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = carol.KnockRoom(ctx, closed.RoomID.String(), nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.KnockRoom(ctx, room.RoomID.String(), nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = carol.KnockRoom(ctx, "!unknown:"+alice.UserID.Homeserver(), nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
}

// Upgrades checks POST /rooms/{roomId}/upgrade with a real Matrix client: the tombstone and
// the predecessor, copied state and bans, the alias and the directory entry moved, the old
// room restricted, tags following a member into the new room, and the refusals.
func Upgrades(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "upalice"), Register(t, baseURL, "upbob")
	server := alice.UserID.Homeserver()
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old", Topic: "history", RoomAliasName: "upgraded",
		Visibility: "public", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err = alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: "@spammer:" + id.UserID(server)}); err != nil {
		t.Fatal(err)
	}
	if err = bob.AddTag(ctx, room.RoomID, "u.keep", 0.5); err != nil {
		t.Fatal(err)
	}
	// allow_ip_literals as a string, as sytest sends it (accepted and ignored, as Synapse does).
	acl := map[string]any{"allow": []any{"*"}, "allow_ip_literals": "false", "deny": []any{"*.evil.example", "evil.example"}}
	if _, err = alice.SendStateEvent(ctx, room.RoomID, event.StateServerACL, "", acl); err != nil {
		t.Fatalf("server ACL with a string allow_ip_literals: %v", err)
	}
	upgradeURL := alice.BuildClientURL("v3", "rooms", room.RoomID, "upgrade")
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", room.RoomID, "upgrade"), map[string]any{"new_version": "11"}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = alice.MakeRequest(ctx, http.MethodPost, upgradeURL, map[string]any{"new_version": "99"}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	_, err = alice.MakeRequest(ctx, http.MethodPost, upgradeURL, map[string]any{}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_MISSING_PARAM")

	var res struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, upgradeURL, map[string]any{"new_version": "11"}, &res); err != nil || res.ReplacementRoom == "" {
		t.Fatalf("upgrade: %+v %v", res, err)
	}
	var tomb, create, name, pl, banned map[string]any
	if err = alice.StateEvent(ctx, room.RoomID, event.Type{Type: "m.room.tombstone", Class: event.StateEventType}, "", &tomb); err != nil ||
		tomb["replacement_room"] != string(res.ReplacementRoom) {
		t.Fatalf("tombstone %v %v", tomb, err)
	}
	if err = alice.StateEvent(ctx, res.ReplacementRoom, event.StateCreate, "", &create); err != nil || create["room_version"] != "11" {
		t.Fatalf("new create %v %v", create, err)
	}
	if pred, _ := create["predecessor"].(map[string]any); pred["room_id"] != string(room.RoomID) || pred["event_id"] == nil {
		t.Fatalf("predecessor %v", create)
	}
	if err = alice.StateEvent(ctx, res.ReplacementRoom, event.StateRoomName, "", &name); err != nil || name["name"] != "Old" {
		t.Fatalf("name in the new room %v %v", name, err)
	}
	// The old room (public_chat) has no m.room.guest_access; the new one states its default.
	var guests map[string]any
	if err = alice.StateEvent(ctx, res.ReplacementRoom, event.StateGuestAccess, "", &guests); err != nil || guests["guest_access"] != "forbidden" {
		t.Fatalf("guest access in the new room %v %v", guests, err)
	}
	var newACL map[string]any
	if err = alice.StateEvent(ctx, res.ReplacementRoom, event.StateServerACL, "", &newACL); err != nil || !reflect.DeepEqual(newACL, acl) {
		t.Fatalf("server ACL in the new room %v %v", newACL, err)
	}
	if err = alice.StateEvent(ctx, res.ReplacementRoom, event.StateMember, "@spammer:"+server, &banned); err != nil || banned["membership"] != "ban" {
		t.Fatalf("ban in the new room %v %v", banned, err)
	}
	if err = alice.StateEvent(ctx, room.RoomID, event.StatePowerLevels, "", &pl); err != nil || pl["events_default"] != float64(50) || pl["invite"] != float64(50) {
		t.Fatalf("old room's power levels %v %v", pl, err)
	}
	if resolved, err := bob.ResolveAlias(ctx, id.RoomAlias("#upgraded:"+server)); err != nil || resolved.RoomID != res.ReplacementRoom {
		t.Fatalf("alias after the upgrade %+v %v", resolved, err)
	}
	for want, r := range map[string]id.RoomID{"public": res.ReplacementRoom, "private": room.RoomID} {
		if vis := getJSON(t, bob, bob.BuildClientURL("v3", "directory", "list", "room", r)); vis["visibility"] != want {
			t.Fatalf("directory visibility of %s: %v, want %s", r, vis, want)
		}
	}
	_, err = bob.SendText(ctx, room.RoomID, "still here?")
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err = bob.JoinRoom(ctx, res.ReplacementRoom.String(), nil); err != nil {
		t.Fatal(err)
	}
	if tags, err := bob.GetTags(ctx, res.ReplacementRoom); err != nil || len(tags.Tags) != 1 {
		t.Fatalf("bob's tags in the new room %+v %v", tags, err)
	}
}
