package setup

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestClientMistakesAndLimits runs a monolith on SQLite and then PostgreSQL and sends it
// requests that a client got wrong (clientMistakes) and limits at the top of the integer
// range (hugeLimits).
func TestClientMistakesAndLimits(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "mistakes.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			base := runMonolith(t, cfg)
			t.Run("mistakes", func(t *testing.T) { clientMistakes(t, base) })
			t.Run("huge limits", func(t *testing.T) { hugeLimits(t, base) })
		})
	}
}

// clientMistakes checks the status and errcode of requests with wrong state, malformed or
// unknown IDs: the spec's 4xx, never a 5xx. Forgetting a room one is still in was a 500.
func clientMistakes(t *testing.T, base string) {
	ctx := context.Background()
	alice, bob, carol := e2e.Register(t, base, "alice"), e2e.Register(t, base, "bob"), e2e.Register(t, base, "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if _, err = alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	left, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, left.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err = bob.LeaveRoom(ctx, left.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, roomID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	room := func(r id.RoomID) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(r.String()) }
	unknown := id.RoomID("!unknown:mistakes.test")
	for _, c := range []struct {
		name         string
		who          *mautrix.Client
		method, path string
		body         string // {} when empty
		status       int
		errcode      string
	}{
		{"forget while joined", alice, http.MethodPost, room(roomID) + "/forget", "", 400, "M_UNKNOWN"},
		{"forget while joined (not creator)", bob, http.MethodPost, room(roomID) + "/forget", "", 400, "M_UNKNOWN"},
		{"forget while invited", carol, http.MethodPost, room(roomID) + "/forget", "", 400, "M_UNKNOWN"},
		{"forget after leaving", bob, http.MethodPost, room(left.RoomID) + "/forget", "", 200, ""},
		{"forget an unknown room", alice, http.MethodPost, room(unknown) + "/forget", "", 403, "M_FORBIDDEN"},
		{"forget a malformed room ID", alice, http.MethodPost, "/_matrix/client/v3/rooms/nope/forget", "", 400, "M_INVALID_PARAM"},
		{"messages of a malformed room ID", alice, http.MethodGet, "/_matrix/client/v3/rooms/nope/messages?dir=b", "", 400, "M_INVALID_PARAM"},
		{"context of a malformed room ID", alice, http.MethodGet, "/_matrix/client/v3/rooms/nope/context/" + url.PathEscape(sent.EventID.String()), "", 400, "M_INVALID_PARAM"},
		{"messages of an unknown room", alice, http.MethodGet, room(unknown) + "/messages?dir=b", "", 403, "M_FORBIDDEN"},
		{"context of an unknown event", alice, http.MethodGet, room(roomID) + "/context/" + url.PathEscape("$nope"), "", 404, "M_NOT_FOUND"},
		{"event of an unknown room", alice, http.MethodGet, room(unknown) + "/event/" + url.PathEscape(sent.EventID.String()), "", 404, "M_NOT_FOUND"},
		{"leave an unknown room", alice, http.MethodPost, room(unknown) + "/leave", "", 403, "M_FORBIDDEN"},
		{"send to a room not joined", carol, http.MethodPut, room(roomID) + "/send/m.room.message/t1", `{"msgtype":"m.text","body":"x"}`, 403, "M_FORBIDDEN"},
		{"receipt for an unknown event", alice, http.MethodPost, room(roomID) + "/receipt/m.read/" + url.PathEscape("$nope"), "", 404, "M_NOT_FOUND"},
		{"visibility of an unknown room", alice, http.MethodPut, "/_matrix/client/v3/directory/list/room/" + url.PathEscape(unknown.String()), `{"visibility":"public"}`, 404, "M_NOT_FOUND"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := c.body
			if body == "" {
				body = `{}`
			}
			status, errcode := call(t, c.who, c.method, base+c.path, body)
			if status != c.status || errcode != c.errcode {
				t.Fatalf("%s %s: %d %s, want %d %s", c.method, c.path, status, errcode, c.status, c.errcode)
			}
		})
	}
}

// hugeLimits syncs with a timeline limit of 2^63-1, in an inline filter and in one stored
// through the user API, which made /sync loop forever: each answers within a deadline with
// the whole room, initial and incremental.
func hugeLimits(t *testing.T, base string) {
	ctx := context.Background()
	dave := e2e.Register(t, base, "dave")
	created, err := dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var sent []id.EventID
	for _, body := range []string{"one", "two", "three"} {
		res, err := dave.SendText(ctx, created.RoomID, body)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, res.EventID)
	}
	inline := `{"room":{"timeline":{"limit":9223372036854775807},"state":{"limit":9223372036854775807},"ephemeral":{"limit":9223372036854775807}},"presence":{"limit":9223372036854775807}}`
	stored, err := dave.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: math.MaxInt64}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{inline, stored.FilterID} {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := dave.SyncRequest(sctx, 0, "", filter, false, "")
		if err != nil {
			cancel()
			t.Fatalf("initial sync with filter %s: %v", filter, err)
		}
		tl := res.Rooms.Join[created.RoomID].Timeline
		if n := len(tl.Events); n < len(sent)+4 || tl.Events[0].Type.Type != "m.room.create" || tl.Events[n-1].ID != sent[len(sent)-1] || tl.Limited {
			cancel()
			t.Fatalf("initial sync with filter %s: %d events, limited %v", filter, n, tl.Limited)
		}
		next, err := dave.SendText(ctx, created.RoomID, "after")
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		sent = append(sent, next.EventID)
		inc, err := dave.SyncRequest(sctx, 0, res.NextBatch, filter, false, "")
		cancel()
		if err != nil {
			t.Fatalf("incremental sync with filter %s: %v", filter, err)
		}
		if evs := inc.Rooms.Join[created.RoomID].Timeline.Events; len(evs) != 1 || evs[0].ID != next.EventID {
			t.Fatalf("incremental sync with filter %s: %d events", filter, len(evs))
		}
	}
}

// call sends an authenticated request and returns the status and the errcode, if any.
func call(t *testing.T, c *mautrix.Client, method, u, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if method != http.MethodGet {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e struct {
		Errcode string `json:"errcode"`
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s %s: %d with a body that is not a Matrix error: %s", method, u, res.StatusCode, b)
		}
	}
	return res.StatusCode, e.Errcode
}
