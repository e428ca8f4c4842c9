package internal

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Peek starts the device's peek into a room (MSC2753): from its next /sync on, the room is
// in rooms.peek with its timeline and state, like a joined room, until the user joins it,
// leaves it (or is kicked or banned: any leave or ban membership event) or ends the peek
// with Unpeek. Only a room this server is in, and whose history is
// world_readable, can be peeked into: 404 M_NOT_FOUND for one it does not know,
// 403 M_FORBIDDEN for any other history visibility.
func (s *Syncer) Peek(ctx context.Context, userID, deviceID, roomID string) error {
	current, err := s.db.StateOfTypes(ctx, []string{roomID}, []string{spec.MRoomCreate, spec.MRoomHistoryVisibility})
	if err != nil {
		return fmt.Errorf("load history visibility of %s: %w", roomID, err)
	}
	if len(current[roomID]) == 0 {
		return matrixerr.NotFound("this server does not know that room")
	}
	visibility := visShared
	for _, st := range current[roomID] {
		if st.Type != spec.MRoomHistoryVisibility || st.StateKey != "" {
			continue
		}
		var ev struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		if json.Unmarshal(st.JSON, &ev) == nil && ev.Content.HistoryVisibility != "" {
			visibility = ev.Content.HistoryVisibility
		}
	}
	if visibility != visWorldReadable {
		return matrixerr.Forbidden("only rooms whose history is world_readable can be peeked into")
	}
	applied, err := s.db.WritePeek(ctx, userID, deviceID, roomID)
	if err != nil {
		return fmt.Errorf("store peek into %s: %w", roomID, err)
	}
	s.notifier.Notify(applied)
	return nil
}

// Unpeek ends the device's peek into a room (MSC2753's /unpeek); from its next /sync on,
// the room is no longer in rooms.peek. Ending a peek that is not there is not an error;
// ended reports whether there was one.
func (s *Syncer) Unpeek(ctx context.Context, userID, deviceID, roomID string) (ended bool, err error) {
	if ended, err = s.db.DeletePeek(ctx, userID, deviceID, roomID); err != nil {
		return false, fmt.Errorf("end peek into %s: %w", roomID, err)
	}
	return ended, nil
}
