// Package roomtest builds room events for tests: signing keys, signed create events and the
// proto-events local writers submit to the roomserver.
package roomtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
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

// Remote builds complete events of one room as another server would: signed by origin's
// key, with the prev_events and auth_events the test names.
type Remote struct {
	T       testing.TB
	Key     ed25519.PrivateKey
	Origin  spec.ServerName
	Version gomatrixserverlib.RoomVersion
	RoomID  string
	// KeyID is the key's ID (KeyID when empty).
	KeyID gomatrixserverlib.KeyID
}

// Event is a signed event with explicit prev_events and auth_events (event IDs).
func (r *Remote) Event(sender, evType string, stateKey *string, content any, depth int64, prev, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	r.T.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(r.Version)
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: r.RoomID, Type: evType, StateKey: stateKey, Depth: depth, Version: verImpl,
		PrevEvents: ids(prev), AuthEvents: ids(auth)}
	if evType == spec.MRoomRedaction {
		if m, ok := content.(map[string]string); ok {
			pe.Redacts = m["redacts"]
		}
	}
	if err := pe.SetContent(content); err != nil {
		r.T.Fatal(err)
	}
	keyID := r.KeyID
	if keyID == "" {
		keyID = KeyID
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), r.Origin, keyID, r.Key)
	if err != nil {
		r.T.Fatal(err)
	}
	return ev
}

// EventWithID is Event with the event ID chosen by the caller, for room versions whose
// event IDs are not hashes (v1 and v2): the event is hashed and signed again with it, so
// that events naming each other can be built.
func (r *Remote) EventWithID(eventID, sender, evType string, stateKey *string, content any, depth int64, prev, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	r.T.Helper()
	built := r.Event(sender, evType, stateKey, content, depth, prev, auth)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(built.JSON(), &fields); err != nil {
		r.T.Fatal(err)
	}
	delete(fields, "signatures")
	delete(fields, "hashes")
	delete(fields, "unsigned")
	id, err := json.Marshal(eventID)
	if err != nil {
		r.T.Fatal(err)
	}
	fields["event_id"] = id
	hashable, err := json.Marshal(fields)
	if err != nil {
		r.T.Fatal(err)
	}
	if hashable, err = gomatrixserverlib.CanonicalJSON(hashable); err != nil {
		r.T.Fatal(err)
	}
	sum := sha256.Sum256(hashable)
	if fields["hashes"], err = json.Marshal(map[string]spec.Base64Bytes{"sha256": sum[:]}); err != nil {
		r.T.Fatal(err)
	}
	unsigned, err := json.Marshal(fields)
	if err != nil {
		r.T.Fatal(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(r.Version)
	redacted, err := verImpl.RedactEventJSON(unsigned)
	if err != nil {
		r.T.Fatal(err)
	}
	keyID := r.KeyID
	if keyID == "" {
		keyID = KeyID
	}
	signed, err := gomatrixserverlib.SignJSON(string(r.Origin), gomatrixserverlib.KeyID(keyID), r.Key, redacted)
	if err != nil {
		r.T.Fatal(err)
	}
	var sigs struct {
		Signatures json.RawMessage `json:"signatures"`
	}
	if err = json.Unmarshal(signed, &sigs); err != nil {
		r.T.Fatal(err)
	}
	fields["signatures"] = sigs.Signatures
	final, err := json.Marshal(fields)
	if err != nil {
		r.T.Fatal(err)
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(final)
	if err != nil {
		r.T.Fatal(err)
	}
	return ev
}

func ids(pdus []gomatrixserverlib.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// Input is one complete event of the given kind.
func Input(kind api.Kind, ev gomatrixserverlib.PDU) api.InputRoomEvent {
	return api.InputRoomEvent{Kind: kind, Event: &api.Event{PDU: ev}}
}
