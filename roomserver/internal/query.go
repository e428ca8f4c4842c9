package internal

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// Querier implements api.QueryAPI and api.WaitAPI on the roomserver's storage and caches.
type Querier struct {
	in *Inputer
}

// NewQuerier serves queries from the Inputer's database and caches.
func NewQuerier(in *Inputer) *Querier {
	return &Querier{in: in}
}

// QueryInputResult implements api.WaitAPI.
func (q *Querier) QueryInputResult(ctx context.Context, req *api.QueryInputResultRequest) (*api.QueryInputResultResponse, error) {
	res, err := q.in.results.wait(ctx, req.Partition, req.Offset)
	if err != nil {
		return nil, err
	}
	return &api.QueryInputResultResponse{Results: res}, nil
}

// QueryRoomInfo implements api.QueryAPI.
func (q *Querier) QueryRoomInfo(ctx context.Context, req *api.QueryRoomInfoRequest) (*api.QueryRoomInfoResponse, error) {
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryRoomInfoResponse{}, err
	}
	return &api.QueryRoomInfoResponse{Exists: true, RoomVersion: h.room.RoomVersion, LatestEventIDs: h.latestIDs, Depth: h.room.Depth}, nil
}

// stateEvents returns the events of st, restricted to tuples when given.
func (q *Querier) stateEvents(ctx context.Context, roomVersion string, st *types.State, tuples []api.StateKeyTuple) ([]api.Event, error) {
	var nids []types.EventNID
	if len(tuples) == 0 {
		for _, e := range st.Entries() {
			nids = append(nids, e.Event)
		}
	} else {
		ts := make([]gomatrixserverlib.StateKeyTuple, len(tuples))
		for i, t := range tuples {
			ts[i] = gomatrixserverlib.StateKeyTuple{EventType: t.EventType, StateKey: t.StateKey}
		}
		nts, err := q.in.cache.tuples(ctx, ts)
		if err != nil {
			return nil, err
		}
		for _, t := range nts {
			if nid := st.Lookup(t); nid != 0 {
				nids = append(nids, nid)
			}
		}
	}
	pdus, err := q.in.cache.eventsByNID(ctx, roomVersion, nids)
	if err != nil {
		return nil, err
	}
	return api.Events(pdus), nil
}

// QueryCurrentState implements api.QueryAPI.
func (q *Querier) QueryCurrentState(ctx context.Context, req *api.QueryCurrentStateRequest) (*api.QueryCurrentStateResponse, error) {
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryCurrentStateResponse{StateEvents: []api.Event{}}, err
	}
	evs, err := q.stateEvents(ctx, h.room.RoomVersion, h.state, req.Tuples)
	if err != nil {
		return nil, err
	}
	return &api.QueryCurrentStateResponse{RoomExists: true, RoomVersion: h.room.RoomVersion, StateEvents: evs}, nil
}

// QueryMembershipForUser implements api.QueryAPI.
func (q *Querier) QueryMembershipForUser(ctx context.Context, req *api.QueryMembershipForUserRequest) (*api.QueryMembershipForUserResponse, error) {
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryMembershipForUserResponse{}, err
	}
	m, err := q.in.db.Membership(ctx, h.room.NID, req.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return &api.QueryMembershipForUserResponse{RoomExists: true}, nil
	}
	if err != nil {
		return nil, err
	}
	return &api.QueryMembershipForUserResponse{RoomExists: true, Membership: m.Membership, EventID: m.EventID}, nil
}

// QueryRoomsForUser implements api.QueryAPI.
func (q *Querier) QueryRoomsForUser(ctx context.Context, req *api.QueryRoomsForUserRequest) (*api.QueryRoomsForUserResponse, error) {
	ids, err := q.in.db.RoomsForUser(ctx, req.UserID, req.Membership)
	if err != nil {
		return nil, err
	}
	return &api.QueryRoomsForUserResponse{RoomIDs: ids}, nil
}

// QueryEventsByID implements api.QueryAPI.
func (q *Querier) QueryEventsByID(ctx context.Context, req *api.QueryEventsByIDRequest) (*api.QueryEventsByIDResponse, error) {
	if req.RoomID == "" {
		return q.eventsInAnyRoom(ctx, req.EventIDs)
	}
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryEventsByIDResponse{Events: []api.Event{}}, err
	}
	rows, err := q.in.db.EventsByID(ctx, req.EventIDs)
	if err != nil {
		return nil, err
	}
	out := make([]api.Event, 0, len(rows))
	res := &api.QueryEventsByIDResponse{}
	for _, r := range rows {
		if r.RoomNID != h.room.NID {
			continue
		}
		pdu, err := api.ParseTrusted(h.room.RoomVersion, r.EventID, r.JSON, r.Redacted)
		if err != nil {
			return nil, err
		}
		out = append(out, api.Event{PDU: pdu})
		if r.Outlier {
			res.OutlierIDs = append(res.OutlierIDs, r.EventID)
		}
	}
	res.Events = out
	return res, nil
}

// eventsInAnyRoom answers QueryEventsByID without a room: events of whatever room they are
// in (federation's /event names no room).
func (q *Querier) eventsInAnyRoom(ctx context.Context, ids []string) (*api.QueryEventsByIDResponse, error) {
	rows, err := q.in.db.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	res := &api.QueryEventsByIDResponse{Events: []api.Event{}}
	for _, r := range rows {
		room, err := q.in.db.RoomByNID(ctx, r.RoomNID)
		if err != nil {
			return nil, err
		}
		pdu, err := api.ParseTrusted(room.RoomVersion, r.EventID, r.JSON, r.Redacted)
		if err != nil {
			return nil, err
		}
		res.Events = append(res.Events, api.Event{PDU: pdu})
		if r.Outlier {
			res.OutlierIDs = append(res.OutlierIDs, r.EventID)
		}
	}
	return res, nil
}

// QueryStateAtEvent implements api.QueryAPI.
func (q *Querier) QueryStateAtEvent(ctx context.Context, req *api.QueryStateAtEventRequest) (*api.QueryStateAtEventResponse, error) {
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryStateAtEventResponse{StateEvents: []api.Event{}}, err
	}
	rows, err := q.in.db.EventsByID(ctx, []string{req.EventID})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || rows[0].RoomNID != h.room.NID || rows[0].Outlier {
		return &api.QueryStateAtEventResponse{StateEvents: []api.Event{}}, nil
	}
	ev := rows[0]
	st, err := q.in.cache.loadState(ctx, ev.Before)
	if err != nil {
		return nil, err
	}
	if req.After && ev.IsState {
		st = st.With(types.StateTuple{Type: ev.Type, Key: ev.StateKey}, ev.NID)
	}
	evs, err := q.stateEvents(ctx, h.room.RoomVersion, st, req.Tuples)
	if err != nil {
		return nil, err
	}
	return &api.QueryStateAtEventResponse{EventKnown: true, StateEvents: evs}, nil
}
