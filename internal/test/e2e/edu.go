package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Poller follows one client's sync stream.
type Poller struct {
	C     *mautrix.Client
	Since string
}

// Until long-polls until cond holds for a response, failing after timeout. Every response
// is passed to cond, in order.
func (p *Poller) Until(t *testing.T, timeout time.Duration, what string, cond func(*mautrix.RespSync) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		res, err := p.C.SyncRequest(context.Background(), 500, p.Since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		p.Since = res.NextBatch
		if cond(res) {
			return
		}
	}
	t.Fatalf("%s: not seen within %s", what, timeout)
}

// Drain syncs once without waiting and passes the response to fn.
func (p *Poller) Drain(t *testing.T, fn func(*mautrix.RespSync)) {
	t.Helper()
	res, err := p.C.SyncRequest(context.Background(), 0, p.Since, "", false, "")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	p.Since = res.NextBatch
	fn(res)
}

// typingIn returns the user IDs of the room's m.typing event in res, and whether there was one.
func typingIn(res *mautrix.RespSync, roomID id.RoomID) ([]string, bool) {
	room := res.Rooms.Join[roomID]
	if room == nil {
		return nil, false
	}
	for _, e := range room.Ephemeral.Events {
		if e.Type.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			_ = json.Unmarshal(e.Content.VeryRaw, &c) // a malformed event reads as nobody typing
			return c.UserIDs, true
		}
	}
	return nil, false
}

// receiptsIn lists (event ID, receipt type, user) of the room's m.receipt events in res.
func receiptsIn(res *mautrix.RespSync, roomID id.RoomID) [][3]string {
	room := res.Rooms.Join[roomID]
	if room == nil {
		return nil
	}
	var out [][3]string
	for _, e := range room.Ephemeral.Events {
		if e.Type.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]json.RawMessage
		_ = json.Unmarshal(e.Content.VeryRaw, &c) // a malformed event reads as no receipts
		for eventID, byType := range c {
			for rt, byUser := range byType {
				for u := range byUser {
					out = append(out, [3]string{eventID, rt, u})
				}
			}
		}
	}
	return out
}

func presenceOf(res *mautrix.RespSync, userID id.UserID) map[string]any {
	var last map[string]any
	for _, e := range res.Presence.Events {
		if e.Sender == userID {
			last = e.Content.Raw
		}
	}
	return last
}

