package internal

import (
	"context"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// ContextRequest is a parsed GET /rooms/{roomId}/context/{eventId}.
type ContextRequest struct {
	UserID   string
	DeviceID string
	RoomID   string
	EventID  string
	Limit    int
	Filter   *types.RoomEventFilter
}

// Context returns an event with up to Limit visible events around it (half before, half
// after) and the room state at the last event returned. An event that is unknown, in another
// room or invisible to the user is 404.
func (s *Syncer) Context(ctx context.Context, req *ContextRequest) (*types.ContextResponse, error) {
	v, max, err := s.roomViewer(ctx, req.UserID, req.DeviceID, req.RoomID)
	if err != nil {
		return nil, err
	}
	found, err := s.db.EventsByID(ctx, []string{req.EventID})
	if err != nil {
		return nil, fmt.Errorf("load event %s: %w", req.EventID, err)
	}
	if len(found) == 0 || found[0].RoomID != req.RoomID || !v.sees(&found[0]) {
		return nil, matrixerr.NotFound("event not found")
	}
	ev := found[0]
	before := req.Limit / 2
	bp, err := walk(ctx, s.db, req.RoomID, v, &req.Filter.EventFilter, true, ev.Position-1, types.HistoryStart, before)
	if err != nil {
		return nil, err
	}
	ap, err := walk(ctx, s.db, req.RoomID, v, &req.Filter.EventFilter, false, ev.Position, max, req.Limit-before)
	if err != nil {
		return nil, err
	}
	res := &types.ContextResponse{Start: types.StreamToken{Position: bp.next}.String(), End: types.StreamToken{Position: ap.next}.String()}
	conv, err := s.clientEvents(ctx, append(append(bp.events, ev), ap.events...), v)
	if err != nil {
		return nil, err
	}
	res.EventsBefore, res.Event, res.EventsAfter = conv[:len(bp.events)], conv[len(bp.events)], conv[len(bp.events)+1:]
	last := ev.Position
	if len(ap.events) > 0 {
		last = ap.events[len(ap.events)-1].Position
	}
	current, err := s.db.CurrentState(ctx, []string{req.RoomID})
	if err != nil {
		return nil, fmt.Errorf("load state of %s: %w", req.RoomID, err)
	}
	st, err := stateAt(ctx, s.db, req.RoomID, current[req.RoomID], last)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{ev.Sender: true}
	for _, e := range append(bp.events, ap.events...) {
		senders[e.Sender] = true
	}
	entries := make([]stateEntry, 0, len(st))
	for k, e := range st {
		if req.Filter.LazyLoadMembers && k.evType == spec.MRoomMember && !senders[k.stateKey] {
			continue
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].position < entries[j].position })
	res.State = make([]clientevent.Event, 0, len(entries))
	for _, e := range entries {
		c, err := clientevent.New(e.eventID, e.json)
		if err != nil {
			return nil, err
		}
		res.State = append(res.State, c)
	}
	return res, nil
}
