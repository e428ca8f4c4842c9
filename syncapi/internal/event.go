package internal

import (
	"context"
	"fmt"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Event is one event of a room for GET /rooms/{roomId}/event/{eventId}, with the bundled
// aggregations the user may see. The history visibility rules decide as for /messages,
// except that a user who was never in the room still sees world-readable events; an event
// the user may not see is 404, like an unknown one.
func (s *Syncer) Event(ctx context.Context, userID, deviceID, roomID, eventID string) (*clientevent.Event, error) {
	to, err := s.db.MaxPosition(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream position: %w", err)
	}
	changes, err := s.db.MembershipHistory(ctx, userID, to)
	if err != nil {
		return nil, fmt.Errorf("load memberships: %w", err)
	}
	v := &viewer{userID: userID, deviceID: deviceID, history: changes.Room(roomID)}
	if len(v.history) > 0 {
		v.current = v.history.latest().Membership
	}
	found, err := s.db.EventsByID(ctx, []string{eventID})
	if err != nil {
		return nil, fmt.Errorf("load event %s: %w", eventID, err)
	}
	if len(found) == 0 || found[0].RoomID != roomID || !v.sees(&found[0]) {
		return nil, matrixerr.NotFound("event not found")
	}
	out, err := s.clientEvents(ctx, found[:1], v)
	if err != nil {
		return nil, err
	}
	return &out[0], nil
}
