//go:build goolm

package e2e

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// oneRoom is the crypto.StateStore of a client in one encrypted room.
type oneRoom struct{ room id.RoomID }

func (s *oneRoom) IsEncrypted(_ context.Context, r id.RoomID) (bool, error) { return r == s.room, nil }

func (s *oneRoom) GetEncryptionEvent(_ context.Context, r id.RoomID) (*event.EncryptionEventContent, error) {
	if r != s.room {
		return nil, nil
	}
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}

func (s *oneRoom) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}

func (s *oneRoom) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{s.room}, nil
}

// olmClient is a client with mautrix's OlmMachine (goolm, pure Go) and its sync stream.
type olmClient struct {
	*Poller
	mach *crypto.OlmMachine
}

func newOlmClient(t *testing.T, c *mautrix.Client, room *oneRoom) *olmClient {
	t.Helper()
	logger := zerolog.New(io.Discard)
	mach := crypto.NewOlmMachine(c, &logger, crypto.NewMemoryStore(nil), room)
	ctx := context.Background()
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("upload keys of %s: %v", c.UserID, err)
	}
	return &olmClient{Poller: &Poller{C: c}, mach: mach}
}

// until syncs, handing every response to the OlmMachine first, until cond holds.
func (o *olmClient) until(t *testing.T, what string, cond func(*mautrix.RespSync) bool) {
	t.Helper()
	o.Until(t, 30*time.Second, what, func(res *mautrix.RespSync) bool {
		o.mach.ProcessSyncResponse(context.Background(), res, o.Since)
		return cond(res)
	})
}

// decryptIn decrypts the encrypted events others sent to room in res and returns their bodies.
func (o *olmClient) decryptIn(t *testing.T, res *mautrix.RespSync, room id.RoomID) []string {
	t.Helper()
	var bodies []string
	joined := res.Rooms.Join[room]
	if joined == nil {
		return nil
	}
	for _, evt := range joined.Timeline.Events {
		if evt.Type != event.EventEncrypted || evt.Sender == o.C.UserID {
			continue
		}
		evt.RoomID = room
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			t.Fatalf("parse encrypted event: %v", err)
		}
		dec, err := o.mach.DecryptMegolmEvent(context.Background(), evt)
		if err != nil {
			t.Fatalf("decrypt %s: %v", evt.ID, err)
		}
		if msg, ok := dec.Content.Parsed.(*event.MessageEventContent); ok {
			bodies = append(bodies, msg.Body)
		}
	}
	return bodies
}

// EncryptedMessages is the end-to-end encryption story with a real crypto client (mautrix's
// OlmMachine on goolm): two users upload their device and one-time keys, one creates an
// encrypted room with the other; each shares a Megolm session with the other's device
// (querying its keys and claiming a one-time key through the server, sending the session
// as an Olm-encrypted to-device message) and sends an encrypted message, which the other
// decrypts.
func EncryptedMessages(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "olmalice"), Register(t, baseURL, "olmbob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatal(err)
	}
	state := &oneRoom{room: room}
	oa, ob := newOlmClient(t, alice, state), newOlmClient(t, bob, state)
	members := []id.UserID{alice.UserID, bob.UserID}
	for _, tc := range []struct {
		from, to *olmClient
		body     string
	}{{oa, ob, "a secret from alice"}, {ob, oa, "a secret from bob"}} {
		if err = tc.from.mach.ShareGroupSession(ctx, room, members); err != nil {
			t.Fatalf("share group session of %s: %v", tc.from.C.UserID, err)
		}
		content, err := tc.from.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: tc.body})
		if err != nil {
			t.Fatalf("encrypt: %v", err)
		}
		if _, err = tc.from.C.SendMessageEvent(ctx, room, event.EventEncrypted, content); err != nil {
			t.Fatalf("send: %v", err)
		}
		tc.to.until(t, tc.body, func(res *mautrix.RespSync) bool {
			for _, b := range tc.to.decryptIn(t, res, room) {
				if b == tc.body {
					return true
				}
			}
			return false
		})
	}
}