// EDUs drives typing, receipts, presence and send-to-device between two users with a real
// Matrix client, with a restart between a to-device send and its delivery, and checks the
// spec's errors for bad ephemeral input.
func EDUs(t *testing.T, hs Homeserver) {
	ctx := context.Background()
	alice, bob, carol := Register(t, hs.URL(), "edu-alice"), Register(t, hs.URL(), "edu-bob"), Register(t, hs.URL(), "edu-carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	bp, ap, cp := &Poller{C: bob}, &Poller{C: alice}, &Poller{C: carol}
	bp.Drain(t, func(*mautrix.RespSync) {})
	ap.Drain(t, func(*mautrix.RespSync) {})
	cp.Drain(t, func(*mautrix.RespSync) {})

	// Typing appears for bob, then expires by itself. Its first timeout outlasts bob's wait,
	// so that bob sees it start however loaded the machine (the eduserver and syncapi are
	// other processes in the polylith: with 1.5 s, CI once saw typing start and end between
	// two of bob's syncs). A second, short typing then replaces it and expires (or is
	// expired already when the eduserver applies it, which ends the typing as well).
	if _, err = alice.UserTyping(ctx, roomID, true, 2*time.Minute); err != nil {
		t.Fatalf("typing: %v", err)
	}
	bp.Until(t, time.Minute, "alice typing", func(res *mautrix.RespSync) bool {
		users, ok := typingIn(res, roomID)
		return ok && len(users) == 1 && users[0] == alice.UserID.String()
	})
	if _, err = alice.UserTyping(ctx, roomID, true, time.Second); err != nil {
		t.Fatalf("typing: %v", err)
	}
	bp.Until(t, time.Minute, "alice's typing expiring", func(res *mautrix.RespSync) bool {
		users, ok := typingIn(res, roomID)
		return ok && len(users) == 0
	})

	// Unread counts rise with alice's messages and drop when bob's receipt moves; receipts
	// never move back.
	var msgs []id.EventID
	for _, body := range []string{"m1", "m2", "m3"} {
		res, err := alice.SendText(ctx, roomID, body)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		msgs = append(msgs, res.EventID)
	}
	bp.Until(t, 30*time.Second, "3 unread notifications", func(res *mautrix.RespSync) bool {
		room := res.Rooms.Join[roomID]
		return room != nil && room.UnreadNotifications != nil && room.UnreadNotifications.NotificationCount == 3
	})
	if err = bob.SendReceipt(ctx, roomID, msgs[1], event.ReceiptTypeRead, nil); err != nil {
		t.Fatalf("receipt: %v", err)
	}
	bp.Until(t, 30*time.Second, "1 unread notification after the receipt", func(res *mautrix.RespSync) bool {
		room := res.Rooms.Join[roomID]
		return room != nil && room.UnreadNotifications != nil && room.UnreadNotifications.NotificationCount == 1
	})
	// A notice does not count; a message mentioning bob counts and highlights.
	if _, err = alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "bot says"}); err != nil {
		t.Fatalf("notice: %v", err)
	}
	if _, err = alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hey bob",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID.String()}}}); err != nil {
		t.Fatalf("mention: %v", err)
	}
	bp.Until(t, 30*time.Second, "2 unread notifications, 1 highlight", func(res *mautrix.RespSync) bool {
		room := res.Rooms.Join[roomID]
		return room != nil && room.UnreadNotifications != nil && room.UnreadNotifications.NotificationCount == 2 &&
			room.UnreadNotifications.HighlightCount == 1
	})
	if err = bob.SendReceipt(ctx, roomID, msgs[0], event.ReceiptTypeRead, nil); err != nil {
		t.Fatalf("backward receipt: %v", err)
	}
	if err = bob.SendReceipt(ctx, roomID, msgs[2], event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatalf("private receipt: %v", err)
	}
	if err = bob.SendReceipt(ctx, roomID, msgs[2], event.ReceiptTypeRead, map[string]string{"thread_id": "main"}); err != nil {
		t.Fatalf("threaded receipt: %v", err)
	}
	var seen [][3]string
	ap.Until(t, 10*time.Second, "bob's receipt on m3", func(res *mautrix.RespSync) bool {
		for _, r := range receiptsIn(res, roomID) {
			if r[2] == bob.UserID.String() {
				seen = append(seen, r)
			}
		}
		return slices.Contains(seen, [3]string{msgs[2].String(), "m.read", bob.UserID.String()})
	})
	for _, r := range seen {
		if r[0] == msgs[0].String() || r[1] == "m.read.private" {
			t.Fatalf("alice saw bob's receipt %v: receipts must not move back, private ones must not leave bob", r)
		}
	}
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", roomID, "receipt", "m.read", "$nope:localhost"), struct{}{}, nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", roomID, "receipt", "m.unknown", msgs[0]), struct{}{}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "rooms", roomID, "receipt", "m.read", msgs[0]), map[string]string{"thread_id": ""}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "rooms", roomID, "typing", bob.UserID), map[string]any{"typing": true}, nil)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = carol.UserTyping(ctx, roomID, true, time.Second)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	// Presence reaches the room-mate, not the stranger.
	if err = alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
		t.Fatalf("set presence: %v", err)
	}
	bp.Until(t, 10*time.Second, "alice's presence", func(res *mautrix.RespSync) bool {
		p := presenceOf(res, alice.UserID)
		return p != nil && p["presence"] == "unavailable" && p["status_msg"] == "lunch"
	})
	cp.Drain(t, func(res *mautrix.RespSync) {
		if presenceOf(res, alice.UserID) != nil {
			t.Fatal("carol, who shares no room with alice, saw her presence")
		}
	})
	// The presenceserver announces a change before it commits it (so that a crash between
	// the two announces it again rather than never), so its own answer to GET may trail
	// bob's sync by that moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err := bob.GetPresence(ctx, alice.UserID)
		if err == nil && got.Presence == event.PresenceUnavailable && got.StatusMsg == "lunch" {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("bob reads alice's presence: %+v %v", got, err)
		}
	}
	_, err = carol.GetPresence(ctx, alice.UserID)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	err = alice.SetPresence(ctx, mautrix.ReqPresence{Presence: "sleeping"})
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")

	// Send-to-device: a retried transaction arrives once; a message sent before a restart
	// arrives after it, once.
	toBob := func(txnID, body string) error {
		req := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"body": body}}}}
		_, err := alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.test", txnID), req, nil)
		return err
	}
	for range 2 {
		if err = toBob("txn1", "first"); err != nil {
			t.Fatalf("sendToDevice: %v", err)
		}
	}
	var bodies []string
	collect := func(res *mautrix.RespSync) {
		for _, e := range res.ToDevice.Events {
			if e.Sender == alice.UserID && e.Type.Type == "m.test" {
				bodies = append(bodies, e.Content.Raw["body"].(string))
			}
		}
	}
	bp.Until(t, 10*time.Second, "the first to-device message", func(res *mautrix.RespSync) bool {
		collect(res)
		return len(bodies) > 0
	})
	if err = toBob("txn2", "second"); err != nil {
		t.Fatalf("sendToDevice: %v", err)
	}
	hs.Restart(t)
	for _, c := range []*mautrix.Client{alice, bob, carol} {
		c.HomeserverURL = MustParse(t, hs.URL())
	}
	bp.Until(t, 20*time.Second, "the second to-device message", func(res *mautrix.RespSync) bool {
		collect(res)
		return len(bodies) > 1
	})
	bp.Drain(t, collect)
	if len(bodies) != 2 || bodies[0] != "first" || bodies[1] != "second" {
		t.Fatalf("bob's to-device messages: %q, want each exactly once", bodies)
	}
	bad := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): "not an object"}}}
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.test", "txn3"), bad, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
	_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.test", "txn4"), map[string]any{"messages": []int{1}}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_BAD_JSON")
}

