package routing

import (
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
)

// clientEvent is the client-server format of a room event.
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       json.RawMessage `json:"unsigned,omitempty"`
}

// ClientEvent converts a PDU to the client format.
func ClientEvent(ev gomatrixserverlib.PDU) clientEvent {
	c := clientEvent{
		Content:        ev.Content(),
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         ev.RoomID().String(),
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Redacts:        ev.Redacts(),
	}
	if u := ev.Unsigned(); len(u) > 0 {
		c.Unsigned = u
	}
	if len(c.Content) == 0 {
		c.Content = json.RawMessage("{}")
	}
	return c
}
