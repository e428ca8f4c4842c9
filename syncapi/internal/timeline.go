package internal

import (
	"context"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

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
	// peeking is set for a device peeking into a world-readable room it has not joined:
	// like a member, it sees the events that hold the room's current state.
	peeking bool
	// ignored are the users of the reader's m.ignored_user_list, whose non-state events a
	// /sync leaves out (nil outside /sync).
	ignored map[string]bool
}

func (v *viewer) sees(e *storage.Event) bool {
	if e.StateKey == nil && v.ignored[e.Sender] {
		return false
	}
	return canSee(e, v.userID, v.history, v.current)
}

// page is a run of events read in one direction, with where the walk stopped.
type page struct {
	events []storage.Event
	// next is the position the walk continues from (exclusive, in its direction).
	next int64
	// more is false when the walk reached the end of the range.
	more bool
	// last is the type of the last event the walk read, filtered out or not: with more
	// false, the type of the range's last event (the oldest, walking backward).
	last string
}

// maxBatch bounds the events walk reads in one query (one more, to see whether the range
// goes on).
const maxBatch = 1000

// currentStateIDs lazily holds the event IDs of a room's current state.
type currentStateIDs map[string]bool

// holds reports whether e, an event the viewer's history visibility hides, is still part of
// the room's current state while the viewer is joined: such events stay visible, as a
// joined member reads the current state anyway, so the timeline shows how it came about
// (a join during a time the viewer could not see, say). The state is loaded on first use.
func (c *currentStateIDs) holds(ctx context.Context, db storage.Database, roomID string, v *viewer, e *storage.Event) (bool, error) {
	if e.StateKey == nil || v.current != spec.Join && !v.peeking {
		return false, nil
	}
	if *c == nil {
		st, err := db.CurrentState(ctx, []string{roomID})
		if err != nil {
			return false, fmt.Errorf("load current state of %s: %w", roomID, err)
		}
		*c = currentStateIDs{}
		for _, s := range st[roomID] {
			(*c)[s.EventID] = true
		}
	}
	return (*c)[e.EventID], nil
}

// lookahead bounds the events walk reads past a full page to learn whether another
// matching event follows: beyond it the walk says there may be more.
const lookahead = 100

// walk reads up to limit visible events of a room matching filter, starting at from (an
// exclusive bound in the walk's direction) and never passing bound: backward covers
// (bound, from], forward (from, bound]. It reads in batches until it has limit events or the
// range ends, so filtered-out events cost no extra round trips when there are few. Batches
// hold at most maxBatch+1 events whatever the limit, and a short or empty batch ends the
// walk, so no limit can make it loop. Once the page is full it reads up to lookahead more
// events for one that matches: more is false only when none is left, so a filtered
// timeline whose older events are all filtered out is not limited.
func walk(ctx context.Context, db storage.Database, roomID string, v *viewer, filter *types.EventFilter, backward bool, from, bound int64, limit int) (page, error) {
	p := page{next: from, more: true}
	batch := min(max(limit, 1), maxBatch) + 1
	cursor, left := from, -1
	var cur currentStateIDs
	if limit <= 0 {
		left = lookahead
	}
	for {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		r := storage.Range{After: cursor, UpTo: bound, Limit: batch}
		if backward {
			r = storage.Range{After: bound, UpTo: cursor, Backward: true, Limit: batch}
		}
		evs, err := db.RoomEvents(ctx, roomID, r)
		if err != nil {
			return p, fmt.Errorf("read events of %s: %w", roomID, err)
		}
		for i := range evs {
			e := &evs[i]
			cursor, p.last = e.Position, e.Type
			if backward {
				cursor = e.Position - 1
			}
			match := filter == nil || filter.Allows(e.Type, e.Sender)
			if match && !v.sees(e) {
				if match, err = cur.holds(ctx, db, roomID, v, e); err != nil {
					return p, err
				}
			}
			if left >= 0 {
				if match || left == 0 {
					return p, nil
				}
				left--
				continue
			}
			p.next = cursor
			if match {
				p.events = append(p.events, *e)
				if len(p.events) == limit {
					left = lookahead
				}
			}
		}
		if len(evs) < batch {
			p.more = false
			return p, nil
		}
		batch = min(batch*2, maxBatch)
	}
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
