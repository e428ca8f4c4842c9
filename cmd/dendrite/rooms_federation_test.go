package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// fedTimeout bounds how long an event may take to reach another server, including a
// federationsender's backoff after a server came back.
const fedTimeout = 60 * time.Second

// syncFilter lets one incremental sync carry every event of these tests.
const syncFilter = `{"room":{"timeline":{"limit":100}}}`

// view is what one client has seen of one room through /sync.
type view struct {
	name   string
	c      *mautrix.Client
	room   id.RoomID
	since  string
	events []*event.Event
	invite *mautrix.SyncInvitedRoom
	state  []*event.Event
}

func newView(name string, c *mautrix.Client, room id.RoomID) *view {
	return &view{name: name, c: c, room: room}
}

// sync long-polls once and collects the room's timeline (joined or left) and invite.
func (v *view) sync(t *testing.T) {
	t.Helper()
	res, err := v.c.SyncRequest(context.Background(), 500, v.since, syncFilter, false, "")
	if err != nil {
		t.Fatalf("%s: sync: %v", v.name, err)
	}
	v.since = res.NextBatch
	if r := res.Rooms.Join[v.room]; r != nil {
		v.events = append(v.events, r.Timeline.Events...)
		v.state = append(v.state, r.State.Events...)
	}
	if r := res.Rooms.Leave[v.room]; r != nil {
		v.events = append(v.events, r.Timeline.Events...)
	}
	if r := res.Rooms.Invite[v.room]; r != nil {
		v.invite = r
	}
}

// until syncs until cond holds.
func (v *view) until(t *testing.T, what string, cond func(v *view) bool) {
	t.Helper()
	deadline := time.Now().Add(fedTimeout)
	for !cond(v) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not seen within %s; seen %v", v.name, what, fedTimeout, v.summary())
		}
		v.sync(t)
	}
}

func (v *view) summary() []string {
	var out []string
	for _, e := range v.events {
		s := e.Type.Type
		if e.StateKey != nil {
			s += "/" + *e.StateKey + "=" + fmt.Sprint(e.Content.Raw["membership"])
		}
		if b, ok := e.Content.Raw["body"]; ok {
			s += ":" + fmt.Sprint(b)
		}
		out = append(out, s)
	}
	return out
}

func (v *view) bodies() []string {
	var out []string
	for _, e := range v.events {
		if e.Type == event.EventMessage {
			out = append(out, fmt.Sprint(e.Content.Raw["body"]))
		}
	}
	return out
}

// has reports whether the timeline holds an event of type evType (about stateKey, with
// membership when given).
func (v *view) has(evType, stateKey, membership string) bool {
	for _, e := range v.events {
		if e.Type.Type == evType && (stateKey == "" || e.StateKey != nil && *e.StateKey == stateKey) &&
			(membership == "" || e.Content.Raw["membership"] == membership) {
			return true
		}
	}
	return false
}

func hasBody(body string) func(*view) bool {
	return func(v *view) bool { return slices.Contains(v.bodies(), body) }
}

// TestMonolithsFederateRooms: three monoliths (TLS on loopback, mautrix clients). A user
// of each joins one room of A (B by a remote join, C after a remote invite); messages and
// state changes cross in the same order everywhere; C is stopped while A and B talk and
// catches up when it returns, with nothing lost or repeated; kicks, bans and leaves cross;
// a banned user's join is refused (403) and unknown rooms are 404.
func TestMonolithsFederateRooms(t *testing.T) {
	federateRooms(t, startFedServer)
}

// TestMonolithsFederateRoomsPostgres is the same story with every server's databases (but
// the embedded log) in PostgreSQL, each server in its own database of one cluster.
func TestMonolithsFederateRoomsPostgres(t *testing.T) {
	federateRooms(t, func(t testing.TB) *fedServer { return startFedServerWith(t, test.PostgresDSN(t), "") })
}

