package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// RoomConformance runs the client-server behaviours that sytest checks in the room groups
// (membership, state, redaction, aliases) as subtests against the server at baseURL.
func RoomConformance(t *testing.T, baseURL string) {
	t.Run("state after leaving", func(t *testing.T) { stateAfterLeaving(t, baseURL) })
	t.Run("reject invite to an empty room", func(t *testing.T) { rejectInviteToEmptyRoom(t, baseURL) })
	t.Run("state twice", func(t *testing.T) { stateTwice(t, baseURL) })
	t.Run("delete canonical alias", func(t *testing.T) { deleteCanonicalAlias(t, baseURL) })
	t.Run("redact in another room", func(t *testing.T) { redactInOtherRoom(t, baseURL) })
	t.Run("canonical JSON", func(t *testing.T) { canonicalJSON(t, baseURL) })
	t.Run("join with custom content", func(t *testing.T) { joinCustomContent(t, baseURL) })
	t.Run("predecessor directory", func(t *testing.T) { predecessorDirectory(t, baseURL) })
	t.Run("upgrade keeps direct", func(t *testing.T) { upgradeKeepsDirect(t, baseURL) })
}

// publicRoom is a public room created by c.
func publicRoom(t *testing.T, c *mautrix.Client) id.RoomID {
	t.Helper()
	created, err := c.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return created.RoomID
}

// stateAfterLeaving: a user who left reads the room's state as it was when they left,
// which includes their own leave (sytest "POST /rooms/:room_id/leave can leave a room").
func stateAfterLeaving(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "leave-alice"), Register(t, baseURL, "leave-bob")
	roomID := publicRoom(t, alice)
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	var m event.MemberEventContent
	if err := bob.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &m); err != nil {
		t.Fatalf("bob's member event after leaving: %v", err)
	}
	if m.Membership != event.MembershipLeave {
		t.Fatalf("bob reads his membership as %q after leaving", m.Membership)
	}
	// A banned user reads nothing of a room that is not world-readable.
	carol := Register(t, baseURL, "leave-carol")
	if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	err := carol.StateEvent(ctx, roomID, event.StateMember, carol.UserID.String(), &m)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
}

// rejectInviteToEmptyRoom: an invite to a room of this server can be rejected after its
// last member left (sytest "Invited user can reject invite for empty room" and "... local
// invite after originator leaves"); it was a 404 asking for a server to leave through.
func rejectInviteToEmptyRoom(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "reject-alice"), Register(t, baseURL, "reject-bob")
	roomID := publicRoom(t, alice)
	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("bob rejects the invite: %v", err)
	}
	var m event.MemberEventContent
	if err := bob.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &m); err != nil || m.Membership != event.MembershipLeave {
		t.Fatalf("bob's membership after rejecting: %+v %v", m, err)
	}
}

// stateTwice: the same state sent twice by the same user is one event (sytest "Setting
// state twice is idempotent"); other content, or the same content from someone else, is a
// new event.
func stateTwice(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "twice-alice"), Register(t, baseURL, "twice-bob")
	zero := 0
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", PowerLevelOverride: &event.PowerLevelsEventContent{StateDefaultPtr: &zero}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	put := func(c *mautrix.Client, content map[string]any) id.EventID {
		t.Helper()
		res, err := c.SendStateEvent(ctx, roomID, event.NewEventType("org.example.twice"), "", content)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}
	first := put(alice, map[string]any{"a": "b", "n": 1})
	if again := put(alice, map[string]any{"n": 1, "a": "b"}); again != first {
		t.Fatalf("the same state twice made two events: %s %s", first, again)
	}
	if other := put(alice, map[string]any{"a": "c"}); other == first {
		t.Fatal("new content did not make a new event")
	}
	byBob := put(bob, map[string]any{"a": "c"})
	if byAlice := put(alice, map[string]any{"a": "c"}); byAlice == byBob {
		t.Fatal("alice's state was answered with bob's event")
	}
}

