package internal

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// maxCachedEvents bounds the parsed-event cache. State events used for auth (create, power
// levels, join rules, members) are the hot set.
const maxCachedEvents = 100000

// roomHead is a room's current position: stored row plus current state. It is immutable:
// the partition that owns the room replaces it after each commit.
type roomHead struct {
	room  storage.Room
	state *types.State
	// latestIDs are the event IDs of room.Latest.
	latestIDs []string
}

// cache holds room heads, parsed events and name<->NID maps. Room heads are written only by
// the room's partition worker and only after its transaction committed.
type cache struct {
	db storage.Database

	mu     sync.RWMutex
	heads  map[string]*roomHead
	events map[types.EventNID]gomatrixserverlib.PDU
	types  map[string]types.TypeNID
	keys   map[string]types.StateKeyNID
}

func newCache(db storage.Database) *cache {
	return &cache{
		db:     db,
		heads:  map[string]*roomHead{},
		events: map[types.EventNID]gomatrixserverlib.PDU{},
		types:  map[string]types.TypeNID{},
		keys:   map[string]types.StateKeyNID{},
	}
}

// head returns the room's current head, or nil if the room is unknown.
func (c *cache) head(ctx context.Context, roomID string) (*roomHead, error) {
	c.mu.RLock()
	h := c.heads[roomID]
	c.mu.RUnlock()
	if h != nil {
		return h, nil
	}
	room, err := c.db.Room(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	state, err := c.loadState(ctx, room.Snapshot)
	if err != nil {
		return nil, err
	}
	h = &roomHead{room: *room, state: state}
	if len(room.Latest) > 0 {
		evs, err := c.db.EventsByNID(ctx, room.Latest)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			h.latestIDs = append(h.latestIDs, e.EventID)
		}
	}
	c.mu.Lock()
	if cur := c.heads[roomID]; cur != nil {
		h = cur
	} else {
		c.heads[roomID] = h
	}
	c.mu.Unlock()
	return h, nil
}

// setHead installs a committed head.
func (c *cache) setHead(h *roomHead) {
	c.mu.Lock()
	c.heads[h.room.RoomID] = h
	c.mu.Unlock()
}

// loadState reads a snapshot with its blocks.
func (c *cache) loadState(ctx context.Context, nid types.SnapshotNID) (*types.State, error) {
	st := &types.State{}
	if nid == 0 {
		return st, nil
	}
	blockNIDs, err := c.db.Snapshot(ctx, nid)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %d: %w", nid, err)
	}
	var want []types.BlockNID
	for _, b := range blockNIDs {
		if b != 0 {
			want = append(want, b)
		}
	}
	blocks, err := c.db.Blocks(ctx, want)
	if err != nil {
		return nil, err
	}
	for i, b := range blockNIDs {
		if b == 0 {
			continue
		}
		entries, ok := blocks[b]
		if !ok {
			return nil, fmt.Errorf("state block %d of snapshot %d is missing", b, nid)
		}
		st.Blocks[i] = &types.Block{NID: b, Entries: entries}
	}
	return st, nil
}

