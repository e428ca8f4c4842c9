package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/syncapi/api"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// peek runs POST /peek/{target} and returns the status and the error code or room ID.
func (h *harness) peek(token, target string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_matrix/client/v3/peek/"+url.PathEscape(target), bytes.NewReader([]byte(`{}`))) // the URL is well-formed
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var res struct {
		RoomID  string `json:"room_id"`
		ErrCode string `json:"errcode"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		h.t.Fatalf("peek %s: %d %s", target, resp.StatusCode, body)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, res.RoomID
	}
	return resp.StatusCode, res.ErrCode
}

// device registers another device of userID under token.
func (h *harness) device(userID, deviceID, token string) {
	h.mu.Lock()
	h.devices[token] = &uapi.Device{UserID: userID, DeviceID: deviceID}
	h.mu.Unlock()
}

func lastBody(r *types.JoinedRoom) string {
	if r == nil || len(r.Timeline.Events) == 0 {
		return ""
	}
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(r.Timeline.Events[len(r.Timeline.Events)-1].Content, &c) // no body reads as ""
	return c.Body
}

// TestPeek covers MSC2753 peeking: only world_readable rooms, by room ID, the room in
// rooms.peek of the peeking device's /sync alone (whole at first, then its new events),
// the peek kept across a restart, and ended by a join.
func TestPeek(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob := h.user("alice"), h.user("bob")
		h.device(bob, "DEVbob2", "bob2")
		roomID := h.newRoom(alice)

		for _, c := range []struct {
			target string
			status int
			code   string
		}{
			{roomID, http.StatusForbidden, "M_FORBIDDEN"},
			{"!unknown:" + serverName, http.StatusNotFound, "M_NOT_FOUND"},
			{"#unknown:" + serverName, http.StatusNotFound, "M_NOT_FOUND"},
			{"not-a-room", http.StatusBadRequest, "M_INVALID_PARAM"},
		} {
			if status, code := h.peek(bob, c.target); status != c.status || code != c.code {
				t.Fatalf("peek %s: %d %s, want %d %s", c.target, status, code, c.status, c.code)
			}
		}

		h.submit(roomID, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "world_readable"}))
		h.waitConsumed()
		first := h.sync(bob)
		if status, got := h.peek(bob, roomID); status != http.StatusOK || got != roomID {
			t.Fatalf("peek: %d %s", status, got)
		}
		h.send(roomID, alice, "one")
		res := h.syncUntil(bob, first.NextBatch, func(r *types.SyncResponse) bool { return lastBody(r.Rooms.Peek[roomID]) == "one" })
		pr := res.Rooms.Peek[roomID]
		if pr.Timeline.Events[0].Type != spec.MRoomCreate || pr.Timeline.Limited || len(pr.State.Events) != 0 {
			t.Fatalf("first peek: timeline starts with %s, limited %v, %d state events", pr.Timeline.Events[0].Type, pr.Timeline.Limited, len(pr.State.Events))
		}
		if len(res.Rooms.Join) != 0 {
			t.Fatalf("peeked room in rooms.join: %v", res.Rooms.Join)
		}
		if other := h.sync("bob2"); len(other.Rooms.Peek) != 0 {
			t.Fatalf("the other device sees peeks: %v", other.Rooms.Peek)
		}

		h.send(roomID, alice, "two")
		res = h.syncUntil(bob, res.NextBatch, func(r *types.SyncResponse) bool { return lastBody(r.Rooms.Peek[roomID]) == "two" })
		if n := len(res.Rooms.Peek[roomID].Timeline.Events); n != 1 {
			t.Fatalf("incremental peek has %d events, want the new one", n)
		}

		h.stop()
		h = start(t, db)
		h.user("alice")
		h.user("bob")
		h.device(bob, "DEVbob2", "bob2")
		if again := h.sync(bob); lastBody(again.Rooms.Peek[roomID]) != "two" {
			t.Fatalf("peek lost across a restart: %+v", again.Rooms.Peek)
		}

		h.member(roomID, bob, bob, spec.Join)
		h.waitConsumed()
		joined := h.sync(bob)
		if joined.Rooms.Join[roomID] == nil || len(joined.Rooms.Peek) != 0 {
			t.Fatalf("after the join: joined %v, peeked %v", joined.Rooms.Join[roomID] != nil, joined.Rooms.Peek)
		}
		h.member(roomID, bob, bob, spec.Leave)
		h.waitConsumed()
		if left := h.sync(bob); len(left.Rooms.Peek) != 0 {
			t.Fatalf("the room came back as peeked after the leave: %v", left.Rooms.Peek)
		}
	})
}

// unpeek runs POST /rooms/{roomId}/unpeek with body and returns the status and error code.
func (h *harness) unpeek(token, roomID, body string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/unpeek", bytes.NewReader([]byte(body))) // the URL is well-formed
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		ErrCode string `json:"errcode"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &res); err != nil {
		h.t.Fatalf("unpeek %s: %d %s", roomID, resp.StatusCode, raw)
	}
	return resp.StatusCode, res.ErrCode
}

