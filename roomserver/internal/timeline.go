package internal

import (
	"context"
	"errors"

	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// Timeline implements api.TimelineAPI on the storage alone: it needs neither the log nor
// the caches, so a command can serve it from the database while no roomserver runs.
type Timeline struct {
	DB storage.Database
}

// QueryRooms implements api.TimelineAPI.
func (t *Timeline) QueryRooms(ctx context.Context, req *api.QueryRoomsRequest) (*api.QueryRoomsResponse, error) {
	ids, err := t.DB.Rooms(ctx, req.AfterRoomID, api.TimelinePage(req.Limit))
	if err != nil {
		return nil, err
	}
	return &api.QueryRoomsResponse{RoomIDs: ids}, nil
}

// QueryRoomEvents implements api.TimelineAPI from the stored events, newest NID first.
func (t *Timeline) QueryRoomEvents(ctx context.Context, req *api.QueryRoomEventsRequest) (*api.QueryRoomEventsResponse, error) {
	res := &api.QueryRoomEventsResponse{Events: []api.TimelineEvent{}}
	room, err := t.DB.Room(ctx, req.RoomID)
	if errors.Is(err, storage.ErrNotFound) {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	limit := api.TimelinePage(req.Limit)
	rows, err := t.DB.Timeline(ctx, room.NID, types.EventNID(req.BeforeNID), limit)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		te := api.TimelineEvent{NID: int64(r.NID), EventID: r.EventID, Rejected: r.Rejected, SoftFailed: r.SoftFailed, Redacted: r.Redacted}
		if !r.Rejected && !r.SoftFailed {
			pdu, err := api.ParseTrusted(room.RoomVersion, r.EventID, r.JSON, r.Redacted)
			if err != nil {
				return nil, err
			}
			te.Event = &api.Event{PDU: pdu}
		}
		res.Events = append(res.Events, te)
	}
	if len(rows) == limit {
		res.NextBeforeNID = int64(rows[len(rows)-1].NID)
	}
	return res, nil
}
