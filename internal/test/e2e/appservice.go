package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Bridge is an application service written with mautrix-go's appservice package, the
// library real bridges are built on, listening on loopback. It owns @bridge_* and
// #bridge_* on e2e.test exclusively, receives ephemeral events, answers every
// "ping ..." message with "pong ..." through its ghost, and creates the rooms of aliases
// in its namespace when the homeserver asks for them. Down and Up take its listener away
// and back, as an outage of the service.
type Bridge struct {
	reg     *appservice.Registration
	addr    string
	handler http.Handler

	mu  sync.Mutex
	srv *http.Server
	// messages are the m.room.message events received, in order; ephemeral the types of
	// the ephemeral events.
	messages  []*event.Event
	ephemeral []event.Type
}

// BridgeGhost is the bridge's ghost user, which answers pings.
const BridgeGhost = id.UserID("@bridge_ghost:e2e.test")

// AddBridge registers a Bridge with the server whose config file is config (written by
// WriteConfig into dataDir): it writes the registration file and appends
// app_service_api to the config. The bridge starts listening at once; call it before the
// server starts.
func AddBridge(t *testing.T, config string) *Bridge {
	t.Helper()
	b := &Bridge{addr: FreeAddr(t), reg: appservice.CreateRegistration()}
	b.reg.ID, b.reg.SenderLocalpart, b.reg.URL = "bridge", "bridgebot", "http://"+b.addr
	b.reg.EphemeralEvents = true
	rateLimited := false
	b.reg.RateLimited = &rateLimited
	b.reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@bridge_.*:e2e\\.test", Exclusive: true}}
	b.reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#bridge_.*:e2e\\.test", Exclusive: true}}
	regPath := filepath.Join(filepath.Dir(config), "bridge-registration.yaml")
	if err := b.reg.Save(regPath); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A short backoff ceiling: the service is retried soon after it comes back.
	if _, err = fmt.Fprintf(f, "app_service_api:\n  config_files: [%q]\n  min_backoff: 100ms\n  max_backoff: 2s\n", regPath); err != nil {
		t.Fatal(err)
	}
	if err = f.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}

// start builds the mautrix application service against the homeserver at hsURL and
// serves it; it stops at the test's end.
func (b *Bridge) start(t *testing.T, hsURL string) *appservice.AppService {
	t.Helper()
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: b.reg, HomeserverDomain: "e2e.test", HomeserverURL: hsURL})
	if err != nil {
		t.Fatal(err)
	}
	as.QueryHandler = &bridgeQueries{t: t, as: as}
	ep := appservice.NewEventProcessor(as)
	ep.ExecMode = appservice.Sync // in transaction order
	ep.On(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		b.mu.Lock()
		b.messages = append(b.messages, evt)
		b.mu.Unlock()
		body := evt.Content.AsMessage().Body
		if evt.Sender != BridgeGhost && strings.HasPrefix(body, "ping ") {
			if _, err := as.Intent(BridgeGhost).SendText(ctx, evt.RoomID, "pong "+strings.TrimPrefix(body, "ping ")); err != nil {
				t.Errorf("the ghost could not answer: %v", err)
			}
		}
	})
	for _, typ := range []event.Type{event.EphemeralEventTyping, event.EphemeralEventReceipt} {
		ep.On(typ, func(_ context.Context, evt *event.Event) {
			b.mu.Lock()
			b.ephemeral = append(b.ephemeral, evt.Type)
			b.mu.Unlock()
		})
	}
	ep.Start(context.Background())
	t.Cleanup(ep.Stop)
	b.handler = as.Router
	b.Up(t)
	t.Cleanup(func() { b.Down(t) })
	return as
}

// bridgeQueries answers the homeserver's alias queries by creating the room as the bridge
// bot, and knows no users.
type bridgeQueries struct {
	t  *testing.T
	as *appservice.AppService
}

func (q *bridgeQueries) QueryAlias(alias id.RoomAlias) bool {
	localpart := strings.TrimPrefix(strings.TrimSuffix(alias.String(), ":e2e.test"), "#")
	if _, err := q.as.BotIntent().CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomAliasName: localpart}); err != nil {
		q.t.Errorf("the bridge could not create %s: %v", alias, err)
		return false
	}
	return true
}

