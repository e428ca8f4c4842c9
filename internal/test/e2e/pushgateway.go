package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// pushed is one notification a test push gateway accepted.
type pushed struct {
	EventID string          `json:"event_id"`
	RoomID  string          `json:"room_id"`
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
	Prio    string          `json:"prio"`
	Counts  struct {
		Unread int `json:"unread"`
	} `json:"counts"`
	Devices []struct {
		AppID   string                     `json:"app_id"`
		PushKey string                     `json:"pushkey"`
		Data    map[string]json.RawMessage `json:"data"`
		Tweaks  map[string]json.RawMessage `json:"tweaks"`
	} `json:"devices"`
}

// gateway is a push gateway over TLS on loopback (the server accepts its certificate
// through push_server.disable_tls_validation). While down it answers 503 and keeps
// nothing.
type gateway struct {
	srv      *httptest.Server
	down     atomic.Bool
	failures atomic.Int64
	mu       sync.Mutex
	got      []pushed
	// reject is a push key the gateway reports as rejected.
	reject string
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.down.Load() || r.URL.Path != "/_matrix/push/v1/notify" {
			g.failures.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var body struct {
			Notification pushed `json:"notification"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, body.Notification)
		reject := g.reject
		g.mu.Unlock()
		rejected := []string{}
		for _, d := range body.Notification.Devices {
			if d.PushKey == reject {
				rejected = append(rejected, reject)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected}) // the test reads what it recorded
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// find returns the notifications pushed to pushKey that match.
func (g *gateway) find(pushKey string, match func(p *pushed) bool) []pushed {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []pushed
	for i := range g.got {
		p := &g.got[i]
		if len(p.Devices) == 1 && p.Devices[0].PushKey == pushKey && match(p) {
			out = append(out, *p)
		}
	}
	return out
}

// waitPush waits until pushKey got a notification that matches and returns it.
func (g *gateway) waitPush(t *testing.T, what, pushKey string, match func(p *pushed) bool) pushed {
	t.Helper()
	var got []pushed
	waitFor(t, what, func() bool {
		got = g.find(pushKey, match)
		return len(got) > 0
	})
	return got[0]
}

func forEvent(eventID id.EventID) func(p *pushed) bool {
	return func(p *pushed) bool { return p.EventID == eventID.String() }
}

func setPusher(t *testing.T, c *mautrix.Client, pushKey, url, format string) {
	t.Helper()
	data := map[string]any{"url": url}
	if format != "" {
		data["format"] = format
	}
	body := map[string]any{"pushkey": pushKey, "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
		"device_display_name": "Phone", "lang": "en", "data": data}
	if _, err := c.MakeRequest(context.Background(), "POST", c.BuildClientURL("v3", "pushers", "set"), body, nil); err != nil {
		t.Fatalf("set pusher %s: %v", pushKey, err)
	}
}

func pushKeys(t *testing.T, c *mautrix.Client) map[string]bool {
	t.Helper()
	var res struct {
		Pushers []struct {
			PushKey string `json:"pushkey"`
		} `json:"pushers"`
	}
	if _, err := c.MakeRequest(context.Background(), "GET", c.BuildClientURL("v3", "pushers"), nil, &res); err != nil {
		t.Fatalf("GET /pushers: %v", err)
	}
	out := map[string]bool{}
	for _, p := range res.Pushers {
		out[p.PushKey] = true
	}
	return out
}

// PushDelivery drives delivery to a push gateway: the full and event_id_only formats,
// prio and counts for a one-to-one message, a plain message and a highlight; a disabled
// rule pushes nothing; reading sends a badge update; a pusher of a logged-out device and
// a rejected push key are removed; and a restart of the server while the gateway is down
// delivers the notification once, after both are back. The server must run with
// push_server.disable_tls_validation.
func PushDelivery(t *testing.T, hs Homeserver) {
	ctx := context.Background()
	gw := newGateway(t)
	notifyURL := gw.srv.URL + "/_matrix/push/v1/notify"
	alice, bob := Register(t, hs.URL(), "pushd"), Register(t, hs.URL(), "pushe")
	setPusher(t, alice, "full-key", notifyURL, "")
	setPusher(t, alice, "id-key", notifyURL, "event_id_only")
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = alice.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	send := func(body string, mention bool) id.EventID {
		t.Helper()
		content := map[string]any{"msgtype": "m.text", "body": body}
		if mention {
			content["m.mentions"] = map[string]any{"user_ids": []string{alice.UserID.String()}}
		}
		res, err := bob.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}

	dm := send("hello", false)
	full := gw.waitPush(t, "the one-to-one message, full format", "full-key", forEvent(dm))
	if full.Prio != "high" || full.Counts.Unread != 1 || full.Type != "m.room.message" || full.Sender != bob.UserID.String() ||
		len(full.Content) == 0 || string(full.Devices[0].Tweaks["sound"]) != `"default"` || full.Devices[0].Data["url"] != nil {
		t.Fatalf("one-to-one push: %+v", full)
	}
	short := gw.waitPush(t, "the one-to-one message, event_id_only", "id-key", forEvent(dm))
	if short.Prio != "high" || short.Counts.Unread != 1 || short.Type != "" || short.Sender != "" || len(short.Content) != 0 ||
		short.RoomID != room.RoomID.String() {
		t.Fatalf("event_id_only push: %+v", short)
	}

	carol := Register(t, hs.URL(), "pushf")
	if _, err = carol.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	plain := send("plain", false)
	if p := gw.waitPush(t, "a plain message in a group", "full-key", forEvent(plain)); p.Prio != "low" || p.Counts.Unread != 2 {
		t.Fatalf("plain message push: %+v", p)
	}
	mention := send("alice?", true)
	if p := gw.waitPush(t, "a mention", "full-key", forEvent(mention)); p.Prio != "high" || p.Counts.Unread != 3 ||
		string(p.Devices[0].Tweaks["highlight"]) != "true" {
		t.Fatalf("mention push: %+v", p)
	}

	off := map[string]any{"enabled": false}
	if _, err = alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "pushrules", "global", "underride", ".m.rule.message", "enabled"), off, nil); err != nil {
		t.Fatal(err)
	}
	quiet := send("quiet", false)
	marker := send("marker", true)
	gw.waitPush(t, "the marker after a message no rule notifies", "full-key", forEvent(marker))
	if got := gw.find("full-key", forEvent(quiet)); len(got) != 0 {
		t.Fatalf("a message of a disabled rule was pushed: %+v", got)
	}

	if err = alice.SendReceipt(ctx, room.RoomID, marker, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	badge := gw.waitPush(t, "a badge update after reading", "id-key", func(p *pushed) bool { return p.EventID == "" })
	if badge.Counts.Unread != 0 || badge.RoomID != "" {
		t.Fatalf("badge update: %+v", badge)
	}

	gw.down.Store(true)
	whileDown := send("while the gateway is down", true)
	waitFor(t, "a failed push", func() bool { return gw.failures.Load() > 0 })
	hs.Restart(t)
	for _, c := range []*mautrix.Client{alice, bob, carol} {
		c.HomeserverURL = MustParse(t, hs.URL())
	}
	gw.down.Store(false)
	gw.waitPush(t, "the push queued while the gateway was down", "full-key", forEvent(whileDown))
	after := send("after the restart", true)
	gw.waitPush(t, "the push after the restart", "full-key", forEvent(after))
	gw.waitPush(t, "the push after the restart, event_id_only", "id-key", forEvent(after))
	for _, key := range []string{"full-key", "id-key"} {
		if got := gw.find(key, forEvent(whileDown)); len(got) != 1 {
			t.Fatalf("%s got the push queued while the gateway was down %d times", key, len(got))
		}
	}

	gw.mu.Lock()
	gw.reject = "id-key"
	gw.mu.Unlock()
	rejected := send("rejected", true)
	gw.waitPush(t, "the push whose key is rejected", "id-key", forEvent(rejected))
	waitFor(t, "the rejected pusher removed", func() bool { return !pushKeys(t, alice)["id-key"] })

	phone := Client(t, hs.URL())
	login, err := phone.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: alice.UserID.Localpart()}, Password: "password-pushd"})
	if err != nil {
		t.Fatal(err)
	}
	phone.UserID, phone.AccessToken = login.UserID, login.AccessToken
	setPusher(t, phone, "phone-key", notifyURL, "")
	if !pushKeys(t, alice)["phone-key"] {
		t.Fatal("the second device's pusher is not listed")
	}
	if _, err = phone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the logged-out device's pusher removed", func() bool { return !pushKeys(t, alice)["phone-key"] })
	if !pushKeys(t, alice)["full-key"] {
		t.Fatalf("the first device's pusher went too: %v", pushKeys(t, alice))
	}
}