// deleteCanonicalAlias: deleting an alias removes it from the room's canonical alias event,
// alias and alt_aliases (sytest "Can delete canonical alias").
func deleteCanonicalAlias(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "alias-alice")
	roomID := publicRoom(t, alice)
	main, alt, kept := id.RoomAlias("#main:conformance.test"), id.RoomAlias("#alt:conformance.test"), id.RoomAlias("#kept:conformance.test")
	for _, a := range []id.RoomAlias{main, alt, kept} {
		if _, err := alice.CreateAlias(ctx, a, roomID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.SendStateEvent(ctx, roomID, event.StateCanonicalAlias, "", map[string]any{"alias": main, "alt_aliases": []id.RoomAlias{alt, kept}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []id.RoomAlias{main, alt} {
		if _, err := alice.DeleteAlias(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var c map[string]any
	if err := alice.StateEvent(ctx, roomID, event.StateCanonicalAlias, "", &c); err != nil {
		t.Fatal(err)
	}
	if alias, ok := c["alias"]; ok {
		t.Fatalf("canonical alias still %v after its deletion", alias)
	}
	if alts, _ := c["alt_aliases"].([]any); len(alts) != 1 || alts[0] != string(kept) {
		t.Fatalf("alt_aliases %v, want only %s", c["alt_aliases"], kept)
	}
}

// redactInOtherRoom: a redaction naming an event of another room is refused with 400
// (sytest "PUT /redact disallows redaction of event in different room").
func redactInOtherRoom(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "redact-alice"), Register(t, baseURL, "redact-bob")
	aliceRoom, bobRoom := publicRoom(t, alice), publicRoom(t, bob)
	sent, err := alice.SendText(ctx, aliceRoom, "not yours")
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.RedactEvent(ctx, bobRoom, sent.EventID)
	WantErrCode(t, err, 400, "M_INVALID_PARAM")
	if _, err = bob.RedactEvent(ctx, bobRoom, "$unknown-event"); err != nil {
		t.Fatalf("redacting an event this server does not know: %v", err)
	}
}

// OpenID is the story of OpenID tokens: a user requests one, a third party exchanges it at
// the federation API for the user's ID; unknown, missing and other users' requests are
// refused (sytest 45openid.pl).
func OpenID(t *testing.T, baseURL, serverName string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "openid-alice"), Register(t, baseURL, "openid-bob")
	var tok struct {
		AccessToken      string `json:"access_token"`
		TokenType        string `json:"token_type"`
		MatrixServerName string `json:"matrix_server_name"`
		ExpiresIn        int64  `json:"expires_in"`
	}
	u := alice.BuildClientURL("v3", "user", alice.UserID, "openid", "request_token")
	if _, err := alice.MakeRequest(ctx, http.MethodPost, u, struct{}{}, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.MatrixServerName != serverName || tok.ExpiresIn <= 0 {
		t.Fatalf("token answer %+v", tok)
	}
	_, err := bob.MakeRequest(ctx, http.MethodPost, u, struct{}{}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	userinfo := func(query string) (int, map[string]string) {
		t.Helper()
		res, err := http.Get(baseURL + "/_matrix/federation/v1/openid/userinfo" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close() // nolint: errcheck // read-only
		out := map[string]string{}
		if err = json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, out
	}
	if status, body := userinfo("?access_token=" + url.QueryEscape(tok.AccessToken)); status != http.StatusOK || body["sub"] != alice.UserID.String() {
		t.Fatalf("userinfo: %d %v", status, body)
	}
	for _, q := range []string{"", "?access_token=an%2Finvalid%2Ftoken", "?access_token=" + url.QueryEscape(alice.AccessToken)} {
		if status, body := userinfo(q); status != http.StatusUnauthorized || body["errcode"] != "M_UNKNOWN_TOKEN" {
			t.Fatalf("userinfo%s: %d %v", q, status, body)
		}
	}
	// The OpenID token is no client access token.
	c := Client(t, baseURL)
	c.AccessToken = tok.AccessToken
	_, err = c.Whoami(ctx)
	WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// Ignore is the story of m.ignored_user_list (spec "Ignoring Users", sytest 49ignore.pl): once
// alice ignores bob, her /sync leaves out bob's messages (not his state events), his invites
// and his to-device messages, while carol's come through; after un-ignoring, bob's new
// messages come through again.
func Ignore(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "ignore-alice"), Register(t, baseURL, "ignore-bob"), Register(t, baseURL, "ignore-carol")
	roomID := publicRoom(t, carol)
	for _, c := range []*mautrix.Client{alice, bob} {
		if _, err := c.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	since := first.NextBatch
	// ignore sets the list and waits until alice's /sync has it: the syncapi learns of
	// account data through the log, after the PUT answered.
	ignore := func(users ...id.UserID) {
		t.Helper()
		list := map[id.UserID]struct{}{}
		for _, u := range users {
			list[u] = struct{}{}
		}
		if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": list}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ignored user list in /sync", func() bool {
			res, err := alice.SyncRequest(ctx, 1000, since, "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			since = res.NextBatch
			for _, e := range res.AccountData.Events {
				if e.Type.Type == "m.ignored_user_list" {
					got, _ := e.Content.Raw["ignored_users"].(map[string]any)
					return len(got) == len(users)
				}
			}
			return false
		})
	}
	ignore(bob.UserID)
	send := func(c *mautrix.Client, body string) {
		t.Helper()
		if _, err := c.SendText(ctx, roomID, body); err != nil {
			t.Fatal(err)
		}
	}
	send(bob, "from bob")
	if err = bob.SetDisplayName(ctx, "Bob Renamed"); err != nil {
		t.Fatal(err)
	}
	invited, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	toAlice := func(c *mautrix.Client, marker string) {
		t.Helper()
		_, err := c.SendToDevice(ctx, event.NewEventType("org.example.ignore"), &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			alice.UserID: {alice.DeviceID: {Raw: map[string]any{"marker": marker}}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	toAlice(bob, "bob")
	toAlice(carol, "carol")
	send(carol, "from carol")
	var bodies []string
	var memberOfBob, sawInvite bool
	var toDevice []string
	waitFor(t, "carol's message and to-device message", func() bool {
		res, err := alice.SyncRequest(ctx, 1000, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		since = res.NextBatch
		if _, ok := res.Rooms.Invite[invited.RoomID]; ok {
			sawInvite = true
		}
		for _, e := range res.ToDevice.Events {
			toDevice = append(toDevice, e.Content.Raw["marker"].(string))
		}
		if room := res.Rooms.Join[roomID]; room != nil {
			for _, e := range append(room.State.Events, room.Timeline.Events...) {
				switch {
				case e.Type == event.EventMessage:
					bodies = append(bodies, e.Content.Raw["body"].(string))
				case e.Type == event.StateMember && e.StateKey != nil && *e.StateKey == bob.UserID.String():
					memberOfBob = true
				}
			}
		}
		return slices.Contains(bodies, "from carol") && slices.Contains(toDevice, "carol")
	})
	if slices.Contains(bodies, "from bob") || sawInvite || slices.Contains(toDevice, "bob") {
		t.Fatalf("an ignored user came through: messages %v, invite %v, to-device %v", bodies, sawInvite, toDevice)
	}
	if !memberOfBob {
		t.Fatal("bob's member event (a state event) was left out")
	}
	ignore()
	send(bob, "bob again")
	waitFor(t, "bob's message after un-ignoring", func() bool {
		res, err := alice.SyncRequest(ctx, 1000, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		since = res.NextBatch
		if room := res.Rooms.Join[roomID]; room != nil {
			for _, e := range room.Timeline.Events {
				if e.Type == event.EventMessage && e.Content.Raw["body"] == "bob again" {
					return true
				}
			}
		}
		return false
	})
}

// canonicalJSON: event content outside canonical JSON (integers beyond ±(2^53-1), floats) is
// refused with 400 M_BAD_JSON in a v6 room, on PUT /send and on the legacy POST /send without
// a transaction ID that sytest's 80torture/20json.pl uses; that form makes a new event per
// request.
func canonicalJSON(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "json-alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "6"})
	if err != nil {
		t.Fatal(err)
	}
	post := alice.BuildClientURL("v3", "rooms", created.RoomID, "send", "org.example.json")
	put := alice.BuildClientURL("v3", "rooms", created.RoomID, "send", "org.example.json", "txn1")
	for _, body := range []string{`9007199254740992`, `-9007199254740992`, `1.1`} {
		content := json.RawMessage(`{"body":` + body + `}`)
		for method, u := range map[string]string{http.MethodPost: post, http.MethodPut: put} {
			_, err := alice.MakeRequest(ctx, method, u, content, nil)
			WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
		}
	}
	var a, b struct {
		EventID string `json:"event_id"`
	}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, post, map[string]any{"body": 9007199254740991}, &a); err != nil {
		t.Fatal(err)
	}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, post, map[string]any{"body": 9007199254740991}, &b); err != nil {
		t.Fatal(err)
	}
	if a.EventID == "" || a.EventID == b.EventID {
		t.Fatalf("two POSTs without a transaction ID: %q %q", a.EventID, b.EventID)
	}
}

// joinCustomContent: other keys of a /join body go into the member event's content (sytest
// "POST /join/:room_id can join a room with custom content"), but not the keys only the
// server may set.
func joinCustomContent(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "custom-alice"), Register(t, baseURL, "custom-bob")
	roomID := publicRoom(t, alice)
	body := map[string]any{"foo": "bar", "reason": "hello", "membership": "leave", "join_authorised_via_users_server": alice.UserID}
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "join", roomID), body, nil); err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := bob.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &c); err != nil {
		t.Fatal(err)
	}
	if c["foo"] != "bar" || c["reason"] != "hello" || c["membership"] != "join" || c["displayname"] != "custom-bob" {
		t.Fatalf("bob's member content %v", c)
	}
	if _, ok := c["join_authorised_via_users_server"]; ok {
		t.Fatalf("a client set join_authorised_via_users_server: %v", c)
	}
}

// predecessorDirectory: when a user of this server joins a room that replaced another
// (create event's predecessor, old room's tombstone naming it), this server's aliases and
// directory entry move from the old room to it, as on the other server of sytest's "/upgrade
// moves remote aliases to the new room"; a predecessor without that tombstone moves nothing.
func predecessorDirectory(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "pred-alice"), Register(t, baseURL, "pred-bob")
	create := func(content map[string]any) id.RoomID {
		t.Helper()
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", CreationContent: content})
		if err != nil {
			t.Fatal(err)
		}
		return created.RoomID
	}
	oldID := create(nil)
	alias := id.RoomAlias("#pred-old:conformance.test")
	if _, err := alice.CreateAlias(ctx, alias, oldID); err != nil {
		t.Fatal(err)
	}
	impostor := create(map[string]any{"predecessor": map[string]any{"room_id": oldID, "event_id": "$x"}})
	newID := create(map[string]any{"predecessor": map[string]any{"room_id": oldID, "event_id": "$x"}})
	listed := func() map[id.RoomID]bool {
		t.Helper()
		res, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		out := map[id.RoomID]bool{}
		for _, r := range res.Chunk {
			out[r.RoomID] = true
		}
		return out
	}
	resolve := func() id.RoomID {
		t.Helper()
		res, err := bob.ResolveAlias(ctx, alias)
		if err != nil {
			t.Fatal(err)
		}
		return res.RoomID
	}
	if _, err := bob.JoinRoom(ctx, impostor.String(), nil); err != nil {
		t.Fatal(err)
	}
	if got := resolve(); got != oldID || !listed()[oldID] {
		t.Fatalf("a room naming a predecessor without its tombstone took its alias (%s) or listing", got)
	}
	if _, err := alice.SendStateEvent(ctx, oldID, event.StateTombstone, "", map[string]any{"body": "moved", "replacement_room": newID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, newID.String(), nil); err != nil {
		t.Fatal(err)
	}
	if got := resolve(); got != newID {
		t.Fatalf("alias resolves to %s after joining the replacement %s", got, newID)
	}
	if l := listed(); !l[newID] || l[oldID] {
		t.Fatalf("directory after joining the replacement: %v", l)
	}
}

// upgradeKeepsDirect: an upgraded room joins every m.direct list that held the old room, for
// the upgrading user at once and for another member when they join the new room (sytest
// "/upgrade preserves direct room state").
func upgradeKeepsDirect(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "direct-alice"), Register(t, baseURL, "direct-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true, RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	oldID := created.RoomID
	if _, err = bob.JoinRoomByID(ctx, oldID); err != nil {
		t.Fatal(err)
	}
	other := id.RoomID("!other:conformance.test")
	setDirect := func(c *mautrix.Client, peer id.UserID) {
		t.Helper()
		if err := c.SetAccountData(ctx, "m.direct", map[id.UserID][]id.RoomID{peer: {oldID}, "@x:conformance.test": {other}}); err != nil {
			t.Fatal(err)
		}
	}
	setDirect(alice, bob.UserID)
	setDirect(bob, alice.UserID)
	var res struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "rooms", oldID, "upgrade"), map[string]any{"new_version": "11"}, &res); err != nil {
		t.Fatal(err)
	}
	direct := func(c *mautrix.Client, peer id.UserID) []id.RoomID {
		t.Helper()
		var d map[id.UserID][]id.RoomID
		if err := c.GetAccountData(ctx, "m.direct", &d); err != nil {
			t.Fatal(err)
		}
		if len(d["@x:conformance.test"]) != 1 {
			t.Fatalf("another direct list changed: %v", d)
		}
		return d[peer]
	}
	if got := direct(alice, bob.UserID); !slices.Equal(got, []id.RoomID{oldID, res.ReplacementRoom}) {
		t.Fatalf("alice's direct rooms with bob after upgrading: %v", got)
	}
	if _, err = alice.InviteUser(ctx, res.ReplacementRoom, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, res.ReplacementRoom.String(), nil); err != nil {
		t.Fatal(err)
	}
	if got := direct(bob, alice.UserID); !slices.Equal(got, []id.RoomID{oldID, res.ReplacementRoom}) {
		t.Fatalf("bob's direct rooms with alice after joining the new room: %v", got)
	}
}