func (q *bridgeQueries) QueryUser(id.UserID) bool { return false }

// Up starts serving (again) on the bridge's address.
func (b *Bridge) Up(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("the bridge cannot listen again: %v", err)
	}
	srv := &http.Server{Handler: b.handler, ReadHeaderTimeout: 10 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("bridge: %v", err)
		}
	}()
}

// Down closes the listener and every connection: requests to the bridge are refused.
func (b *Bridge) Down(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if err := srv.Close(); err != nil {
		t.Errorf("stop the bridge: %v", err)
	}
}

// bodies are the bodies of the received messages sent by sender, in order.
func (b *Bridge) bodies(sender id.UserID) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, evt := range b.messages {
		if evt.Sender == sender {
			out = append(out, evt.Content.AsMessage().Body)
		}
	}
	return out
}

// waitLong polls cond until it holds (deadline 2 minutes, for a backoff after an outage on a
// loaded machine).
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AppServiceBridge drives a Bridge (added with AddBridge before hs started): the bridge
// registers its ghost and joins it to a user's room; the user's message reaches the bridge
// in a transaction and the ghost's answer reaches the user; typing and receipts reach the
// bridge; an alias in its namespace is created through the homeserver's query; and the
// bridge is down for outage while the user sends 200 messages, after which it has
// received every one exactly once, in order.
func AppServiceBridge(t *testing.T, hs Homeserver, b *Bridge, outage time.Duration) {
	ctx := context.Background()
	as := b.start(t, hs.URL())
	ghost := as.Intent(BridgeGhost)
	if err := ghost.EnsureRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	alice := Register(t, hs.URL(), "bridgeuser")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{BridgeGhost}})
	if err != nil {
		t.Fatal(err)
	}
	if err = ghost.EnsureJoined(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}

	// A message reaches the bridge, which answers through its ghost.
	if _, err = alice.SendText(ctx, room.RoomID, "ping hello"); err != nil {
		t.Fatal(err)
	}
	var tl Timeline
	waitLong(t, "alice sees the ghost's answer", func() bool {
		tl.Sync(t, alice, room.RoomID)
		return slices.Contains(tl.Bodies(), "pong hello")
	})
	if got := b.bodies(alice.UserID); !slices.Equal(got, []string{"ping hello"}) {
		t.Fatalf("the bridge received %q", got)
	}

	// Typing and receipts (receive_ephemeral).
	if _, err = alice.UserTyping(ctx, room.RoomID, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err = alice.MarkRead(ctx, room.RoomID, tl.Events[len(tl.Events)-1].ID); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "typing and a receipt reach the bridge", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return slices.Contains(b.ephemeral, event.EphemeralEventTyping) && slices.Contains(b.ephemeral, event.EphemeralEventReceipt)
	})

	// An unknown alias in the namespace is asked of the bridge, which creates it.
	if res, err := alice.ResolveAlias(ctx, "#bridge_lobby:e2e.test"); err != nil || res.RoomID == "" {
		t.Fatalf("alias through the bridge: %+v %v", res, err)
	}

	// The outage: every message once, in order, after the bridge is back.
	const total, downAt = 200, 50
	var want []string
	var downSince time.Time
	for i := range total {
		if i == downAt {
			b.Down(t)
			downSince = time.Now()
		}
		body := fmt.Sprintf("message %d", i)
		want = append(want, body)
		if _, err = alice.SendText(ctx, room.RoomID, body); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(downSince.Add(outage))) // the outage's length, not an assertion
	b.Up(t)
	want = append([]string{"ping hello"}, want...)
	waitLong(t, "the bridge has every message", func() bool { return len(b.bodies(alice.UserID)) >= len(want) })
	// A marker after the messages: once it is in, no late duplicate is still on its way.
	if _, err = alice.SendText(ctx, room.RoomID, "marker"); err != nil {
		t.Fatal(err)
	}
	want = append(want, "marker")
	waitLong(t, "the bridge has the marker", func() bool { return slices.Contains(b.bodies(alice.UserID), "marker") })
	if got := b.bodies(alice.UserID); !slices.Equal(got, want) {
		t.Fatalf("the bridge received %d messages, want %d once each in order:\n%q", len(got), len(want), got)
	}
}