func federateRooms(t *testing.T, start func(testing.TB) *fedServer) {
	a, b, c := start(t), start(t), start(t)
	ctx := context.Background()
	alice, bob, carol := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob"), e2e.Register(t, c.URL(), "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "three servers"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	va, vb, vc := newView("alice", alice, room), newView("bob", bob, room), newView("carol", carol, room)

	// Rooms nobody can be found for: 404.
	_, err = bob.JoinRoom(ctx, "!nope:"+string(a.name), nil)
	e2e.WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")

	// bob joins through A (a remote join) and sees the room's state and his join.
	if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(a.name)}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	vb.sync(t) // read-your-writes: the join is there at once
	if !vb.has("m.room.member", string(bob.UserID), "join") {
		t.Fatalf("bob's join not in his first sync: %v", vb.summary())
	}
	if !slices.ContainsFunc(vb.state, func(e *event.Event) bool {
		return e.Type == event.StateRoomName && e.Content.Raw["name"] == "three servers"
	}) {
		t.Fatalf("room state not in bob's sync: %d state events", len(vb.state))
	}
	va.until(t, "bob's join", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "join") })

	// alice invites carol of C: carol sees the invite with the room's name, then joins
	// with no hint (through the inviter's server).
	if _, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("remote invite: %v", err)
	}
	vc.until(t, "the invite", func(v *view) bool { return v.invite != nil })
	if !slices.ContainsFunc(vc.invite.State.Events, func(e *event.Event) bool {
		return e.Type == event.StateRoomName && e.Content.Raw["name"] == "three servers"
	}) {
		t.Fatalf("invite_state without the room name: %+v", vc.invite.State.Events)
	}
	if _, err = carol.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("join after a remote invite: %v", err)
	}
	for _, v := range []*view{va, vb, vc} {
		v.until(t, "carol's join", func(v *view) bool { return v.has("m.room.member", string(carol.UserID), "join") })
	}

	// Messages from each server, one at a time: every client sees them in the same order.
	var sent []string
	say := func(from *mautrix.Client, body string, views ...*view) {
		t.Helper()
		if _, err := from.SendText(ctx, room, body); err != nil {
			t.Fatalf("send %s: %v", body, err)
		}
		sent = append(sent, body)
		for _, v := range views {
			v.until(t, body, hasBody(body))
		}
	}
	for i := 0; i < 2; i++ {
		for _, u := range []*mautrix.Client{alice, bob, carol} {
			say(u, fmt.Sprintf("%s %d", u.UserID.Localpart(), i), va, vb, vc)
		}
	}
	// A state change crosses.
	if _, err = bob.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "from B"}); err == nil {
		t.Fatal("bob (power 0) changed the topic")
	}
	if _, err = alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "from A"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*view{vb, vc} {
		v.until(t, "the topic", func(v *view) bool { return v.has("m.room.topic", "", "") })
	}

	// C is down while A and B talk; when it comes back it catches up.
	c.stop()
	for i := 0; i < 3; i++ {
		say(alice, fmt.Sprintf("while C is down %d (A)", i), va, vb)
		say(bob, fmt.Sprintf("while C is down %d (B)", i), va, vb)
	}
	time.Sleep(3 * time.Second) // A's and B's senders fail a few times and back off
	c.start(t)
	carol.HomeserverURL = e2e.MustParse(t, c.URL())
	vc.until(t, "the messages sent while C was down", hasBody(sent[len(sent)-1]))
	say(carol, "C is back", va, vb, vc)
	for _, v := range []*view{va, vb, vc} {
		if got := v.bodies(); !slices.Equal(got, sent) {
			t.Fatalf("%s's timeline:\n%q\nwant\n%q", v.name, got, sent)
		}
	}

	// A kick, a rejoin, a ban, a refused join, a leave.
	if _, err = alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "out"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*view{vb, vc} {
		v.until(t, "bob's kick", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "leave") })
	}
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("rejoin after a kick: %v", err)
	}
	vc.until(t, "bob's rejoin", func(v *view) bool { return len(v.events) > 0 && v.events[len(v.events)-1].Type == event.StateMember })
	if _, err = alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "gone"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*view{vb, vc} {
		v.until(t, "bob's ban", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "ban") })
	}
	_, err = bob.JoinRoom(ctx, room.String(), nil)
	e2e.WantErrCode(t, err, 403, "M_FORBIDDEN")
	if _, err = carol.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	va.until(t, "carol's leave", func(v *view) bool { return v.has("m.room.member", string(carol.UserID), "leave") })
	say(alice, "after carol left", va)
	// carol's server is out of the room: carol's timeline ends with her leave.
	vc.sync(t)
	if slices.Contains(vc.bodies(), "after carol left") {
		t.Fatal("carol got a message sent after she left")
	}
}

