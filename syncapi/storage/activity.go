package storage

import (
	"context"
	"fmt"
	"sync"
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
	// upTo is a committed position the index covers: every event at or before it is in
	// rooms (later ones may be too).
	upTo int64
}

// NewActivityIndex loads every room's activity from db.
func NewActivityIndex(ctx context.Context, db Database) (*ActivityIndex, error) {
	x := &ActivityIndex{db: db, rooms: map[string]RoomActivity{}}
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
