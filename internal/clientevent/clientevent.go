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
	unsigned := map[string]json.RawMessage{}
	if len(c.Unsigned) > 0 {
		if err := json.Unmarshal(c.Unsigned, &unsigned); err != nil {
			unsigned = map[string]json.RawMessage{}
		}
	}
	b, _ := json.Marshal(txnID) // a string always encodes
	unsigned["transaction_id"] = b
	c.Unsigned, _ = json.Marshal(unsigned) // a map of raw JSON values always encodes
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
