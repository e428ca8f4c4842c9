package internal

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// roomHead is a room's current position: stored row plus current state. It is immutable:
// the partition that owns the room replaces it after each commit.
type roomHead struct {
	room  storage.Room
	state *types.State
	// latestIDs are the event IDs of room.Latest.
	latestIDs []string
}

// cache holds room heads, parsed state events and name<->NID maps. Room heads are written
// only by the room's partition worker and only after its transaction committed; they are
// what the input path cannot work without, one per room, and are not evicted. The rest is
// bounded in bytes (CacheBytes): parsed state events, the hot set of auth checks and state
// queries (message events are parsed again when asked for: readers keep their own copies),
// and the type and state-key NIDs, which never change once assigned.
type cache struct {
	db storage.Database

	mu    sync.RWMutex
	heads map[string]*roomHead

	events *caching.Cache[types.EventNID, gomatrixserverlib.PDU]
	types  *caching.Cache[string, types.TypeNID]
	keys   *caching.Cache[string, types.StateKeyNID]
}

// Shares of the process's cache budget (global.cache.max_bytes) the roomserver takes.
const (
	eventsCacheShare = 0.5
	nidCacheShare    = 0.0625
)

func newCache(db storage.Database, budget caching.Budget, reg prometheus.Registerer) *cache {
	nameCost := func(name string, _ types.TypeNID) int { return len(name) + 16 }
	keyCost := func(key string, _ types.StateKeyNID) int { return len(key) + 16 }
	return &cache{
		db:     db,
		heads:  map[string]*roomHead{},
		events: caching.New("roomserver_state_events", budget.Share(eventsCacheShare), eventCost, reg),
		types:  caching.New("roomserver_event_type_nids", budget.Share(nidCacheShare), nameCost, reg),
		keys:   caching.New("roomserver_state_key_nids", budget.Share(nidCacheShare), keyCost, reg),
	}
}

// eventCost estimates what a parsed event keeps in memory: its JSON, and about as much
// again in the fields parsed out of it (content, unsigned, prev and auth event IDs).
func eventCost(_ types.EventNID, pdu gomatrixserverlib.PDU) int {
	return 2*len(pdu.JSON()) + 256
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
	for _, n := range names {
		if nid, ok := c.types.Get(n); ok {
			out[n] = nid
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.db.TypeNIDs(ctx, missing)
	if err != nil {
		return nil, err
	}
	for k, v := range got {
		c.types.Put(k, v)
		out[k] = v
	}
	return out, nil
}

// keyNIDs returns (assigning where new) the NIDs of state keys.
func (c *cache) keyNIDs(ctx context.Context, keys ...string) (map[string]types.StateKeyNID, error) {
	out := make(map[string]types.StateKeyNID, len(keys))
	var missing []string
	for _, k := range keys {
		if nid, ok := c.keys.Get(k); ok {
			out[k] = nid
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.db.StateKeyNIDs(ctx, missing)
	if err != nil {
		return nil, err
	}
	for k, v := range got {
		c.keys.Put(k, v)
		out[k] = v
	}
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

// eventsByNID returns parsed events by NID, in the order asked; unknown NIDs are an error.
func (c *cache) eventsByNID(ctx context.Context, roomVersion string, nids []types.EventNID) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, len(nids))
	var missing []types.EventNID
	for i, n := range nids {
		if p, ok := c.events.Get(n); ok {
			out[i] = p
		} else {
			missing = append(missing, n)
		}
	}
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
		c.putEvent(r.NID, pdu)
	}
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

// putEvent caches a parsed event if it is a state event; other events are not kept.
func (c *cache) putEvent(nid types.EventNID, pdu gomatrixserverlib.PDU) {
	if pdu.StateKey() != nil {
		c.events.Put(nid, pdu)
	}
}

// dropEvents forgets cached events whose stored form changed (redactions).
func (c *cache) dropEvents(nids []types.EventNID) {
	for _, n := range nids {
		c.events.Delete(n)
	}
}

// knownTuples converts (type, state key) pairs to numeric tuples without assigning NIDs
// (safe inside a write transaction). A pair whose type or key has no NID cannot be held
// by any state: it comes back as the zero tuple, which no state holds.
func (c *cache) knownTuples(ctx context.Context, ts []gomatrixserverlib.StateKeyTuple) ([]types.StateTuple, error) {
	typeNIDs := make(map[string]types.TypeNID, len(ts))
	keyNIDs := make(map[string]types.StateKeyNID, len(ts))
	var missingTypes, missingKeys []string
	for _, t := range ts {
		if nid, ok := c.types.Get(t.EventType); ok {
			typeNIDs[t.EventType] = nid
		} else {
			missingTypes = append(missingTypes, t.EventType)
		}
		if nid, ok := c.keys.Get(t.StateKey); ok {
			keyNIDs[t.StateKey] = nid
		} else {
			missingKeys = append(missingKeys, t.StateKey)
		}
	}
	if len(missingTypes) > 0 {
		got, err := c.db.KnownTypeNIDs(ctx, missingTypes)
		if err != nil {
			return nil, err
		}
		for k, v := range got {
			c.types.Put(k, v)
			typeNIDs[k] = v
		}
	}
	if len(missingKeys) > 0 {
		got, err := c.db.KnownStateKeyNIDs(ctx, missingKeys)
		if err != nil {
			return nil, err
		}
		for k, v := range got {
			c.keys.Put(k, v)
			keyNIDs[k] = v
		}
	}
	out := make([]types.StateTuple, len(ts))
	for i, t := range ts {
		tn, ok1 := typeNIDs[t.EventType]
		kn, ok2 := keyNIDs[t.StateKey]
		if ok1 && ok2 {
			out[i] = types.StateTuple{Type: tn, Key: kn}
		}
	}
	return out, nil
}