// EDUsOverFederation drives typing, receipts, presence and send-to-device between a user of
// server A (at urlA, named nameA) and a user of server B who joins A's room over federation.
func EDUsOverFederation(t *testing.T, urlA, nameA, urlB string) {
	ctx := context.Background()
	const wait = 60 * time.Second // includes a federation sender's backoff
	alice, bob := Register(t, urlA, "fed-alice"), Register(t, urlB, "fed-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	if _, err = bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	ap, bp := &Poller{C: alice}, &Poller{C: bob}
	ap.Until(t, wait, "bob's join at A", func(res *mautrix.RespSync) bool {
		room := res.Rooms.Join[roomID]
		return room != nil && slices.ContainsFunc(room.Timeline.Events, func(e *event.Event) bool {
			return e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String()
		})
	})
	bp.Drain(t, func(*mautrix.RespSync) {})

	// Typing crosses both ways, and its end too. Each typing outlasts the wait for it
	// (which includes a sender's backoff): one that ended first could reach the other
	// server together with its end, and never show in a sync.
	if _, err = alice.UserTyping(ctx, roomID, true, 2*time.Minute); err != nil {
		t.Fatalf("typing: %v", err)
	}
	bp.Until(t, wait, "alice typing at B", func(res *mautrix.RespSync) bool {
		users, ok := typingIn(res, roomID)
		return ok && slices.Contains(users, alice.UserID.String())
	})
	if _, err = alice.UserTyping(ctx, roomID, false, 0); err != nil {
		t.Fatalf("typing stop: %v", err)
	}
	bp.Until(t, wait, "alice's typing ending at B", func(res *mautrix.RespSync) bool {
		users, ok := typingIn(res, roomID)
		return ok && !slices.Contains(users, alice.UserID.String())
	})
	if _, err = bob.UserTyping(ctx, roomID, true, 2*time.Minute); err != nil {
		t.Fatalf("typing: %v", err)
	}
	ap.Until(t, wait, "bob typing at A", func(res *mautrix.RespSync) bool {
		users, ok := typingIn(res, roomID)
		return ok && slices.Contains(users, bob.UserID.String())
	})

	// A public receipt crosses; a private one does not.
	sent, err := alice.SendText(ctx, roomID, "read me")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	bp.Until(t, wait, "the message at B", func(res *mautrix.RespSync) bool {
		room := res.Rooms.Join[roomID]
		return room != nil && slices.ContainsFunc(room.Timeline.Events, func(e *event.Event) bool { return e.ID == sent.EventID })
	})
	if err = bob.SendReceipt(ctx, roomID, sent.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatalf("private receipt: %v", err)
	}
	if err = bob.SendReceipt(ctx, roomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatalf("receipt: %v", err)
	}
	var seen [][3]string
	ap.Until(t, wait, "bob's receipt at A", func(res *mautrix.RespSync) bool {
		seen = append(seen, receiptsIn(res, roomID)...)
		return slices.Contains(seen, [3]string{sent.EventID.String(), "m.read", bob.UserID.String()})
	})
	if slices.ContainsFunc(seen, func(r [3]string) bool { return r[1] == "m.read.private" }) {
		t.Fatalf("a private receipt crossed to A: %v", seen)
	}

	// Presence crosses to the room-mate's server.
	if err = bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "away"}); err != nil {
		t.Fatalf("set presence: %v", err)
	}
	ap.Until(t, wait, "bob's presence at A", func(res *mautrix.RespSync) bool {
		p := presenceOf(res, bob.UserID)
		return p != nil && p["presence"] == "unavailable" && p["status_msg"] == "away"
	})

	// A to-device message to a user of the other server arrives once.
	req := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]string{"body": "over there"}}}}
	for range 2 {
		if _, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.test", "fed-txn"), req, nil); err != nil {
			t.Fatalf("sendToDevice: %v", err)
		}
	}
	// A marker sent after it travels the same path (alice's input, bob's outputs, the queue to
	// B, B's inputs and bob's to-device stream). The wait ends once bob has both the message
	// and the marker: one CI run saw the marker first (the order across the path is not yet
	// guaranteed; noted for the next session), so the marker alone does not end it.
	marker := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]string{"body": "marker"}}}}
	if _, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "sendToDevice", "m.test.marker", "fed-marker"), marker, nil); err != nil {
		t.Fatalf("sendToDevice: %v", err)
	}
	var got int
	markerSeen := false
	bp.Until(t, wait, "the to-device messages at B", func(res *mautrix.RespSync) bool {
		for _, e := range res.ToDevice.Events {
			if e.Sender == alice.UserID && e.Type.Type == "m.test" {
				got++
			}
			markerSeen = markerSeen || (e.Sender == alice.UserID && e.Type.Type == "m.test.marker")
		}
		return markerSeen && got > 0
	})
	if got != 1 {
		t.Fatalf("bob got the to-device message %d times, want once", got)
	}
}

