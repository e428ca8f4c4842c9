package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SlidingSyncPath is simplified sliding sync's endpoint (MSC4186, unstable prefix).
const SlidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingResponse is the part of a sliding sync response the stories read.
type slidingResponse struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms map[string]struct {
		Initial       bool              `json:"initial"`
		Membership    string            `json:"membership"`
		Timeline      []json.RawMessage `json:"timeline"`
		StrippedState []json.RawMessage `json:"stripped_state"`
	} `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string `json:"next_batch"`
			Events    []struct {
				Type    string         `json:"type"`
				Sender  string         `json:"sender"`
				Content map[string]any `json:"content"`
			} `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			OneTimeKeyCounts map[string]int `json:"device_one_time_keys_count"`
		} `json:"e2ee"`
		Typing *struct {
			Rooms map[string]struct {
				Content struct {
					UserIDs []string `json:"user_ids"`
				} `json:"content"`
			} `json:"rooms"`
		} `json:"typing"`
		Receipts *struct {
			Rooms map[string]struct {
				Content map[string]map[string]map[string]any `json:"content"`
			} `json:"rooms"`
		} `json:"receipts"`
	} `json:"extensions"`
}

// slidingConn is a client's sliding sync connection: its request and last pos.
type slidingConn struct {
	c    *mautrix.Client
	base string
	body map[string]any
	pos  string
	// toDeviceSince is the to_device extension's last next_batch.
	toDeviceSince string
}

// post sends the connection's request (with pos and timeout) and returns the status and
// raw answer.
func (s *slidingConn) post(t *testing.T, pos string, timeout int) (int, []byte) {
	t.Helper()
	body := map[string]any{}
	for k, v := range s.body {
		body[k] = v
	}
	if pos != "" {
		body["pos"], body["timeout"] = pos, timeout
	}
	ext := map[string]any{"to_device": map[string]any{"enabled": true, "since": s.toDeviceSince}, "e2ee": map[string]any{"enabled": true},
		"typing": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true}}
	body["extensions"] = ext
	b, _ := json.Marshal(body) // maps of JSON values always encode
	req, err := http.NewRequest(http.MethodPost, s.base+SlidingSyncPath, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("sliding sync: %v", err)
	}
	defer resp.Body.Close() // nolint: errcheck // read-only
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// next sends the request from the last pos and returns the response, moving pos on.
func (s *slidingConn) next(t *testing.T, timeout int) *slidingResponse {
	t.Helper()
	code, raw := s.post(t, s.pos, timeout)
	if code != http.StatusOK {
		t.Fatalf("sliding sync: %d %s", code, raw)
	}
	var res slidingResponse
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("sliding sync answer: %v: %s", err, raw)
	}
	s.pos = res.Pos
	if res.Extensions.ToDevice != nil {
		s.toDeviceSince = res.Extensions.ToDevice.NextBatch
	}
	return &res
}

// until long-polls until cond holds for a response (each response is passed to cond).
func (s *slidingConn) until(t *testing.T, what string, cond func(*slidingResponse) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond(s.next(t, 2000)) {
			return
		}
	}
	t.Fatalf("sliding sync: %s not seen in time", what)
}

