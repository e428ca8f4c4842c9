// Package roomtest builds room events for tests: signing keys, signed create events and the
// proto-events local writers submit to the roomserver.
package roomtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/roomserver/api"
)

// KeyID is the signing key ID the builders sign with.
const KeyID = "ed25519:test"

// NewKey is a fresh signing key.
func NewKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// CreateEvent is a signed m.room.create for a new room of the given version, from origin.
// roomID is ignored by versions that derive it from the event (12).
func CreateEvent(t testing.TB, key ed25519.PrivateKey, origin spec.ServerName, version gomatrixserverlib.RoomVersion, sender, roomID string) gomatrixserverlib.PDU {
	t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	empty := ""
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: spec.MRoomCreate, StateKey: &empty, Depth: 1, Version: verImpl}
	content := map[string]any{"room_version": string(version)}
	if !verImpl.PrivilegedCreators() {
		content["creator"] = sender
	}
	if err := pe.SetContent(content); err != nil {
		t.Fatal(err)
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), origin, KeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Proto is a local event for the roomserver to complete.
func Proto(sender, evType string, stateKey *string, content any) api.InputRoomEvent {
	raw, _ := json.Marshal(content) // test content always encodes
	return api.InputRoomEvent{Kind: api.KindNew, Proto: &api.ProtoEvent{Sender: sender, Type: evType, StateKey: stateKey, Content: raw}}
}

// StateKey points at s.
func StateKey(s string) *string { return &s }
