package internal

import (
	"context"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// viewer is who reads a room: the user, their device and their membership history there.
type viewer struct {
	userID   string
	deviceID string
	history  memberHistory
	current  string
}

func (v *viewer) sees(e *storage.Event) bool {
	return canSee(e, v.userID, v.history, v.current)
}

// page is a run of events read in one direction, with where the walk stopped.
type page struct {
	events []storage.Event
	// next is the position the walk continues from (exclusive, in its direction).
	next int64
	// more is false when the walk reached the end of the range.
	more bool
}

// maxBatch bounds the events walk reads in one query (one more, to see whether the range
// goes on).
const maxBatch = 1000

// walk reads up to limit visible events of a room matching filter, starting at from (an
// exclusive bound in the walk's direction) and never passing bound: backward covers
// (bound, from], forward (from, bound]. It reads in batches until it has limit events or the
// range ends, so filtered-out events cost no extra round trips when there are few. Batches
// hold at most maxBatch+1 events whatever the limit, and a short or empty batch ends the
// walk, so no limit can make it loop.
func walk(ctx context.Context, db storage.Database, roomID string, v *viewer, filter *types.EventFilter, backward bool, from, bound int64, limit int) (page, error) {
	p := page{next: from, more: true}
	batch := min(max(limit, 1), maxBatch) + 1
	for len(p.events) < limit {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		r := storage.Range{After: p.next, UpTo: bound, Limit: batch}
		if backward {
			r = storage.Range{After: bound, UpTo: p.next, Backward: true, Limit: batch}
		}
		evs, err := db.RoomEvents(ctx, roomID, r)
		if err != nil {
			return p, fmt.Errorf("read events of %s: %w", roomID, err)
		}
		for i := range evs {
			e := &evs[i]
			if len(p.events) == limit {
				return p, nil
			}
			p.next = e.Position
			if backward {
				p.next = e.Position - 1
			}
			if v.sees(e) && (filter == nil || filter.Allows(e.Type, e.Sender)) {
				p.events = append(p.events, *e)
			}
		}
		if len(evs) == 0 || len(evs) < batch {
			p.more = false
			return p, nil
		}
		batch = min(batch*2, maxBatch)
	}
	return p, nil
}

// clientEvents converts events to the client format, adding the transaction ID for the
// device that sent them.
func clientEvents(evs []storage.Event, v *viewer) ([]clientevent.Event, error) {
	out := make([]clientevent.Event, 0, len(evs))
	now := time.Now().UnixMilli()
	for i := range evs {
		c, err := clientevent.New(evs[i].EventID, evs[i].JSON)
		if err != nil {
			return nil, err
		}
		c.SetAge(now)
		if t := evs[i].Txn; t.TxnID != "" && t.UserID == v.userID && t.DeviceID == v.deviceID {
			c.SetTransactionID(t.TxnID)
		}
		out = append(out, c)
	}
	return out, nil
}

// reversed returns evs in the opposite order.
func reversed(evs []storage.Event) []storage.Event {
	out := make([]storage.Event, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e
	}
	return out
}
