package internal

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// MessagesRequest is a parsed GET /rooms/{roomId}/messages.
type MessagesRequest struct {
	UserID   string
	DeviceID string
	RoomID   string
	// From and To are optional; From defaults to the end for a backward walk and to the
	// start for a forward one.
	From     *types.StreamToken
	To       *types.StreamToken
	Backward bool
	Limit    int
	Filter   *types.RoomEventFilter
}

// roomViewer loads the user's membership history in a room. A user who was never in the
// room reads it only while its history is world readable (they then see the events sent
// under world_readable visibility); otherwise 403.
func (s *Syncer) roomViewer(ctx context.Context, userID, deviceID, roomID string) (*viewer, int64, error) {
	to, err := s.db.MaxPosition(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read stream position: %w", err)
	}
	changes, err := s.db.MembershipHistory(ctx, userID, to)
	if err != nil {
		return nil, 0, fmt.Errorf("load memberships: %w", err)
	}
	h := memberHistory(changes.Room(roomID))
	if len(h) > 0 {
		return &viewer{userID: userID, deviceID: deviceID, history: h, current: h.latest().Membership}, to, nil
	}
	open, err := s.worldReadable(ctx, roomID)
	if err != nil {
		return nil, 0, err
	}
	if !open {
		return nil, 0, matrixerr.Forbidden("you are not a member of this room")
	}
	return &viewer{userID: userID, deviceID: deviceID}, to, nil
}

// worldReadable reports whether the room's current history visibility is world_readable.
func (s *Syncer) worldReadable(ctx context.Context, roomID string) (bool, error) {
	current, err := s.db.CurrentState(ctx, []string{roomID})
	if err != nil {
		return false, fmt.Errorf("load state of %s: %w", roomID, err)
	}
	for _, e := range current[roomID] {
		if e.Type != spec.MRoomHistoryVisibility || e.StateKey != "" {
			continue
		}
		var ev struct {
			Content struct {
				HistoryVisibility any `json:"history_visibility"`
			} `json:"content"`
		}
		if err := json.Unmarshal(e.JSON, &ev); err != nil {
			return false, fmt.Errorf("parse %s: %w", e.EventID, err)
		}
		return ev.Content.HistoryVisibility == visWorldReadable, nil
	}
	return false, nil
}

// Messages pages through a room's events by stream position. Tokens are exact cursors, so
// consecutive pages neither repeat nor skip events, whatever their DAG depths.
func (s *Syncer) Messages(ctx context.Context, req *MessagesRequest) (*types.MessagesResponse, error) {
	v, max, err := s.roomViewer(ctx, req.UserID, req.DeviceID, req.RoomID)
	if err != nil {
		return nil, err
	}
	// Past a user's departure nothing is visible to them (their own leave aside): stop there
	// instead of walking the events that follow. A user who was never in the room (reading
	// a world-readable one) has no departure: the visibility of each event decides.
	limitPos := max
	if len(v.history) > 0 && v.current != spec.Join && v.current != spec.Invite {
		limitPos = v.history.latest().Position
	}
	from, bound := types.HistoryStart, limitPos
	if req.Backward {
		from, bound = limitPos, types.HistoryStart
	}
	if req.From != nil {
		from = req.From.Position
	}
	if req.To != nil {
		bound = req.To.Position
	}
	if req.Backward {
		from = min(from, limitPos)
	} else {
		bound = min(bound, limitPos)
	}
	pg, err := walk(ctx, s.db, req.RoomID, v, &req.Filter.EventFilter, req.Backward, from, bound, req.Limit)
	if err != nil {
		return nil, err
	}
	if req.Backward {
		filled, err := s.fillGaps(ctx, req.RoomID, from, pg)
		if err != nil {
			return nil, err
		}
		if filled {
			if pg, err = walk(ctx, s.db, req.RoomID, v, &req.Filter.EventFilter, req.Backward, from, bound, req.Limit); err != nil {
				return nil, err
			}
		}
	}
	if req.Backward && req.To == nil {
		if pg, err = s.backfillPage(ctx, req, v, pg); err != nil {
			return nil, err
		}
	}
	chunk, err := s.clientEvents(ctx, pg.events, v)
	if err != nil {
		return nil, err
	}
	res := &types.MessagesResponse{Start: types.StreamToken{Position: from}.String(), Chunk: chunk}
	// Walking forward, the room goes on after its newest event: a page with events gets an
	// end to continue from, as Synapse answers, even when no more events exist yet.
	if pg.more || !req.Backward && len(pg.events) > 0 {
		res.End = types.StreamToken{Position: pg.next}.String()
	}
	if req.Filter.LazyLoadMembers && len(pg.events) > 0 {
		if res.State, err = s.lazyMembers(ctx, req.RoomID, pg.events, max); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// lazyMembers is the membership, at position pos, of the senders of evs.
func (s *Syncer) lazyMembers(ctx context.Context, roomID string, evs []storage.Event, pos int64) ([]clientevent.Event, error) {
	current, err := s.db.CurrentState(ctx, []string{roomID})
	if err != nil {
		return nil, fmt.Errorf("load state of %s: %w", roomID, err)
	}
	st, err := stateAt(ctx, s.db, roomID, current[roomID], pos)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []clientevent.Event{}
	for _, e := range evs {
		m, ok := st[stateKey{spec.MRoomMember, e.Sender}]
		if !ok || seen[e.Sender] {
			continue
		}
		seen[e.Sender] = true
		c, err := clientevent.New(m.eventID, m.json)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