// typeNIDs returns (assigning where new) the NIDs of event types.
func (c *cache) typeNIDs(ctx context.Context, names ...string) (map[string]types.TypeNID, error) {
	out := make(map[string]types.TypeNID, len(names))
	var missing []string
	c.mu.RLock()
	for _, n := range names {
		if nid, ok := c.types[n]; ok {
			out[n] = nid
		} else {
			missing = append(missing, n)
		}
	}
	c.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.db.TypeNIDs(ctx, missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	for k, v := range got {
		c.types[k] = v
		out[k] = v
	}
	c.mu.Unlock()
	return out, nil
}

// keyNIDs returns (assigning where new) the NIDs of state keys.
func (c *cache) keyNIDs(ctx context.Context, keys ...string) (map[string]types.StateKeyNID, error) {
	out := make(map[string]types.StateKeyNID, len(keys))
	var missing []string
	c.mu.RLock()
	for _, k := range keys {
		if nid, ok := c.keys[k]; ok {
			out[k] = nid
		} else {
			missing = append(missing, k)
		}
	}
	c.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.db.StateKeyNIDs(ctx, missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	for k, v := range got {
		c.keys[k] = v
		out[k] = v
	}
	c.mu.Unlock()
	return out, nil
}

// tuples converts (type, state key) pairs to numeric tuples.
func (c *cache) tuples(ctx context.Context, ts []gomatrixserverlib.StateKeyTuple) ([]types.StateTuple, error) {
	typeNames := make([]string, len(ts))
	keyNames := make([]string, len(ts))
	for i, t := range ts {
		typeNames[i], keyNames[i] = t.EventType, t.StateKey
	}
	tn, err := c.typeNIDs(ctx, typeNames...)
	if err != nil {
		return nil, err
	}
	kn, err := c.keyNIDs(ctx, keyNames...)
	if err != nil {
		return nil, err
	}
	out := make([]types.StateTuple, len(ts))
	for i, t := range ts {
		out[i] = types.StateTuple{Type: tn[t.EventType], Key: kn[t.StateKey]}
	}
	return out, nil
}

// events returns parsed events by NID, in the order asked; unknown NIDs are an error.
func (c *cache) eventsByNID(ctx context.Context, roomVersion string, nids []types.EventNID) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, len(nids))
	var missing []types.EventNID
	c.mu.RLock()
	for i, n := range nids {
		if p, ok := c.events[n]; ok {
			out[i] = p
		} else {
			missing = append(missing, n)
		}
	}
	c.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := c.db.EventsByNID(ctx, missing)
	if err != nil {
		return nil, err
	}
	loaded := make(map[types.EventNID]gomatrixserverlib.PDU, len(rows))
	for _, r := range rows {
		pdu, err := api.ParseTrusted(roomVersion, r.EventID, r.JSON, r.Redacted)
		if err != nil {
			return nil, err
		}
		loaded[r.NID] = pdu
	}
	c.mu.Lock()
	for n, p := range loaded {
		c.putLocked(n, p)
	}
	c.mu.Unlock()
	for i, n := range nids {
		if out[i] == nil {
			p, ok := loaded[n]
			if !ok {
				return nil, fmt.Errorf("event %d is missing", n)
			}
			out[i] = p
		}
	}
	return out, nil
}

// putEvent caches a parsed event.
func (c *cache) putEvent(nid types.EventNID, pdu gomatrixserverlib.PDU) {
	c.mu.Lock()
	c.putLocked(nid, pdu)
	c.mu.Unlock()
}

func (c *cache) putLocked(nid types.EventNID, pdu gomatrixserverlib.PDU) {
	if len(c.events) >= maxCachedEvents {
		// Drop an arbitrary tenth: map iteration order is random enough for a cache.
		n := 0
		for k := range c.events {
			delete(c.events, k)
			if n++; n >= maxCachedEvents/10 {
				break
			}
		}
	}
	c.events[nid] = pdu
}

// dropEvents forgets cached events whose stored form changed (redactions).
func (c *cache) dropEvents(nids []types.EventNID) {
	c.mu.Lock()
	for _, n := range nids {
		delete(c.events, n)
	}
	c.mu.Unlock()
}

// knownTuples converts (type, state key) pairs to numeric tuples without assigning NIDs
// (safe inside a write transaction). A pair whose type or key has no NID cannot be held
// by any state: it comes back as the zero tuple, which no state holds.
func (c *cache) knownTuples(ctx context.Context, ts []gomatrixserverlib.StateKeyTuple) ([]types.StateTuple, error) {
	var missingTypes, missingKeys []string
	c.mu.RLock()
	for _, t := range ts {
		if _, ok := c.types[t.EventType]; !ok {
			missingTypes = append(missingTypes, t.EventType)
		}
		if _, ok := c.keys[t.StateKey]; !ok {
			missingKeys = append(missingKeys, t.StateKey)
		}
	}
	c.mu.RUnlock()
	if len(missingTypes) > 0 {
		got, err := c.db.KnownTypeNIDs(ctx, missingTypes)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		for k, v := range got {
			c.types[k] = v
		}
		c.mu.Unlock()
	}
	if len(missingKeys) > 0 {
		got, err := c.db.KnownStateKeyNIDs(ctx, missingKeys)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		for k, v := range got {
			c.keys[k] = v
		}
		c.mu.Unlock()
	}
	out := make([]types.StateTuple, len(ts))
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i, t := range ts {
		tn, ok1 := c.types[t.EventType]
		kn, ok2 := c.keys[t.StateKey]
		if ok1 && ok2 {
			out[i] = types.StateTuple{Type: tn, Key: kn}
		}
	}
	return out, nil
}
