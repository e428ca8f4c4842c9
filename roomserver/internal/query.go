package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
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
	res, err := q.in.results.wait(ctx, req.Partition, req.Offset, req.MessageID)
	if err != nil {
		return nil, err
	}
	return &api.QueryInputResultResponse{Results: res}, nil
}

// maxOutputRecords caps a QueryOutputRecords answer.
const maxOutputRecords = 500

// QueryOutputRecords implements api.ReplayAPI from the outbox. A gap between AfterSeq and
// the first record kept means the records were pruned (older than the replay window).
func (q *Querier) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	limit := req.Limit
	if limit <= 0 || limit > maxOutputRecords {
		limit = maxOutputRecords
	}
	rows, last, err := q.in.db.OutputsAfter(ctx, req.Partition, req.AfterSeq, limit)
	if err != nil {
		return nil, err
	}
	if err = q.in.completeOutputs(ctx, rows); err != nil {
		return nil, err
	}
	next := req.AfterSeq + 1
	// AfterSeq 0 asks for the oldest records kept and is never past the window: it is how a
	// reader past the window learns where the kept records start, also when none is kept.
	if req.AfterSeq > 0 && ((len(rows) > 0 && rows[0].PartitionSeq != next) || (len(rows) == 0 && last >= next)) {
		return nil, matrixerr.NotFound(fmt.Sprintf("output records after %d are past the replay window", req.AfterSeq))
	}
	res := &api.QueryOutputRecordsResponse{Records: make([]json.RawMessage, len(rows)), LastSeq: last}
	for i, o := range rows {
		res.Records[i] = o.Payload
	}
	return res, nil
}

// QueryRoomInfo implements api.QueryAPI.
func (q *Querier) QueryRoomInfo(ctx context.Context, req *api.QueryRoomInfoRequest) (*api.QueryRoomInfoResponse, error) {
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return &api.QueryRoomInfoResponse{}, err
	}
	return &api.QueryRoomInfoResponse{Exists: true, RoomVersion: h.room.RoomVersion, LatestEventIDs: h.latestIDs, Depth: h.room.Depth}, nil
}

// stateEvents returns the events of st: those of tuples and of evTypes when either is
// given, else all of them.
func (q *Querier) stateEvents(ctx context.Context, roomVersion string, st *types.State, tuples []api.StateKeyTuple, evTypes ...string) ([]api.Event, error) {
	var nids []types.EventNID
	if len(evTypes) > 0 {
		typeNIDs, err := q.in.cache.typeNIDs(ctx, evTypes...)
		if err != nil {
			return nil, err
		}
		wanted := make(map[types.TypeNID]bool, len(typeNIDs))
		for _, nid := range typeNIDs {
			wanted[nid] = true
		}
		for _, e := range st.Entries() {
			if wanted[e.Type] {
				nids = append(nids, e.Event)
			}
		}
		if len(tuples) == 0 {
			return q.eventsOf(ctx, roomVersion, nids)
		}
	}
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
	return q.eventsOf(ctx, roomVersion, nids)
}

