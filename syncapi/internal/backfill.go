package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// Backfill is how /messages pages back past the start of the history this server has (a
// room joined over federation starts at the join): it asks the federationapi to fetch older
// events from the room's other servers; the roomserver places them and outputs them as
// backfilled events, which the consumer stores below everything else; then the walk goes on.
type Backfill struct {
	API        fapi.SyncFederationAPI
	ServerName string
	// Limit is how many events one backfill asks for (100 when 0).
	Limit int
	// Wait bounds how long a request waits for the consumer to store what was fetched
	// (10 s when 0).
	Wait   time.Duration
	Logger *logrus.Entry

	// mu guards tried: the events whose missing prev_events were already asked for, so
	// that a gap the room's servers cannot fill costs one backfill, not one per request.
	mu    sync.Mutex
	tried map[string]bool
}

// maxTriedGaps bounds Backfill.tried; past it the set starts again.
const maxTriedGaps = 10000

// maxBackfillRounds bounds the backfills one /messages request makes to fill its page.
const maxBackfillRounds = 3

// backfillPage extends a backward page that reached the start of the stored history with
// events fetched from other servers, as long as the page is not full and something new
// arrives. A page that ends at the start of the stored history keeps an end token when
// older history may be on other servers (the stored history does not begin with the create
// event, and the last backfill brought something or was not needed to fill the page): the
// client's next request asks for it. A backfill that brings nothing ends the pagination.
func (s *Syncer) backfillPage(ctx context.Context, req *MessagesRequest, v *viewer, pg page) (page, error) {
	if s.backfill == nil || pg.more {
		return pg, nil
	}
	tried, fetched := false, false
	for round := 0; round < maxBackfillRounds && len(pg.events) < req.Limit && !pg.more; round++ {
		n, err := s.backfill.room(ctx, s.db, req.RoomID)
		if err != nil {
			return pg, err
		}
		tried, fetched = true, n > 0
		if !fetched {
			break
		}
		more, err := walk(ctx, s.db, req.RoomID, v, &req.Filter.EventFilter, true, pg.next, types.HistoryStart, req.Limit-len(pg.events))
		if err != nil {
			return pg, err
		}
		pg.events = append(pg.events, more.events...)
		pg.next, pg.more = more.next, more.more
	}
	if pg.more || (tried && !fetched) {
		return pg, nil
	}
	first, err := earliest(ctx, s.db, req.RoomID)
	if err != nil {
		return pg, err
	}
	pg.more = first != nil && first.Type != spec.MRoomCreate
	return pg, nil
}

// fillGaps backfills at the holes in the stored history that a backward page meets: the
// event the page starts below (the oldest the client holds) and the page's events whose
// prev_events this server does not have, such as an event received over federation whose
// predecessors could not be fetched then. The room's earliest stored event is left to
// backfillPage (the history before a join over federation). Each hole is asked for once;
// the events fetched are stored as backfilled history. It reports whether any arrived.
func (s *Syncer) fillGaps(ctx context.Context, roomID string, from int64, pg page) (bool, error) {
	if s.backfill == nil {
		return false, nil
	}
	above, err := s.db.RoomEvents(ctx, roomID, storage.Range{After: from, UpTo: math.MaxInt64, Limit: 1})
	if err != nil {
		return false, fmt.Errorf("read the event above %d in %s: %w", from, roomID, err)
	}
	first, err := earliest(ctx, s.db, roomID)
	if err != nil || first == nil {
		return false, err
	}
	gaps, sender, err := s.backfill.untriedGaps(ctx, s.db, append(above, pg.events...), first.EventID)
	if err != nil || len(gaps) == 0 {
		return false, err
	}
	n, err := s.backfill.fetch(ctx, s.db, roomID, gaps, sender)
	return n > 0, err
}

// untriedGaps are the events of evs (but the room's earliest, first) with a prev_event
// stored in no room here, not asked for before; sender is the sender of the first of them.
func (b *Backfill) untriedGaps(ctx context.Context, db storage.Database, evs []storage.Event, first string) ([]string, string, error) {
	prevs := map[string][]string{}
	var all []string
	for _, e := range evs {
		if e.EventID == first || b.wasTried(e.EventID) {
			continue
		}
		var pdu struct {
			PrevEvents []json.RawMessage `json:"prev_events"`
		}
		if json.Unmarshal(e.JSON, &pdu) != nil {
			continue
		}
		for _, raw := range pdu.PrevEvents {
			if id := prevEventID(raw); id != "" {
				prevs[e.EventID] = append(prevs[e.EventID], id)
				all = append(all, id)
			}
		}
	}
	if len(all) == 0 {
		return nil, "", nil
	}
	stored, err := db.EventsByID(ctx, all)
	if err != nil {
		return nil, "", fmt.Errorf("read prev_events: %w", err)
	}
	have := make(map[string]bool, len(stored))
	for _, e := range stored {
		have[e.EventID] = true
	}
	var gaps []string
	sender := ""
	for _, e := range evs {
		for _, p := range prevs[e.EventID] {
			if !have[p] {
				if sender == "" {
					sender = e.Sender
				}
				gaps = append(gaps, e.EventID)
				break
			}
		}
	}
	b.markTried(gaps)
	return gaps, sender, nil
}

