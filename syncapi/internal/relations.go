package internal

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// Relation types the server aggregates (spec "Aggregations of child events").
const (
	relThread    = "m.thread"
	relReplace   = "m.replace"
	relReference = "m.reference"
)

// Limits of /relations and /threads, and how deep /relations recurses.
const (
	DefaultRelationsLimit = 5
	MaxRelationsLimit     = 100
	maxRecursionDepth     = 3
)

// clientEvents converts events to the client format, adding the transaction ID for the
// device that sent them and the bundled aggregations (unsigned.m.relations) the viewer may
// see; erased senders' events are redacted where the Erasure applies.
func (s *Syncer) clientEvents(ctx context.Context, evs []storage.Event, v *viewer) ([]clientevent.Event, error) {
	evs, err := s.redactErased(ctx, evs, v)
	if err != nil {
		return nil, err
	}
	out, err := clientEvents(evs, v)
	if err != nil {
		return nil, err
	}
	if err = s.bundle(ctx, evs, out, v); err != nil {
		return nil, err
	}
	return out, nil
}

// bundle adds unsigned.m.relations to out (the client forms of evs): m.thread (count, latest
// event, current_user_participated), m.replace (the latest edit by the original's sender,
// of its type) and m.reference (the referring event IDs). Events the viewer may not see are
// left out of them.
func (s *Syncer) bundle(ctx context.Context, evs []storage.Event, out []clientevent.Event, v *viewer) error {
	ids := make([]string, 0, len(evs))
	for i := range evs {
		if evs[i].StateKey == nil {
			ids = append(ids, evs[i].EventID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	agg, err := s.db.Aggregations(ctx, v.userID, ids)
	if err != nil {
		return fmt.Errorf("load aggregations: %w", err)
	}
	if len(agg.Threads) == 0 && len(agg.Others) == 0 {
		return nil
	}
	byID := make(map[string]*storage.Event, len(evs))
	for i := range evs {
		byID[evs[i].EventID] = &evs[i]
	}
	edits := map[string]string{}
	references := map[string][]map[string]string{}
	var load []string
	for _, r := range agg.Others {
		parent := byID[r.RelatesTo]
		switch {
		case r.RelType == relReference:
			references[r.RelatesTo] = append(references[r.RelatesTo], map[string]string{"event_id": r.EventID})
		case parent != nil && r.Sender == parent.Sender && r.EventType == parent.Type:
			edits[r.RelatesTo] = r.EventID // oldest first, so the last one wins
		}
	}
	for _, e := range edits {
		load = append(load, e)
	}
	for _, t := range agg.Threads {
		load = append(load, t.LatestEventID)
	}
	loaded, err := s.visibleClientEvents(ctx, load, v)
	if err != nil {
		return err
	}
	for i := range out {
		rel := map[string]any{}
		id := out[i].EventID
		if t, ok := agg.Threads[id]; ok {
			if latest, ok := loaded[t.LatestEventID]; ok {
				rel[relThread] = map[string]any{"latest_event": latest, "count": t.Count,
					"current_user_participated": t.Participated || out[i].Sender == v.userID}
			}
		}
		if e, ok := loaded[edits[id]]; ok {
			rel[relReplace] = e
		}
		if refs := references[id]; len(refs) > 0 {
			rel[relReference] = map[string]any{"chunk": refs}
		}
		if len(rel) > 0 {
			out[i].Unsigned = clientevent.WithUnsigned(out[i].Unsigned, map[string]any{"m.relations": rel})
		}
	}
	return nil
}

// visibleClientEvents loads events by ID and returns the client forms of those the viewer
// may see, without aggregations of their own.
func (s *Syncer) visibleClientEvents(ctx context.Context, ids []string, v *viewer) (map[string]clientevent.Event, error) {
	out := map[string]clientevent.Event{}
	if len(ids) == 0 {
		return out, nil
	}
	evs, err := s.db.EventsByID(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load related events: %w", err)
	}
	if evs, err = s.redactErased(ctx, evs, v); err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	for i := range evs {
		if !v.sees(&evs[i]) {
			continue
		}
		c, err := clientevent.New(evs[i].EventID, evs[i].JSON)
		if err != nil {
			return nil, err
		}
		c.SetAge(now)
		out[evs[i].EventID] = c
	}
	return out, nil
}

// RelationsRequest is a parsed GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
type RelationsRequest struct {
	UserID    string
	DeviceID  string
	RoomID    string
	EventID   string
	RelType   string
	EventType string
	From      *types.StreamToken
	To        *types.StreamToken
	Backward  bool
	Limit     int
	Recurse   bool
}

// RelationsResponse is the body of /relations.
type RelationsResponse struct {
	Chunk          []clientevent.Event `json:"chunk"`
	NextBatch      string              `json:"next_batch,omitempty"`
	PrevBatch      string              `json:"prev_batch,omitempty"`
	RecursionDepth int                 `json:"recursion_depth,omitempty"`
}

// Relations pages through the events that relate to an event the user may see (404
// otherwise), with Recurse also those relating to them, up to maxRecursionDepth.
func (s *Syncer) Relations(ctx context.Context, req *RelationsRequest) (*RelationsResponse, error) {
	v, _, err := s.roomViewer(ctx, req.UserID, req.DeviceID, req.RoomID)
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
	parents, depth := []string{req.EventID}, 1
	if req.Recurse {
		if parents, depth, err = s.relationTree(ctx, req.RoomID, req.EventID); err != nil {
			return nil, err
		}
	}
	q := &storage.RelationsQuery{RoomID: req.RoomID, Parents: parents, RelType: req.RelType, EventType: req.EventType,
		After: math.MinInt64, Before: math.MaxInt64, Backward: req.Backward, Limit: req.Limit + 1}
	if req.From != nil {
		if req.Backward {
			q.Before = req.From.Position
		} else {
			q.After = req.From.Position
		}
	}
	if req.To != nil {
		if req.Backward {
			q.After = req.To.Position
		} else {
			q.Before = req.To.Position
		}
	}
	rels, err := s.db.Relations(ctx, q)
	if err != nil {
		return nil, err
	}
	res := &RelationsResponse{}
	if req.Recurse {
		res.RecursionDepth = depth
	}
	if len(rels) > req.Limit {
		rels = rels[:req.Limit]
		res.NextBatch = types.StreamToken{Position: rels[len(rels)-1].Position}.String()
	}
	if req.From != nil {
		res.PrevBatch = req.From.String()
	}
	if res.Chunk, err = s.relatedEvents(ctx, rels, v); err != nil {
		return nil, err
	}
	return res, nil
}

// relationTree is the event and the events relating to it, directly or through others,
// such that relations up to maxRecursionDepth levels below the event relate to one of
// them, and the deepest level holding a relation.
func (s *Syncer) relationTree(ctx context.Context, roomID, eventID string) ([]string, int, error) {
	all, level, depth := []string{eventID}, []string{eventID}, 1
	for d := 1; d <= maxRecursionDepth && len(level) > 0; d++ {
		rels, err := s.db.Relations(ctx, &storage.RelationsQuery{RoomID: roomID, Parents: level, After: math.MinInt64, Before: math.MaxInt64, Limit: maxBatch})
		if err != nil {
			return nil, 0, err
		}
		level = level[:0:0]
		for _, r := range rels {
			level = append(level, r.EventID)
		}
		if len(level) == 0 {
			break
		}
		depth = d
		if d < maxRecursionDepth {
			all = append(all, level...)
		}
	}
	return all, depth, nil
}

// relatedEvents loads the events of rels in their order and converts those the viewer may
// see, with their own aggregations.
func (s *Syncer) relatedEvents(ctx context.Context, rels []storage.Relation, v *viewer) ([]clientevent.Event, error) {
	ids := make([]string, len(rels))
	for i, r := range rels {
		ids[i] = r.EventID
	}
	evs, err := s.db.EventsByID(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load related events: %w", err)
	}
	byID := make(map[string]storage.Event, len(evs))
	for _, e := range evs {
		byID[e.EventID] = e
	}
	ordered := make([]storage.Event, 0, len(ids))
	for _, id := range ids {
		if e, ok := byID[id]; ok && v.sees(&e) {
			ordered = append(ordered, e)
		}
	}
	return s.clientEvents(ctx, ordered, v)
}

// ThreadsRequest is a parsed GET /rooms/{roomId}/threads.
type ThreadsRequest struct {
	UserID       string
	DeviceID     string
	RoomID       string
	Participated bool
	From         *types.StreamToken
	Limit        int
}

// ThreadsResponse is the body of /threads.
type ThreadsResponse struct {
	Chunk     []clientevent.Event `json:"chunk"`
	NextBatch string              `json:"next_batch,omitempty"`
}

// Threads lists the room's thread roots the user may see, the most recently active first.
func (s *Syncer) Threads(ctx context.Context, req *ThreadsRequest) (*ThreadsResponse, error) {
	v, _, err := s.roomViewer(ctx, req.UserID, req.DeviceID, req.RoomID)
	if err != nil {
		return nil, err
	}
	before := int64(math.MaxInt64)
	if req.From != nil {
		before = req.From.Position
	}
	roots, err := s.db.ThreadRoots(ctx, req.RoomID, req.UserID, req.Participated, before, req.Limit+1)
	if err != nil {
		return nil, err
	}
	res := &ThreadsResponse{}
	if len(roots) > req.Limit {
		roots = roots[:req.Limit]
		res.NextBatch = types.StreamToken{Position: roots[len(roots)-1].Latest}.String()
	}
	rels := make([]storage.Relation, len(roots))
	for i, r := range roots {
		rels[i] = storage.Relation{EventID: r.EventID}
	}
	if res.Chunk, err = s.relatedEvents(ctx, rels, v); err != nil {
		return nil, err
	}
	return res, nil
}