// SlidingSync drives simplified sliding sync (MSC4186) with raw JSON requests over a real
// client's HTTP connection: /versions advertises it; a list gets the user's rooms whole
// once, then only changes; an invite is flagged with its stripped state; the to_device
// extension delivers a message once (since acknowledges it), the typing and receipts
// extensions carry bob's typing and receipt; a garbage pos is M_UNKNOWN_POS; and after a
// restart of the server the connection's pos is still valid.
func SlidingSync(t *testing.T, hs Homeserver) {
	ctx := context.Background()
	versions, err := Client(t, hs.URL()).Versions(ctx)
	if err != nil || !versions.UnstableFeatures["org.matrix.simplified_msc3575"] {
		t.Fatalf("/versions does not advertise simplified sliding sync: %+v %v", versions, err)
	}
	alice, bob, carol := Register(t, hs.URL(), "ss-alice"), Register(t, hs.URL(), "ss-bob"), Register(t, hs.URL(), "ss-carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	conn := &slidingConn{c: alice, base: hs.URL(), body: map[string]any{"conn_id": "main", "lists": map[string]any{
		"all": map[string]any{"range": []int{0, 19}, "timeline_limit": 5, "required_state": [][]string{{"*", "*"}}}}}}
	// The room comes whole in the first response that has it (right away unless the server
	// is still catching up with the join, as it may after a busy start).
	var first *slidingResponse
	conn.until(t, "the room", func(r *slidingResponse) bool {
		first = r
		_, ok := r.Rooms[roomID.String()]
		return ok
	})
	if r, ok := first.Rooms[roomID.String()]; !ok || !r.Initial || r.Membership != "join" || first.Lists["all"].Count != 1 {
		t.Fatalf("first response: %+v", first)
	}
	if first.Extensions.E2EE == nil || first.Extensions.E2EE.OneTimeKeyCounts == nil {
		t.Fatalf("e2ee extension missing: %+v", first.Extensions)
	}

	// An invite comes flagged, with its stripped state.
	invite, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "carol's", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	conn.until(t, "the invite", func(res *slidingResponse) bool {
		r, ok := res.Rooms[invite.RoomID.String()]
		return ok && r.Membership == "invite" && len(r.StrippedState) > 0
	})

	// A to-device message comes once: the next request's since acknowledges it.
	sendToDevice := func(body string) {
		t.Helper()
		_, err := bob.SendToDevice(ctx, event.NewEventType("m.test.sliding"), &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			alice.UserID: {alice.DeviceID: {Raw: map[string]any{"body": body}}}}})
		if err != nil {
			t.Fatalf("sendToDevice: %v", err)
		}
	}
	seen := map[string]int{}
	countToDevice := func(res *slidingResponse) {
		if td := res.Extensions.ToDevice; td != nil {
			for _, e := range td.Events {
				if b, ok := e.Content["body"].(string); ok && e.Sender == bob.UserID.String() {
					seen[b]++
				}
			}
		}
	}
	sendToDevice("first")
	conn.until(t, "the first to-device message", func(res *slidingResponse) bool { countToDevice(res); return seen["first"] > 0 })
	sendToDevice("marker")
	conn.until(t, "the marker to-device message", func(res *slidingResponse) bool { countToDevice(res); return seen["marker"] > 0 })
	if seen["first"] != 1 || seen["marker"] != 1 {
		t.Fatalf("to-device messages delivered %v times, want once each", seen)
	}

	// Typing and receipts. The typing outlasts the wait for it, however loaded the machine.
	if _, err = bob.UserTyping(ctx, roomID, true, 2*time.Minute); err != nil {
		t.Fatalf("typing: %v", err)
	}
	conn.until(t, "bob typing", func(res *slidingResponse) bool {
		return res.Extensions.Typing != nil && slices.Contains(res.Extensions.Typing.Rooms[roomID.String()].Content.UserIDs, bob.UserID.String())
	})
	sent, err := alice.SendText(ctx, roomID, "read me")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if err = bob.SendReceipt(ctx, roomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatalf("receipt: %v", err)
	}
	conn.until(t, "bob's receipt", func(res *slidingResponse) bool {
		if res.Extensions.Receipts == nil {
			return false
		}
		_, ok := res.Extensions.Receipts.Rooms[roomID.String()].Content[sent.EventID.String()]["m.read"][bob.UserID.String()]
		return ok
	})

	if code, raw := conn.post(t, "s1_999999999", 0); code != http.StatusBadRequest || !bytes.Contains(raw, []byte("M_UNKNOWN_POS")) {
		t.Fatalf("unknown pos: %d %s", code, raw)
	}

	// The connection survives a restart: its pos is still valid, and the next change comes
	// as a change.
	conn.next(t, 0)
	hs.Restart(t)
	conn.base = hs.URL()
	alice.HomeserverURL, bob.HomeserverURL = MustParse(t, hs.URL()), MustParse(t, hs.URL())
	if _, err = bob.SendText(ctx, roomID, "after the restart"); err != nil {
		t.Fatalf("send: %v", err)
	}
	conn.until(t, "the message after the restart", func(res *slidingResponse) bool {
		r, ok := res.Rooms[roomID.String()]
		if ok && r.Initial {
			t.Fatalf("the room came whole again after the restart: the connection was lost")
		}
		return ok && len(r.Timeline) > 0 && bytes.Contains(r.Timeline[len(r.Timeline)-1], []byte("after the restart"))
	})
}
