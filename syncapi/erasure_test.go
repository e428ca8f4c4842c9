package syncapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/config"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/syncapi"
	"github.com/matrix-org/dendrite/syncapi/types"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/inthttp"
)

// startUserAPI runs a real userapi on db, served over loopback HTTP as in the polylith, and
// returns it and a client of it.
func startUserAPI(t *testing.T, db *sqlutil.DB) (uapi.ClientUserAPI, *inthttp.Client) {
	t.Helper()
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ua, err := userapi.New(context.Background(), userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Logger: logrus.NewEntry(logger)})
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter()
	inthttp.Register(router, ua.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	return ua.API(), inthttp.NewClient(hs.URL, ihttp.ClientOptions{})
}

// TestErasedSenderRedactedForLaterJoiners: once alice's account is deactivated with erase,
// her message reaches carol, who joined after it was sent, redacted (content {}) through
// /sync, /messages, /context and /event; bob, joined when it was sent, still gets it whole.
// Dave, deactivated without erase, stays whole for everyone. The sync API asks the userapi
// over internal HTTP, as in the polylith (sytest "Only original members of the room can see
// messages from erased users").
func TestErasedSenderRedactedForLaterJoiners(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		users, remote := startUserAPI(t, db)
		h := startWith(t, db, func(d *syncapi.Deps) { d.Erasure = remote })
		alice, bob, carol, dave := h.user("alice"), h.user("bob"), h.user("carol"), h.user("dave")
		for _, lp := range []string{"alice", "dave"} {
			if _, err := users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: lp, Password: "pw", AccountType: uapi.AccountTypeUser}); err != nil {
				t.Fatal(err)
			}
		}
		room := h.newRoom(alice)
		h.member(room, bob, bob, "join")
		h.member(room, dave, dave, "join")
		msg := h.send(room, alice, "body1")
		kept := h.send(room, dave, "body2")
		h.member(room, carol, carol, "join")
		h.waitConsumed()

		roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
		// bodies returns the body of an event as each endpoint gives it to token ("" for
		// content {}).
		bodies := func(token, eventID string) map[string]string {
			t.Helper()
			out := map[string]string{}
			body := func(where string, evs []clientevent.Event) {
				for _, e := range evs {
					if e.EventID != eventID {
						continue
					}
					var c map[string]any
					if err := json.Unmarshal(e.Content, &c); err != nil {
						t.Fatalf("%s: content %s: %v", where, e.Content, err)
					}
					b, _ := c["body"].(string) // absent when redacted
					if b == "" && len(c) != 0 {
						t.Fatalf("%s: content %s neither whole nor redacted", where, e.Content)
					}
					out[where] = b
				}
			}
			res := h.sync(token)
			if jr := res.Rooms.Join[room]; jr != nil {
				body("sync", jr.Timeline.Events)
			}
			msgs, code := h.messages(token, room, url.Values{"dir": {"b"}, "limit": {"50"}})
			if code != http.StatusOK {
				t.Fatalf("messages: %d", code)
			}
			body("messages", msgs.Chunk)
			var cr types.ContextResponse
			if code := h.get(token, roomPath+"/context/"+url.PathEscape(eventID), nil, &cr); code != http.StatusOK {
				t.Fatalf("context: %d", code)
			}
			body("context", []clientevent.Event{cr.Event})
			var ev clientevent.Event
			if code := h.get(token, roomPath+"/event/"+url.PathEscape(eventID), nil, &ev); code != http.StatusOK {
				t.Fatalf("event: %d", code)
			}
			body("event", []clientevent.Event{ev})
			if len(out) != 4 {
				t.Fatalf("event %s not in every answer to %s: %v", eventID, token, out)
			}
			return out
		}
		want := func(token, eventID, body string) {
			t.Helper()
			for where, got := range bodies(token, eventID) {
				if got != body {
					t.Errorf("%s %s for %s: body %q, want %q", where, eventID, token, got, body)
				}
			}
		}
		want(carol, msg, "body1")
		for _, req := range []uapi.PerformAccountDeactivationRequest{{Localpart: "alice", Erase: true}, {Localpart: "dave"}} {
			if _, err := users.PerformAccountDeactivation(ctx, &req); err != nil {
				t.Fatal(err)
			}
		}
		want(bob, msg, "body1")
		want(carol, msg, "")
		want(carol, kept, "body2")
	})
}
