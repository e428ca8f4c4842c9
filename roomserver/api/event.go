// Package api is the roomserver's contract with every other component: the InputRoomEvent and
// OutputRoomEvent topic payloads, the producer writers use to submit events, and the query
// interfaces, cut per caller.
package api

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
)

// Event is a room event as it travels between components: the PDU together with what is
// needed to parse it again (room version, event ID for versions whose ID is not a hash,
// whether it has been redacted).
type Event struct {
	gomatrixserverlib.PDU
}

type eventWire struct {
	RoomVersion string          `json:"room_version"`
	EventID     string          `json:"event_id"`
	Redacted    bool            `json:"redacted,omitempty"`
	JSON        json.RawMessage `json:"json"`
}

// MarshalJSON writes the event with its parsing header.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.PDU == nil {
		return []byte("null"), nil
	}
	return json.Marshal(eventWire{
		RoomVersion: string(e.Version()),
		EventID:     e.EventID(),
		Redacted:    e.Redacted(),
		JSON:        e.JSON(),
	})
}

// UnmarshalJSON parses an event written by MarshalJSON. The JSON is trusted: it was checked
// by the roomserver before it was ever written. null leaves e as it is.
func (e *Event) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var w eventWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	pdu, err := ParseTrusted(w.RoomVersion, w.EventID, w.JSON, w.Redacted)
	if err != nil {
		return err
	}
	e.PDU = pdu
	return nil
}

// ParseTrusted parses event JSON that this server already verified and stored.
func ParseTrusted(roomVersion, eventID string, eventJSON []byte, redacted bool) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(roomVersion))
	if err != nil {
		return nil, err
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(eventID, eventJSON, redacted)
	if err != nil {
		return nil, fmt.Errorf("parse event %s: %w", eventID, err)
	}
	return pdu, nil
}

// Events wraps PDUs for the wire.
func Events(pdus []gomatrixserverlib.PDU) []Event {
	out := make([]Event, len(pdus))
	for i, p := range pdus {
		out[i] = Event{p}
	}
	return out
}
