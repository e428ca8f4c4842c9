package internal

import (
	"context"
	"fmt"
	"math"
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
}

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
	servers, err := b.servers(ctx, db, roomID, first.Sender)
	if err != nil || len(servers) == 0 {
		return 0, err
	}
	limit := b.Limit
	if limit <= 0 {
		limit = 100
	}
	res, err := b.API.PerformBackfill(ctx, &fapi.PerformBackfillRequest{RoomID: roomID, EventIDs: []string{first.EventID}, Limit: limit, ServerNames: servers})
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
