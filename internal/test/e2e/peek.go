package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// peekSync is the part of a /sync answer the peek story reads: the rooms of rooms.peek
// (MSC2753) and the bodies of the joined rooms' timelines.
type peekSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Peek map[id.RoomID]json.RawMessage `json:"peek"`
		Join map[id.RoomID]struct {
			Timeline struct {
				Events []struct {
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// syncPeeks polls c's /sync from since until done holds for an answer, and returns the
// rooms any answer on the way had in rooms.peek, and the last next_batch.
func syncPeeks(t *testing.T, c *mautrix.Client, since string, done func(*peekSync) bool) (map[id.RoomID]bool, string) {
	t.Helper()
	peeked := map[id.RoomID]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		query := map[string]string{"timeout": "1000"}
		if since != "" {
			query["since"] = since
		}
		var res peekSync
		if _, err := c.MakeRequest(context.Background(), http.MethodGet, c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, query), nil, &res); err != nil {
			t.Fatalf("sync: %v", err)
		}
		for room := range res.Rooms.Peek {
			peeked[room] = true
		}
		since = res.NextBatch
		if done(&res) {
			return peeked, since
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync: gave up waiting, rooms peeked on the way: %v", peeked)
		}
	}
}

// PeekLeave is the story of a peek (MSC2753) ended by POST /rooms/{roomId}/leave: bob, who
// has no membership in alice's world-readable room, peeks into it and sees it in
// rooms.peek; his /leave answers 200 and ends the peek, as /unpeek does: a message alice
// sends after it, followed by a marker in a room bob is joined to, reaches bob's /sync
// with the marker and no rooms.peek.
func PeekLeave(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "alice"), Register(t, baseURL, "bob")
	peeked, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string), Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}},
	}}})
	if err != nil {
		t.Fatalf("create the peeked room: %v", err)
	}
	markers, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create the marker room: %v", err)
	}
	if _, err = bob.JoinRoomByID(ctx, markers.RoomID); err != nil {
		t.Fatalf("bob joins the marker room: %v", err)
	}
	if _, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "peek", peeked.RoomID), struct{}{}, nil); err != nil {
		t.Fatalf("peek: %v", err)
	}
	_, since := syncPeeks(t, bob, "", func(r *peekSync) bool { return r.Rooms.Peek[peeked.RoomID] != nil })

	if _, err = bob.LeaveRoom(ctx, peeked.RoomID); err != nil {
		t.Fatalf("leave the peeked room: %v", err)
	}
	if _, err = alice.SendText(ctx, peeked.RoomID, "after the leave"); err != nil {
		t.Fatalf("send to the peeked room: %v", err)
	}
	if _, err = alice.SendText(ctx, markers.RoomID, "marker"); err != nil {
		t.Fatalf("send the marker: %v", err)
	}
	got, _ := syncPeeks(t, bob, since, func(r *peekSync) bool {
		events := r.Rooms.Join[markers.RoomID].Timeline.Events
		return len(events) > 0 && events[len(events)-1].Content.Body == "marker"
	})
	if got[peeked.RoomID] {
		t.Fatalf("bob still peeks into %s after /leave", peeked.RoomID)
	}
}
