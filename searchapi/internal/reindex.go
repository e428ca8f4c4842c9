package internal

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/searchapi/consumer"
	"github.com/matrix-org/dendrite/searchapi/storage"
)

// Reindexer rebuilds the index from the roomserver's stored timelines: what the search
// reader missed because it was added to a server that had history already, or because its
// database was wiped (the log and the outbox keep records only for a while).
type Reindexer struct {
	DB     storage.Database
	SQL    *sqlutil.DB
	Rooms  rsapi.TimelineAPI
	Logger *logrus.Entry
}

// ReindexStats count what a Reindex walked.
type ReindexStats struct {
	Rooms  int
	Events int
}

// Reindex walks every room the roomserver stores, newest event first, and stores the
// events the index lacks with the reader's own code (consumer.Indexable): messages, names
// and topics get their text indexed, redacted events none, and text indexed before a
// redaction is removed. Rejected and soft-failed events, which readers are never given,
// are skipped. An event already stored keeps its place, so a second run changes nothing.
//
// Events the index lacks are placed below everything the room has in the index, as the
// reader places backfilled events: newest first, each before the previous. That is their
// true order when the index misses a room's oldest history, the case this is for; it runs
// while the search reader is stopped, so that the reader places new events itself.
func (r *Reindexer) Reindex(ctx context.Context) (ReindexStats, error) {
	var stats ReindexStats
	after := ""
	for {
		res, err := r.Rooms.QueryRooms(ctx, &rsapi.QueryRoomsRequest{AfterRoomID: after})
		if err != nil {
			return stats, fmt.Errorf("list rooms after %q: %w", after, err)
		}
		for _, roomID := range res.RoomIDs {
			n, err := r.room(ctx, roomID)
			if err != nil {
				return stats, err
			}
			stats.Rooms++
			stats.Events += n
			r.Logger.WithFields(logrus.Fields{"room_id": roomID, "events": n}).Debug("room reindexed")
		}
		if len(res.RoomIDs) < rsapi.TimelinePage(0) {
			return stats, nil
		}
		after = res.RoomIDs[len(res.RoomIDs)-1]
	}
}

// room reindexes one room, a page per transaction, and returns how many events it walked.
func (r *Reindexer) room(ctx context.Context, roomID string) (int, error) {
	n := 0
	before := int64(0)
	for {
		page, err := r.Rooms.QueryRoomEvents(ctx, &rsapi.QueryRoomEventsRequest{RoomID: roomID, BeforeNID: before})
		if err != nil {
			return n, fmt.Errorf("read timeline of %s: %w", roomID, err)
		}
		err = r.SQL.WithTx(ctx, func(tx *sql.Tx) error { return r.store(ctx, tx, roomID, page.Events) })
		if err != nil {
			return n, fmt.Errorf("reindex %s: %w", roomID, err)
		}
		n += len(page.Events)
		if page.NextBeforeNID == 0 {
			return n, nil
		}
		before = page.NextBeforeNID
	}
}

// store adds a page of the room's events, newest first, below the room's lowest position.
func (r *Reindexer) store(ctx context.Context, tx *sql.Tx, roomID string, page []rsapi.TimelineEvent) error {
	pos, err := r.DB.LowestPos(ctx, tx, roomID)
	if err != nil {
		return err
	}
	pos = min(pos, 0)
	var evs []storage.Event
	var redacted []string
	for _, te := range page {
		if te.Event == nil {
			continue
		}
		pos--
		evs = append(evs, consumer.Indexable(te.Event.PDU, pos))
		if te.Redacted {
			redacted = append(redacted, te.EventID)
		}
	}
	if err := r.DB.StoreEvents(ctx, tx, evs); err != nil {
		return err
	}
	for _, id := range redacted {
		if err := r.DB.Redact(ctx, tx, id); err != nil {
			return err
		}
	}
	return nil
}
