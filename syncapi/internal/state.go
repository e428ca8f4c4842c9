package internal

import (
	"context"
	"fmt"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// stateKey names one piece of state.
type stateKey struct{ evType, stateKey string }

// stateEntry is a piece of room state with the position at which it took effect.
type stateEntry struct {
	eventID  string
	position int64
	evType   string
	stateKey string
	sender   string
	json     []byte
}

type roomState map[stateKey]stateEntry

func fromCurrent(rows []storage.StateEvent) roomState {
	st := make(roomState, len(rows))
	for _, r := range rows {
		st[stateKey{r.Type, r.StateKey}] = stateEntry{eventID: r.EventID, position: r.Position, evType: r.Type, stateKey: r.StateKey, json: r.JSON}
	}
	return st
}

func entryFromEvent(e *storage.Event) stateEntry {
	return stateEntry{eventID: e.EventID, position: e.Position, evType: e.Type, stateKey: *e.StateKey, sender: e.Sender, json: e.JSON}
}

// stateAt rolls a room's current state back to position pos: every state event after pos
// that is current is replaced by the event it replaced, newest first. Nothing is queried
// when no current entry is newer than pos, which is the common case.
func stateAt(ctx context.Context, db storage.Database, roomID string, current []storage.StateEvent, pos int64) (roomState, error) {
	st := fromCurrent(current)
	newer := false
	for _, e := range st {
		if e.position > pos {
			newer = true
			break
		}
	}
	if !newer {
		return st, nil
	}
	after, err := db.StateEventsAfter(ctx, roomID, pos)
	if err != nil {
		return nil, fmt.Errorf("load state changes of %s: %w", roomID, err)
	}
	byID := make(map[string]*storage.Event, len(after))
	for i := range after {
		byID[after[i].EventID] = &after[i]
	}
	final := map[stateKey]string{}
	for _, e := range after {
		k := stateKey{e.Type, *e.StateKey}
		cur, ok := final[k]
		if !ok {
			cur = st[k].eventID
		}
		if cur == e.EventID {
			final[k] = e.Replaces
		}
	}
	var fetch []string
	for k, id := range final {
		switch {
		case id == "":
			delete(st, k)
		case byID[id] != nil:
			st[k] = entryFromEvent(byID[id])
		default:
			delete(st, k) // filled again below when the replaced event is stored
			fetch = append(fetch, id)
		}
	}
	if len(fetch) == 0 {
		return st, nil
	}
	evs, err := db.EventsByID(ctx, fetch)
	if err != nil {
		return nil, fmt.Errorf("load earlier state of %s: %w", roomID, err)
	}
	for i := range evs {
		st[stateKey{evs[i].Type, *evs[i].StateKey}] = entryFromEvent(&evs[i])
	}
	return st, nil
}