// prevEventID is a prev_events entry's event ID: a string from room version 3, an
// [id, hashes] pair before.
func prevEventID(raw json.RawMessage) string {
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var pair []json.RawMessage
	if json.Unmarshal(raw, &pair) == nil && len(pair) > 0 && json.Unmarshal(pair[0], &id) == nil {
		return id
	}
	return ""
}

func (b *Backfill) wasTried(eventID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tried[eventID]
}

func (b *Backfill) markTried(eventIDs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tried == nil || len(b.tried)+len(eventIDs) > maxTriedGaps {
		b.tried = map[string]bool{}
	}
	for _, id := range eventIDs {
		b.tried[id] = true
	}
}

// earliest is the room's stored event with the lowest position (nil when none).
func earliest(ctx context.Context, db storage.Database, roomID string) (*storage.Event, error) {
	first, err := db.RoomEvents(ctx, roomID, storage.Range{After: types.HistoryStart, UpTo: math.MaxInt64, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("read the earliest event of %s: %w", roomID, err)
	}
	if len(first) == 0 {
		return nil, nil
	}
	return &first[0], nil
}

// room backfills a room from its earliest stored event and waits until the consumer has
// stored what arrived. It returns how many events arrived. Failing servers are not an
// error for the client: it gets the history there is.
func (b *Backfill) room(ctx context.Context, db storage.Database, roomID string) (int, error) {
	first, err := earliest(ctx, db, roomID)
	if err != nil || first == nil || first.Type == spec.MRoomCreate {
		return 0, err
	}
	return b.fetch(ctx, db, roomID, []string{first.EventID}, first.Sender)
}

// fetch backfills the history before eventIDs from the room's other servers (sender's
// first) and waits until the consumer has stored what arrived; it returns how many events
// arrived.
func (b *Backfill) fetch(ctx context.Context, db storage.Database, roomID string, eventIDs []string, sender string) (int, error) {
	servers, err := b.servers(ctx, db, roomID, sender)
	if err != nil || len(servers) == 0 {
		return 0, err
	}
	limit := b.Limit
	if limit <= 0 {
		limit = 100
	}
	res, err := b.API.PerformBackfill(ctx, &fapi.PerformBackfillRequest{RoomID: roomID, EventIDs: eventIDs, Limit: limit, ServerNames: servers})
	if err != nil {
		b.Logger.WithError(err).WithField("room_id", roomID).Warn("backfill failed")
		return 0, nil
	}
	if len(res.EventIDs) == 0 {
		return 0, nil
	}
	return len(res.EventIDs), b.waitStored(ctx, db, res.EventIDs)
}

// servers are the other servers with joined members in the room, the server of the
// earliest event's sender first (it was there then).
func (b *Backfill) servers(ctx context.Context, db storage.Database, roomID, sender string) ([]string, error) {
	current, err := db.CurrentState(ctx, []string{roomID})
	if err != nil {
		return nil, fmt.Errorf("load state of %s: %w", roomID, err)
	}
	var out []string
	seen := map[string]bool{b.ServerName: true}
	add := func(userID string) {
		u, err := spec.NewUserID(userID, true)
		if err == nil && !seen[string(u.Domain())] {
			seen[string(u.Domain())] = true
			out = append(out, string(u.Domain()))
		}
	}
	add(sender)
	for _, e := range current[roomID] {
		if e.Type == spec.MRoomMember && e.Membership == spec.Join {
			add(e.StateKey)
		}
	}
	return out, nil
}

// waitStored polls, with a deadline, until every event of ids is stored: the consumer
// stores them from the roomserver's output, which the backfill only waited to be written.
func (b *Backfill) waitStored(ctx context.Context, db storage.Database, ids []string) error {
	wait := b.Wait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	pause := 10 * time.Millisecond
	for {
		got, err := db.EventsByID(ctx, ids)
		if err != nil {
			return fmt.Errorf("read backfilled events: %w", err)
		}
		if len(got) >= len(ids) || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, 200*time.Millisecond)
	}
}
