// Package clientevent is the client-server format of room events ("ClientEvent" and
// "StrippedStateEvent" in the spec), shared by every component that answers clients.
package clientevent

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
)

// Event is a room event in the client-server format (spec "ClientEvent").
type Event struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       json.RawMessage `json:"unsigned,omitempty"`
	// pdu, set by UseFederationFormat, is the event's federation JSON: the event is then
	// written in that format.
	pdu json.RawMessage
}

// UseFederationFormat makes the event encode as its federation JSON (prev_events,
// auth_events, depth, hashes, signatures...) with the event ID and this event's unsigned
// data added: the event_format "federation" of sync filters.
func (c *Event) UseFederationFormat(pduJSON []byte) {
	c.pdu = pduJSON
}

// MarshalJSON writes the client format, or the federation format after UseFederationFormat.
func (c Event) MarshalJSON() ([]byte, error) {
	type clientFormat Event
	if c.pdu == nil {
		return json.Marshal(clientFormat(c))
	}
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(c.pdu, &m); err != nil {
		return nil, fmt.Errorf("decode event %s: %w", c.EventID, err)
	}
	id, err := json.Marshal(c.EventID)
	if err != nil {
		return nil, err
	}
	m["event_id"] = id
	if len(c.Unsigned) > 0 {
		m["unsigned"] = c.Unsigned
	}
	return json.Marshal(m)
}

// pduFields are the parts of a PDU's JSON the client format keeps.
type pduFields struct {
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts"`
	Unsigned       json.RawMessage `json:"unsigned"`
}

// New converts a stored PDU's JSON to the client format without a full PDU parse
// (it is on the hot path of every sync). The event ID comes from storage because room
// versions 3 and later do not carry it in the JSON. Since room version 11, redacts lives in
// the content; the client format has it in both places.
func New(eventID string, pduJSON []byte) (Event, error) {
	var p pduFields
	if err := json.Unmarshal(pduJSON, &p); err != nil {
		return Event{}, fmt.Errorf("decode event %s: %w", eventID, err)
	}
	c := Event{
		Content: p.Content, EventID: eventID, OriginServerTS: p.OriginServerTS, RoomID: p.RoomID,
		Sender: p.Sender, StateKey: p.StateKey, Type: p.Type, Redacts: p.Redacts, Unsigned: p.Unsigned,
	}
	if len(c.Content) == 0 || string(c.Content) == "null" {
		c.Content = json.RawMessage("{}")
	}
	if c.Redacts == "" && c.Type == "m.room.redaction" {
		var rc struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(c.Content, &rc) == nil {
			c.Redacts = rc.Redacts
		}
	}
	return c, nil
}

// SetTransactionID adds unsigned.transaction_id, which only the sending device may see.
func (c *Event) SetTransactionID(txnID string) {
	c.Unsigned = WithUnsigned(c.Unsigned, map[string]any{"transaction_id": txnID})
}

// SetAge sets unsigned.age: the milliseconds since the event was sent, at nowMS.
func (c *Event) SetAge(nowMS int64) {
	c.Unsigned = WithUnsigned(c.Unsigned, map[string]any{"age": max(nowMS-c.OriginServerTS, 0)})
}

// WithUnsigned returns the unsigned object with fields set (an unreadable one is replaced).
func WithUnsigned(unsigned json.RawMessage, fields map[string]any) json.RawMessage {
	m := map[string]json.RawMessage{}
	if len(unsigned) > 0 && json.Unmarshal(unsigned, &m) != nil {
		m = map[string]json.RawMessage{}
	}
	for k, v := range fields {
		b, err := json.Marshal(v)
		if err != nil {
			continue // the callers' values are plain data
		}
		m[k] = b
	}
	out, _ := json.Marshal(m) // a map of raw JSON values always encodes
	return out
}

// StrippedEvent is an event of invite_state (spec "StrippedStateEvent").
type StrippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Stripped reduces a client event to its stripped form.
func (c *Event) Stripped() StrippedEvent {
	sk := ""
	if c.StateKey != nil {
		sk = *c.StateKey
	}
	return StrippedEvent{Content: c.Content, Sender: c.Sender, StateKey: sk, Type: c.Type}
}

// FromPDU converts a parsed event.
func FromPDU(pdu gomatrixserverlib.PDU) (Event, error) {
	return New(pdu.EventID(), pdu.JSON())
}