// eventsOf loads events by NID.
func (q *Querier) eventsOf(ctx context.Context, roomVersion string, nids []types.EventNID) ([]api.Event, error) {
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
	evs, err := q.stateEvents(ctx, h.room.RoomVersion, h.state, req.Tuples, req.Types...)
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
		if r.Rejected {
			if !r.Outlier {
				res.RejectedIDs = append(res.RejectedIDs, r.EventID)
			}
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
		if r.Rejected {
			continue
		}
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
	if len(rows) == 0 || rows[0].RoomNID != h.room.NID || rows[0].Outlier || rows[0].Rejected {
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

// QueryServerAllowed implements api.QueryAPI with the rules of the client-server spec's
// "Room History Visibility" applied to the server's users together, by the state before
// each event (and after it, for history visibility changes and the server's own users'
// membership events):
//   - world_readable and shared (the default) history is visible: the federation endpoints
//     already require the server to be in the room now, so its users join after the event;
//   - invited history is visible while one of the server's users is invited or joined;
//   - joined history is visible while one of them is joined.
//
// Outliers have no state to judge by; they are auth events, shared with every server that
// asks for an auth chain, and so visible.
func (q *Querier) QueryServerAllowed(ctx context.Context, req *api.QueryServerAllowedRequest) (*api.QueryServerAllowedResponse, error) {
	res := &api.QueryServerAllowedResponse{Allowed: []string{}}
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil {
		return res, err
	}
	rows, err := q.in.db.EventsByID(ctx, req.EventIDs)
	if err != nil {
		return nil, err
	}
	users, err := q.in.db.UsersOfServer(ctx, h.room.NID, string(req.ServerName))
	if err != nil {
		return nil, err
	}
	v, err := q.newServerVisibility(ctx, h.room.RoomVersion, users)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.RoomNID != h.room.NID || r.Rejected {
			continue
		}
		ok := r.Outlier
		if !ok {
			if ok, err = v.allowed(ctx, r); err != nil {
				return nil, err
			}
		}
		if ok {
			res.Allowed = append(res.Allowed, r.EventID)
		}
	}
	return res, nil
}

// QueryUserAllowed implements api.VisibilityAPI with the rules of the client-server spec's
// "Room History Visibility" for one user, by the state before each event (and after it, for
// history visibility changes and the user's own membership events):
//   - world_readable history is visible;
//   - history is visible where the user was joined, and with invited visibility where the
//     user was invited;
//   - shared history (the default) is visible where the user was joined, and before the
//     point where the user's joined membership ended: forever for a user joined now, up to
//     the leave (or ban) of a user who was joined until then.
//
// Outliers are not in the timeline and never visible to a user.
func (q *Querier) QueryUserAllowed(ctx context.Context, req *api.QueryUserAllowedRequest) (*api.QueryUserAllowedResponse, error) {
	res := &api.QueryUserAllowedResponse{Allowed: []string{}}
	h, err := q.in.cache.head(ctx, req.RoomID)
	if err != nil || h == nil || len(req.EventIDs) == 0 {
		return res, err
	}
	rows, err := q.in.db.EventsByID(ctx, req.EventIDs)
	if err != nil {
		return nil, err
	}
	v, err := q.newServerVisibility(ctx, h.room.RoomVersion, []string{req.UserID})
	if err != nil {
		return nil, err
	}
	v.forUser = true
	if v.sharedUntil, err = q.sharedUntil(ctx, v, h.room.NID, req.UserID); err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.RoomNID != h.room.NID || r.Outlier {
			continue
		}
		ok, err := v.allowed(ctx, r)
		if err != nil {
			return nil, err
		}
		if ok {
			res.Allowed = append(res.Allowed, r.EventID)
		}
	}
	return res, nil
}

// sharedUntil is the event NID before which shared history is visible to userID: every
// event for a user joined now; the events before the leave or ban that ended the user's
// joined membership; none for a user never joined.
func (q *Querier) sharedUntil(ctx context.Context, v *serverVisibility, roomNID types.RoomNID, userID string) (types.EventNID, error) {
	m, err := q.in.db.Membership(ctx, roomNID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if m.Membership == spec.Join {
		return types.EventNID(math.MaxInt64), nil
	}
	rows, err := q.in.db.EventsByID(ctx, []string{m.EventID})
	if err != nil || len(rows) == 0 || rows[0].Outlier {
		return 0, err
	}
	before, err := v.state(ctx, rows[0].Before)
	if err != nil {
		return 0, err
	}
	joined, err := v.membersHave(ctx, before, spec.Join)
	if err != nil || !joined {
		return 0, err
	}
	return rows[0].NID, nil
}

// serverVisibility judges events for one server (or, with forUser, one user), loading each
// snapshot once per query.
type serverVisibility struct {
	q           *Querier
	roomVersion string
	visibility  types.StateTuple
	members     []types.StateTuple // the server's users' membership tuples
	snapshots   map[types.SnapshotNID]*types.State
	// forUser applies the user rules of QueryUserAllowed: shared history is visible only
	// where the user was joined or before sharedUntil.
	forUser     bool
	sharedUntil types.EventNID
}

// state loads a snapshot once per query.
func (v *serverVisibility) state(ctx context.Context, nid types.SnapshotNID) (*types.State, error) {
	st, ok := v.snapshots[nid]
	if !ok {
		var err error
		if st, err = v.q.in.cache.loadState(ctx, nid); err != nil {
			return nil, err
		}
		v.snapshots[nid] = st
	}
	return st, nil
}

func (q *Querier) newServerVisibility(ctx context.Context, roomVersion string, users []string) (*serverVisibility, error) {
	ts := []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}}
	for _, u := range users {
		ts = append(ts, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: u})
	}
	nts, err := q.in.cache.knownTuples(ctx, ts)
	if err != nil {
		return nil, err
	}
	return &serverVisibility{q: q, roomVersion: roomVersion, visibility: nts[0], members: nts[1:], snapshots: map[types.SnapshotNID]*types.State{}}, nil
}

