package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/appservice/storage"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// EphemeralKind is the topic an Ephemeral handler reads.
type EphemeralKind int

const (
	// Typing is OutputTypingEvent.
	Typing EphemeralKind = iota
	// Receipts is OutputReceiptEvent.
	Receipts
	// Presence is OutputPresenceEvent.
	Presence
	// ToDevice is OutputSendToDeviceEvent.
	ToDevice
)

// Ephemeral consumes OutputTypingEvent, OutputReceiptEvent, OutputPresenceEvent or
// OutputSendToDeviceEvent and queues them, as the client-format m.typing, m.receipt and
// m.presence events of /sync and MSC2409's to-device events, for every service registered
// with receive_ephemeral that is interested: in the room (its rooms namespace, or a joined
// user of its users namespace, as RoomEvents tracks them) for typing and receipts; for
// presence, in the user (its users namespace) or in one of the rooms the user is joined
// to; for a to-device message, in its target user (its exclusive users namespace, as
// Synapse decides: only the service that owns a device's user may read its messages). A
// redelivered typing, receipt or presence record queues its event again: typing carries
// the complete set, a receipt the user's position and presence the user's whole state, so
// a repeat changes nothing for the service. A to-device message is queued once per
// service, deduplicated by its message ID.
type Ephemeral struct {
	Rooms *RoomEvents
	Kind  EphemeralKind
}

// NewEphemeral builds the handler of the kind's topic.
func NewEphemeral(rooms *RoomEvents, kind EphemeralKind) *Ephemeral {
	return &Ephemeral{Rooms: rooms, Kind: kind}
}

// Prepare implements eventlog.Consumer.Prepare (see queueing).
func (e *Ephemeral) Prepare(_ context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return queueing(e.Rooms.q, recs, e.queue), nil
}

// queue queues the batch's events for the interested services, noting them in woken.
func (e *Ephemeral) queue(ctx context.Context, tx *sql.Tx, recs []eventlog.Record, woken map[string]bool) error {
	for _, rec := range recs {
		roomID, content, err := e.decode(rec)
		if err != nil {
			return err
		}
		if e.Kind == ToDevice {
			if err := e.queueToDevice(ctx, tx, roomID, content, woken); err != nil {
				return eventlog.Retry(err)
			}
			continue
		}
		var interested func(as *config.ApplicationService) bool
		if e.Kind == Presence {
			interested, err = e.presenceInterests(ctx, tx, roomID)
		} else {
			interested, err = e.roomInterests(ctx, tx, roomID)
		}
		if err != nil {
			return eventlog.Retry(err)
		}
		for _, as := range e.Rooms.Services {
			if as.URL == "" || !as.ReceiveEphemeral || !interested(as) {
				continue
			}
			if err := e.Rooms.DB.Enqueue(ctx, tx, as.ID, storage.KindEphemeral, content); err != nil {
				return eventlog.Retry(err)
			}
			woken[as.ID] = true
		}
	}
	return nil
}

// toDevice is a to-device message as a service receives it (MSC2409): the /sync event
// with the target user and device.
type toDevice struct {
	Type       string          `json:"type"`
	Sender     string          `json:"sender"`
	Content    json.RawMessage `json:"content"`
	ToUserID   string          `json:"to_user_id"`
	ToDeviceID string          `json:"to_device_id"`
}

// queueToDevice queues the message (its ID and content as decode returns them) for every
// service with receive_ephemeral whose exclusive users namespace holds its target, once
// per service.
func (e *Ephemeral) queueToDevice(ctx context.Context, tx *sql.Tx, messageID string, content []byte, woken map[string]bool) error {
	var msg toDevice
	if err := json.Unmarshal(content, &msg); err != nil {
		return fmt.Errorf("decode to-device message: %w", err)
	}
	for _, as := range e.Rooms.Services {
		if as.URL == "" || !as.ReceiveEphemeral || !as.ExclusiveUserID(msg.ToUserID) {
			continue
		}
		fresh, err := e.Rooms.DB.MarkQueued(ctx, tx, as.ID, "to_device:"+messageID)
		if err != nil {
			return err
		}
		if !fresh {
			continue
		}
		if err := e.Rooms.DB.Enqueue(ctx, tx, as.ID, storage.KindToDevice, content); err != nil {
			return err
		}
		woken[as.ID] = true
	}
	return nil
}

// roomInterests is which services are interested in the room.
func (e *Ephemeral) roomInterests(ctx context.Context, tx *sql.Tx, roomID string) (func(*config.ApplicationService) bool, error) {
	members, err := e.Rooms.DB.Members(ctx, tx, roomID)
	if err != nil {
		return nil, err
	}
	return func(as *config.ApplicationService) bool { return roomInterests(as, roomID, members) }, nil
}

// presenceInterests is which services are interested in the user's presence: the user is
// in their users namespace, or they are interested in a room the user is joined to. The
// user's rooms are asked of the roomserver only when a service with receive_ephemeral
// does not own the user.
func (e *Ephemeral) presenceInterests(ctx context.Context, tx *sql.Tx, userID string) (func(*config.ApplicationService) bool, error) {
	need := false
	for _, as := range e.Rooms.Services {
		need = need || (as.URL != "" && as.ReceiveEphemeral && !as.OwnsUserID(userID))
	}
	var rooms map[string][]string // room -> its joined namespaced users
	if need {
		res, err := e.Rooms.Rooms.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: userID, Membership: "join"})
		if err != nil {
			return nil, fmt.Errorf("rooms of %s: %w", userID, err)
		}
		rooms = make(map[string][]string, len(res.RoomIDs))
		for _, roomID := range res.RoomIDs {
			if rooms[roomID], err = e.Rooms.DB.Members(ctx, tx, roomID); err != nil {
				return nil, err
			}
		}
	}
	return func(as *config.ApplicationService) bool {
		if as.OwnsUserID(userID) {
			return true
		}
		for roomID, members := range rooms {
			if roomInterests(as, roomID, members) {
				return true
			}
		}
		return false
	}, nil
}

// decode turns a record into its room (the user, for presence; the message ID, for a
// to-device message) and the ephemeral event's client-format JSON.
func (e *Ephemeral) decode(rec eventlog.Record) (string, []byte, error) {
	var roomID string
	var ev any
	switch e.Kind {
	case ToDevice:
		var out eduapi.OutputSendToDeviceEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return "", nil, fmt.Errorf("decode %s record: %w", rec.Topic, err)
		}
		ev = toDevice{Type: out.Type, Sender: out.Sender, Content: out.Content, ToUserID: out.UserID, ToDeviceID: out.DeviceID}
		b, err := json.Marshal(ev)
		if err != nil {
			return "", nil, fmt.Errorf("encode to-device message: %w", err)
		}
		return out.MessageID, b, nil
	case Presence:
		var out presenceapi.OutputPresenceEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return "", nil, fmt.Errorf("decode %s record: %w", rec.Topic, err)
		}
		content := map[string]any{"presence": out.Presence.Presence, "currently_active": out.CurrentlyActive}
		if out.LastActiveTS > 0 {
			content["last_active_ago"] = max(time.Now().UnixMilli()-out.LastActiveTS, 0)
		}
		if out.StatusMsg != nil {
			content["status_msg"] = *out.StatusMsg
		}
		roomID = out.UserID
		ev = map[string]any{"type": "m.presence", "sender": out.UserID, "content": content}
	case Typing:
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
	default:
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
