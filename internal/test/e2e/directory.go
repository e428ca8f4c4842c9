package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Directory checks room aliases (createRoom's room_alias_name and m.room.canonical_alias,
// create, resolve, join by alias, list, delete and who may) and the published room
// directory (visibility, paging, the search filter), with a real Matrix client.
func Directory(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "alice"), Register(t, baseURL, "bob"), Register(t, baseURL, "carol")
	server := alice.UserID.Homeserver()
	alias := func(local string) id.RoomAlias { return id.RoomAlias("#" + local + ":" + server) }

	lobby, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "lobby", Visibility: "public", Preset: "public_chat",
		Name: "Lobby", Topic: "Say hi"})
	if err != nil {
		t.Fatalf("createRoom with an alias: %v", err)
	}
	var canonical event.CanonicalAliasEventContent
	if err = alice.StateEvent(ctx, lobby.RoomID, event.StateCanonicalAlias, "", &canonical); err != nil || canonical.Alias != alias("lobby") {
		t.Fatalf("canonical alias %+v %v", canonical, err)
	}
	resolved, err := carol.ResolveAlias(ctx, alias("lobby"))
	if err != nil || resolved.RoomID != lobby.RoomID || !slices.Contains(resolved.Servers, server) {
		t.Fatalf("resolve %+v %v", resolved, err)
	}
	_, err = bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "lobby"})
	WantErrCode(t, err, http.StatusBadRequest, "M_ROOM_IN_USE")
	joined, err := bob.JoinRoom(ctx, string(alias("lobby")), nil)
	if err != nil || joined.RoomID != lobby.RoomID {
		t.Fatalf("join by alias %+v %v", joined, err)
	}

	if _, err = alice.CreateAlias(ctx, alias("lobby2"), lobby.RoomID); err != nil {
		t.Fatalf("create alias: %v", err)
	}
	_, err = bob.CreateAlias(ctx, alias("lobby2"), lobby.RoomID)
	WantErrCode(t, err, http.StatusConflict, "M_UNKNOWN")
	for _, bad := range []id.RoomAlias{"#nocolon", "#:" + id.RoomAlias(server), "lobby3:" + id.RoomAlias(server), "#lobby3:other.example"} {
		_, err = alice.CreateAlias(ctx, bad, lobby.RoomID)
		WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	_, err = carol.ResolveAlias(ctx, "#nocolon")
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = carol.ResolveAlias(ctx, alias("nope"))
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = carol.CreateAlias(ctx, alias("sneaky"), lobby.RoomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = bob.JoinRoom(ctx, string(alias("nope")), nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")

	list, err := bob.GetAliases(ctx, lobby.RoomID)
	if err != nil || !slices.Equal(list.Aliases, []id.RoomAlias{alias("lobby2"), alias("lobby")}) {
		t.Fatalf("aliases %+v %v", list, err)
	}
	_, err = carol.GetAliases(ctx, lobby.RoomID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	// Deleting: bob (power 0) may not delete alice's alias, but his own; alice (100) may
	// delete hers and his.
	_, err = bob.DeleteAlias(ctx, alias("lobby2"))
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	for _, a := range []id.RoomAlias{alias("bobs"), alias("bobs2")} {
		if _, err = bob.CreateAlias(ctx, a, lobby.RoomID); err != nil {
			t.Fatalf("bob's alias: %v", err)
		}
	}
	if _, err = bob.DeleteAlias(ctx, alias("bobs")); err != nil {
		t.Fatalf("bob deletes his alias: %v", err)
	}
	if _, err = alice.DeleteAlias(ctx, alias("bobs2")); err != nil {
		t.Fatalf("alice (power 100) deletes bob's alias: %v", err)
	}
	if _, err = alice.DeleteAlias(ctx, alias("lobby2")); err != nil {
		t.Fatalf("alice deletes: %v", err)
	}
	_, err = alice.DeleteAlias(ctx, alias("lobby2"))
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = alice.DeleteAlias(ctx, "#lobby:other.example")
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.SendStateEvent(ctx, lobby.RoomID, event.StateCanonicalAlias, "", map[string]any{"alias": alias("lobby2")})
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_ALIAS")

	directory(t, ctx, alice, bob, carol, lobby.RoomID, alias("lobby"))
}

// directory pages the published rooms: the lobby (two members) and three of carol's.
func directory(t *testing.T, ctx context.Context, alice, bob, carol *mautrix.Client, lobby id.RoomID, lobbyAlias id.RoomAlias) {
	var vis struct {
		Visibility string `json:"visibility"`
	}
	visURL := alice.BuildClientURL("v3", "directory", "list", "room", lobby)
	if _, err := carol.MakeRequest(ctx, http.MethodGet, visURL, nil, &vis); err != nil || vis.Visibility != "public" {
		t.Fatalf("visibility %+v %v", vis, err)
	}
	_, err := bob.MakeRequest(ctx, http.MethodPut, visURL, map[string]string{"visibility": "private"}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = alice.MakeRequest(ctx, http.MethodPut, visURL, map[string]string{"visibility": "hidden"}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	want := []id.RoomID{lobby}
	for i := range 3 {
		r, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: fmt.Sprintf("Carol's room %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.RoomID)
	}
	if _, err = carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Unlisted"}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want[1:]) // equal member counts: by room ID
	var got []id.RoomID
	since := ""
	for page := 0; ; page++ {
		res, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 3, Since: since})
		if err != nil {
			t.Fatalf("publicRooms page %d: %v", page, err)
		}
		if res.TotalRoomCountEstimate != 4 || len(res.Chunk) > 3 || (page > 0) != (res.PrevBatch != "") {
			t.Fatalf("page %d: %+v", page, res)
		}
		for _, r := range res.Chunk {
			got = append(got, r.RoomID)
		}
		if since = res.NextBatch; since == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("directory %v, want %v", got, want)
	}
	var filtered mautrix.RespPublicRooms
	body := map[string]any{"filter": map[string]string{"generic_search_term": "say HI"}}
	if _, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "publicRooms"), body, &filtered); err != nil {
		t.Fatalf("filtered: %v", err)
	}
	if len(filtered.Chunk) != 1 {
		t.Fatalf("filtered %+v", filtered)
	}
	e := filtered.Chunk[0]
	if e.RoomID != lobby || e.Name != "Lobby" || e.Topic != "Say hi" || e.CanonicalAlias != lobbyAlias || e.NumJoinedMembers != 2 ||
		e.JoinRule != event.JoinRulePublic || e.WorldReadable || e.GuestCanJoin {
		t.Fatalf("lobby entry %+v", e)
	}
	if _, err = alice.MakeRequest(ctx, http.MethodPut, visURL, map[string]string{"visibility": "private"}, nil); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	res, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
	if err != nil || len(res.Chunk) != 3 || slices.ContainsFunc(res.Chunk, func(r *mautrix.PublicRoomInfo) bool { return r.RoomID == lobby }) {
		t.Fatalf("after unpublishing the lobby: %+v %v", res, err)
	}
	_, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Since: "nonsense"})
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
}
