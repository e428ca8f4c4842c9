package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/dendrite/appservice/storage"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
)

// Ephemeral consumes OutputTypingEvent and OutputReceiptEvent and queues them, as the
// client-format m.typing and m.receipt events of /sync, for every service registered
// with receive_ephemeral that is interested in the room (its rooms namespace, or a joined
// user of its users namespace, as RoomEvents tracks them). A redelivered record queues its
// event again: typing carries the complete set and a receipt the user's position, so a
// repeat changes nothing for the service.
type Ephemeral struct {
	Rooms *RoomEvents
	// Typing selects the topic: true for OutputTypingEvent, false for OutputReceiptEvent.
	Typing bool
	*wakes
}

// NewEphemeral builds the handler of OutputTypingEvent (typing) or OutputReceiptEvent.
func NewEphemeral(rooms *RoomEvents, typing bool) *Ephemeral {
	return &Ephemeral{Rooms: rooms, Typing: typing, wakes: &wakes{q: rooms.q}}
}

// Handle implements eventlog.Consumer.Handle.
func (e *Ephemeral) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	woken := map[string]bool{}
	for _, rec := range recs {
		roomID, content, err := e.decode(rec)
		if err != nil {
			return err
		}
		members, err := e.Rooms.DB.Members(ctx, tx, roomID)
		if err != nil {
			return eventlog.Retry(err)
		}
		for _, as := range e.Rooms.Services {
			if as.URL == "" || !as.ReceiveEphemeral || !roomInterests(as, roomID, members) {
				continue
			}
			if err := e.Rooms.DB.Enqueue(ctx, tx, as.ID, storage.KindEphemeral, content); err != nil {
				return eventlog.Retry(err)
			}
			woken[as.ID] = true
		}
	}
	e.remember(recs, woken)
	return nil
}

// decode turns a record into its room and the ephemeral event's client-format JSON.
func (e *Ephemeral) decode(rec eventlog.Record) (string, []byte, error) {
	var roomID string
	var ev any
	if e.Typing {
		var out eduapi.OutputTypingEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return "", nil, fmt.Errorf("decode %s record: %w", rec.Topic, err)
		}
		ids := make([]string, 0, len(out.Users))
		for _, u := range out.Users {
			ids = append(ids, u.UserID)
		}
		roomID = out.RoomID
		ev = map[string]any{"type": "m.typing", "room_id": roomID, "content": map[string]any{"user_ids": ids}}
	} else {
		var out receiptapi.OutputReceiptEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return "", nil, fmt.Errorf("decode %s record: %w", rec.Topic, err)
		}
		receipt := map[string]any{"ts": out.TS}
		if out.ThreadID != "" {
			receipt["thread_id"] = out.ThreadID
		}
		roomID = out.RoomID
		ev = map[string]any{"type": "m.receipt", "room_id": roomID, "content": map[string]any{
			out.EventID: map[string]any{out.Type: map[string]any{out.UserID: receipt}}}}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return "", nil, fmt.Errorf("encode ephemeral event: %w", err)
	}
	return roomID, b, nil
}

// roomInterests reports whether the service is interested in the room: its rooms
// namespace, or one of the room's joined namespaced members is its.
func roomInterests(as *config.ApplicationService, roomID string, members []string) bool {
	if as.OwnsRoomID(roomID) {
		return true
	}
	for _, m := range members {
		if as.OwnsUserID(m) {
			return true
		}
	}
	return false
}