// allowed judges one stored event by the state before it, and for a history visibility
// change or a membership event of one of the server's users also by the state after it.
func (v *serverVisibility) allowed(ctx context.Context, ev storage.Event) (bool, error) {
	st, err := v.state(ctx, ev.Before)
	if err != nil {
		return false, err
	}
	ok, err := v.allowedBy(ctx, st, ev.NID)
	if ok || err != nil || !ev.IsState {
		return ok, err
	}
	tuple := types.StateTuple{Type: ev.Type, Key: ev.StateKey}
	if tuple == v.visibility || slices.Contains(v.members, tuple) {
		return v.allowedBy(ctx, st.With(tuple, ev.NID), ev.NID)
	}
	return false, nil
}

// allowedBy applies the rules to one state, the state of event nid.
func (v *serverVisibility) allowedBy(ctx context.Context, st *types.State, nid types.EventNID) (bool, error) {
	visibility := gomatrixserverlib.HistoryVisibilityShared
	if nid := st.Lookup(v.visibility); nid != 0 {
		evs, err := v.q.in.cache.eventsByNID(ctx, v.roomVersion, []types.EventNID{nid})
		if err != nil {
			return false, err
		}
		if hv, err := evs[0].HistoryVisibility(); err == nil {
			visibility = hv
		}
	}
	switch visibility {
	case gomatrixserverlib.HistoryVisibilityWorldReadable:
		return true, nil
	case gomatrixserverlib.HistoryVisibilityInvited:
		return v.membersHave(ctx, st, spec.Join, spec.Invite)
	case gomatrixserverlib.HistoryVisibilityJoined:
		return v.membersHave(ctx, st, spec.Join)
	}
	if !v.forUser || nid < v.sharedUntil {
		return true, nil
	}
	return v.membersHave(ctx, st, spec.Join)
}

// membersHave reports whether one of the judged users has one of memberships in st.
func (v *serverVisibility) membersHave(ctx context.Context, st *types.State, memberships ...string) (bool, error) {
	var nids []types.EventNID
	for _, t := range v.members {
		if nid := st.Lookup(t); nid != 0 {
			nids = append(nids, nid)
		}
	}
	evs, err := v.q.in.cache.eventsByNID(ctx, v.roomVersion, nids)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		m, _ := e.Membership() // a member event without a membership is no member
		if slices.Contains(memberships, m) {
			return true, nil
		}
	}
	return false, nil
}

// QueryRooms implements api.TimelineAPI.
func (q *Querier) QueryRooms(ctx context.Context, req *api.QueryRoomsRequest) (*api.QueryRoomsResponse, error) {
	return (&Timeline{DB: q.in.db}).QueryRooms(ctx, req)
}

// QueryRoomEvents implements api.TimelineAPI.
func (q *Querier) QueryRoomEvents(ctx context.Context, req *api.QueryRoomEventsRequest) (*api.QueryRoomEventsResponse, error) {
	return (&Timeline{DB: q.in.db}).QueryRoomEvents(ctx, req)
}
