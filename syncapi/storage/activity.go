package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ActivityIndex keeps every room's activity (its latest event and latest bump event) in
// memory, so that ordering a user's rooms for sliding sync reads no row per room. It is
// loaded at start-up from syncapi_room_activity and brought forward on demand by reading
// only the rows that changed since it last looked (ActivitySince), which writeRoomEvent
// keeps in the transaction that stores each event: the index never misses an event a
// reader's position covers, whichever consumer wrote it and whenever it was notified.
// It is safe for concurrent use.
type ActivityIndex struct {
	db Database

	// catchUp serialises the reads that bring the index forward, so that concurrent
	// requests read each change once.
	catchUp sync.Mutex

	mu    sync.Mutex
	rooms map[string]RoomActivity
	// facts are the rooms' filter facts, each valid while the room's Last is its version.
	facts map[string]RoomFacts
	// upTo is a committed position the index covers: every event at or before it is in
	// rooms (later ones may be too).
	upTo int64
}

// NewActivityIndex loads every room's activity from db.
func NewActivityIndex(ctx context.Context, db Database) (*ActivityIndex, error) {
	x := &ActivityIndex{db: db, rooms: map[string]RoomActivity{}, facts: map[string]RoomFacts{}}
	top, err := db.MaxPosition(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream position: %w", err)
	}
	if err = x.advance(ctx, 0, top); err != nil {
		return nil, err
	}
	return x, nil
}

// Rooms returns the activity of roomIDs (rooms without events are left out) covering at
// least every event up to upTo, a committed position; it may include later events.
func (x *ActivityIndex) Rooms(ctx context.Context, roomIDs []string, upTo int64) (map[string]RoomActivity, error) {
	if err := x.cover(ctx, upTo); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[string]RoomActivity, len(roomIDs))
	for _, id := range roomIDs {
		if a, ok := x.rooms[id]; ok {
			out[id] = a
		}
	}
	return out, nil
}

// cover brings the index up to upTo when it is behind.
func (x *ActivityIndex) cover(ctx context.Context, upTo int64) error {
	x.mu.Lock()
	after := x.upTo
	x.mu.Unlock()
	if after >= upTo {
		return nil
	}
	x.catchUp.Lock()
	defer x.catchUp.Unlock()
	x.mu.Lock()
	after = x.upTo
	x.mu.Unlock()
	if after >= upTo {
		return nil
	}
	return x.advance(ctx, after, upTo)
}

// advance reads the rooms whose activity moved past after and records the index as
// covering upTo. Every position up to upTo is committed, so the rows read include every
// event up to it; rows moved by later events carry those too, and merging keeps the
// highest position, so a row read twice or late changes nothing.
func (x *ActivityIndex) advance(ctx context.Context, after, upTo int64) error {
	changed, err := x.db.ActivitySince(ctx, after)
	if err != nil {
		return fmt.Errorf("read room activity: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for roomID, a := range changed {
		old := x.rooms[roomID]
		x.rooms[roomID] = RoomActivity{Last: max(old.Last, a.Last), Bump: max(old.Bump, a.Bump)}
	}
	x.upTo = max(x.upTo, upTo)
	return nil
}

// RoomFacts are what sliding sync's filters read of a room's state: the type in its
// create event (nil for none) and whether it has an m.room.encryption event.
type RoomFacts struct {
	Type      *string
	Encrypted bool
	// version is the room's latest event position when the facts were read.
	version int64
}

// Facts returns the facts of roomIDs covering at least every event up to upTo. They are
// read from the rooms' state only for rooms never read or with events since they were
// read (every state change comes with an event, which moves the room's activity), so a
// request reads state for the rooms that changed, not for every room of the user.
func (x *ActivityIndex) Facts(ctx context.Context, roomIDs []string, upTo int64) (map[string]RoomFacts, error) {
	if err := x.cover(ctx, upTo); err != nil {
		return nil, err
	}
	out := make(map[string]RoomFacts, len(roomIDs))
	versions := map[string]int64{}
	var missing []string
	x.mu.Lock()
	for _, id := range roomIDs {
		v := x.rooms[id].Last
		if f, ok := x.facts[id]; ok && f.version == v {
			out[id] = f
			continue
		}
		versions[id] = v
		missing = append(missing, id)
	}
	x.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	// The versions were taken before the state is read, so the state read covers them;
	// a room that moves meanwhile has a newer Last and is read again next time.
	state, err := x.db.StateOfTypes(ctx, missing, []string{spec.MRoomCreate, "m.room.encryption"})
	if err != nil {
		return nil, fmt.Errorf("read room types: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range missing {
		f := factsOf(state[id])
		f.version = versions[id]
		x.facts[id] = f
		out[id] = f
	}
	return out, nil
}

// factsOf reads the facts from a room's create and encryption events.
func factsOf(state []StateEvent) RoomFacts {
	var f RoomFacts
	for _, e := range state {
		switch e.Type {
		case "m.room.encryption":
			f.Encrypted = true
		case spec.MRoomCreate:
			var ev struct {
				Content struct {
					Type *string `json:"type"`
				} `json:"content"`
			}
			if json.Unmarshal(e.JSON, &ev) == nil {
				f.Type = ev.Content.Type
			}
		}
	}
	return f
}