// TestMonolithsRejectRemoteInvite: a user rejects an invite to a room of another server
// that their server is not in (make_leave, send_leave); the inviter's server sees the leave.
func TestMonolithsRejectRemoteInvite(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "private"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	va, vb := newView("alice", alice, room), newView("bob", bob, room)
	// Not invited: the invite-only room refuses bob (403).
	_, err = bob.JoinRoom(ctx, room.String(), nil)
	e2e.WantErrCode(t, err, 403, "M_FORBIDDEN")
	if _, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	vb.until(t, "the invite", func(v *view) bool { return v.invite != nil })
	if _, err = bob.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("reject: %v", err)
	}
	va.until(t, "bob's rejection", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "leave") })
	vb.until(t, "the invite gone", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "leave") })
	// Invited again, bob joins.
	if _, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("join after a second invite: %v", err)
	}
	va.until(t, "bob's join", func(v *view) bool { return v.has("m.room.member", string(bob.UserID), "join") })
}

// TestMonolithsFederateDirectory: a user of B joins A's room by A's alias (resolved with
// /query/directory, joined through the servers A named) and lists A's published rooms
// (POST /publicRooms through B's federationapi); unknown aliases of A are 404.
func TestMonolithsFederateDirectory(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	ctx := context.Background()
	alice, bob := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob")
	serverA := alice.UserID.Homeserver()
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "plaza", Name: "Plaza"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Second"}); err != nil {
		t.Fatal(err)
	}
	alias := id.RoomAlias("#plaza:" + serverA)
	resolved, err := bob.ResolveAlias(ctx, alias)
	if err != nil || resolved.RoomID != room.RoomID || !slices.Contains(resolved.Servers, serverA) {
		t.Fatalf("resolve A's alias on B: %+v %v", resolved, err)
	}
	_, err = bob.ResolveAlias(ctx, id.RoomAlias("#nope:"+serverA))
	e2e.WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = bob.JoinRoom(ctx, "#nope:"+serverA, nil)
	e2e.WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	joined, err := bob.JoinRoom(ctx, string(alias), nil)
	if err != nil || joined.RoomID != room.RoomID {
		t.Fatalf("join by A's alias: %+v %v", joined, err)
	}
	bv := newView("bob", bob, room.RoomID)
	bv.until(t, "bob's join", func(v *view) bool { return v.has(event.StateMember.Type, bob.UserID.String(), "join") })

	var got []id.RoomID
	since := ""
	for {
		res, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: serverA, Limit: 1, Since: since})
		if err != nil {
			t.Fatalf("A's public rooms through B: %v", err)
		}
		if res.TotalRoomCountEstimate != 2 || len(res.Chunk) != 1 {
			t.Fatalf("page %+v", res)
		}
		if res.Chunk[0].RoomID == room.RoomID && (res.Chunk[0].NumJoinedMembers != 2 || res.Chunk[0].CanonicalAlias != alias || res.Chunk[0].Name != "Plaza") {
			t.Fatalf("plaza entry %+v", res.Chunk[0])
		}
		got = append(got, res.Chunk[0].RoomID)
		if since = res.NextBatch; since == "" {
			break
		}
	}
	if len(got) != 2 || got[0] != room.RoomID {
		t.Fatalf("A's directory through B: %v (the plaza, with two members, first)", got)
	}
	var filtered mautrix.RespPublicRooms
	url := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": serverA})
	if _, err = bob.MakeRequest(ctx, http.MethodPost, url, map[string]any{"filter": map[string]string{"generic_search_term": "second"}}, &filtered); err != nil {
		t.Fatal(err)
	}
	if len(filtered.Chunk) != 1 || filtered.Chunk[0].Name != "Second" {
		t.Fatalf("filtered %+v", filtered)
	}
}
