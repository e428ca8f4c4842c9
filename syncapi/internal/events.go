package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// eventsTimelineLimit bounds the room events one GET /events answer carries per room; a
// client pages on from its end token.
const eventsTimelineLimit = 100

// EventsRequest is a parsed GET /events, the deprecated event stream.
type EventsRequest struct {
	UserID   string
	DeviceID string
	// From is where the client's stream stands; nil starts at the current position.
	From    *types.StreamToken
	Timeout time.Duration
	// RoomID, when set, limits the answer to one room.
	RoomID string
}

// Events answers GET /events from the sync stream: what an incremental /sync from From
// would return (waiting up to Timeout for it), as one flat chunk of events. Room events
// and ephemeral events carry their room_id; the user's invites appear as their membership
// event; presence follows. Send-to-device messages stay for /sync.
func (s *Syncer) Events(ctx context.Context, req *EventsRequest) (*types.EventsResponse, error) {
	from := req.From
	if from == nil {
		pos, err := s.db.MaxPosition(ctx)
		if err != nil {
			return nil, fmt.Errorf("read stream position: %w", err)
		}
		from = &types.StreamToken{Position: pos}
	}
	filter := &types.Filter{}
	filter.Room.Timeline.Limit = eventsTimelineLimit
	if req.RoomID != "" {
		filter.Room.Rooms = &[]string{req.RoomID}
	}
	res, err := s.Sync(ctx, &SyncRequest{UserID: req.UserID, DeviceID: req.DeviceID, Since: from, Timeout: req.Timeout,
		Filter: filter, WithoutToDevice: true, NewEventsOnly: true})
	if err != nil {
		return nil, err
	}
	out := &types.EventsResponse{Start: from.String(), End: res.NextBatch, Chunk: []json.RawMessage{}}
	add := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		out.Chunk = append(out.Chunk, b)
		return nil
	}
	for roomID, room := range res.Rooms.Join {
		for _, ev := range room.Timeline.Events {
			ev.RoomID = roomID
			if err = add(ev); err != nil {
				return nil, err
			}
		}
		for _, raw := range room.Ephemeral.Events {
			var ev map[string]json.RawMessage
			if err = json.Unmarshal(raw, &ev); err != nil {
				return nil, fmt.Errorf("decode ephemeral event of %s: %w", roomID, err)
			}
			if ev["room_id"], err = json.Marshal(roomID); err != nil {
				return nil, err
			}
			if err = add(ev); err != nil {
				return nil, err
			}
		}
	}
	for roomID, room := range res.Rooms.Invite {
		for _, ev := range room.InviteState.Events {
			if ev.Type == "m.room.member" && ev.StateKey == req.UserID {
				if err = add(invitedEvent{StrippedEvent: ev, RoomID: roomID}); err != nil {
					return nil, err
				}
			}
		}
	}
	for roomID, room := range res.Rooms.Leave {
		for _, ev := range room.Timeline.Events {
			ev.RoomID = roomID
			if err = add(ev); err != nil {
				return nil, err
			}
		}
	}
	for _, ev := range res.Presence.Events {
		if err = add(ev); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// invitedEvent is an invite in GET /events: the stripped membership event with its room.
type invitedEvent struct {
	clientevent.StrippedEvent
	RoomID string `json:"room_id"`
}