// PresenceOnFederatedJoin: a user of server A (at urlA, named nameA) and a user of server B
// who poll GET /events are online; once B's user joins A's user's new private room, each
// side's initial /sync (with set_presence=offline, which changes nothing) shows both users
// online, without either changing presence: the servers send their users' presence to a
// server that newly shares a room with them (sytest's "New federated private chats get full
// presence information (SYN-115)").
func PresenceOnFederatedJoin(t *testing.T, urlA, nameA, urlB string) {
	ctx := context.Background()
	const wait = 60 * time.Second // includes a federation sender's backoff
	alice, bob := Register(t, urlA, "syn115-alice"), Register(t, urlB, "syn115-bob")
	for _, c := range []*mautrix.Client{alice, bob} {
		if _, err := c.MakeRequest(ctx, http.MethodGet, c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "events"},
			map[string]string{"timeout": "0"}), nil, nil); err != nil {
			t.Fatalf("GET /events: %v", err)
		}
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	if _, err = bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	deadline := time.Now().Add(wait)
	for _, c := range []*mautrix.Client{alice, bob} {
		for {
			res, err := c.FullSyncRequest(ctx, mautrix.ReqSync{SetPresence: event.PresenceOffline})
			if err != nil {
				t.Fatalf("initial sync of %s: %v", c.UserID, err)
			}
			pa, pb := presenceOf(res, alice.UserID), presenceOf(res, bob.UserID)
			if pa != nil && pa["presence"] == "online" && pb != nil && pb["presence"] == "online" {
				if _, ok := pb["last_active_ago"]; !ok {
					t.Fatalf("%s sees %s's presence without last_active_ago: %v", c.UserID, bob.UserID, pb)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's initial sync shows presence %v of %s and %v of %s, want both online", c.UserID, pa, alice.UserID, pb, bob.UserID)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// ReceiptsIn lists the receipts of the room's m.receipt events in res as (event ID,
// receipt type, user ID).
func ReceiptsIn(res *mautrix.RespSync, roomID id.RoomID) [][3]string {
	return receiptsIn(res, roomID)
}