// TestPeekEnds: a peek ends with /unpeek (MSC2753) and when the peeking user leaves or is
// banned (a membership event of theirs, here a ban of a user who never joined), not only
// when they join, and through the internal API's PerformUnpeek over internal HTTP (the
// clientapi's /leave of a peeker), which says whether it ended a peek. Each time a message
// sent to the peeked room after the end, then a marker in a room the user is in, shows the
// peeked room is gone from their /sync. /unpeek of a room not peeked into succeeds; a bad
// room ID or body is 400.
func TestPeekEnds(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol := h.user("alice"), h.user("bob"), h.user("carol")
		roomID := h.newRoom(alice, roomtest.Proto(alice, spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "world_readable"}))
		markers := h.newRoom(alice)
		for _, u := range []string{bob, carol} {
			h.member(markers, u, u, spec.Join)
		}
		h.waitConsumed()
		peeking := func(user, since, body string) *types.SyncResponse {
			t.Helper()
			h.send(roomID, alice, body)
			return h.syncUntil(user, since, func(r *types.SyncResponse) bool { return lastBody(r.Rooms.Peek[roomID]) == body })
		}
		// ended asserts that, after the end, a message in the peeked room reaches the user
		// no more: their sync carries the marker sent after it, and no peek.
		ended := func(user, since, body string) {
			t.Helper()
			h.send(roomID, alice, body)
			h.send(markers, alice, "marker "+body)
			var peeks []string
			h.syncUntil(user, since, func(r *types.SyncResponse) bool {
				for id := range r.Rooms.Peek {
					peeks = append(peeks, id)
				}
				return lastBody(r.Rooms.Join[markers]) == "marker "+body
			})
			if len(peeks) != 0 {
				t.Fatalf("%s still peeks after the end: %v", user, peeks)
			}
		}

		for _, u := range []string{bob, carol} {
			if status, got := h.peek(u, roomID); status != http.StatusOK || got != roomID {
				t.Fatalf("peek: %d %s", status, got)
			}
		}
		resBob := peeking(bob, "", "one")
		resCarol := h.syncUntil(carol, "", func(r *types.SyncResponse) bool { return lastBody(r.Rooms.Peek[roomID]) == "one" })

		if status, code := h.unpeek(bob, roomID, `{}`); status != http.StatusOK {
			t.Fatalf("unpeek: %d %s", status, code)
		}
		ended(bob, resBob.NextBatch, "after unpeek")

		h.member(roomID, alice, carol, spec.Ban)
		ended(carol, resCarol.NextBatch, "after ban")

		if status, got := h.peek(bob, roomID); status != http.StatusOK || got != roomID {
			t.Fatalf("peek again: %d %s", status, got)
		}
		resBob = peeking(bob, "", "two")
		for _, want := range []bool{true, false} {
			res, err := h.peeks.PerformUnpeek(context.Background(), &api.PerformUnpeekRequest{UserID: bob, DeviceID: "DEVbob", RoomID: roomID})
			if err != nil || res.Ended != want {
				t.Fatalf("PerformUnpeek: %+v %v, want ended %v", res, err, want)
			}
		}
		ended(bob, resBob.NextBatch, "after PerformUnpeek")

		for _, c := range []struct {
			room, body string
			status     int
			code       string
		}{
			{roomID, `{}`, http.StatusOK, ""},
			{"not-a-room", `{}`, http.StatusBadRequest, "M_INVALID_PARAM"},
			{roomID, `{`, http.StatusBadRequest, "M_NOT_JSON"},
		} {
			if status, code := h.unpeek(bob, c.room, c.body); status != c.status || code != c.code {
				t.Fatalf("unpeek %s %s: %d %s, want %d %s", c.room, c.body, status, code, c.status, c.code)
			}
		}
	})
}
