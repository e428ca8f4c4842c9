package consumer

import (
	"context"
	"database/sql"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// RoomEvents consumes OutputRoomEvent. Every event's state delta keeps the room's joined
// members current (rooms seen for the first time are loaded from the roomserver's current
// state); events our users sent are queued for every other server joined to the room before
// or after the event (so a server whose last user was kicked or banned learns it). Events
// from other servers are never sent on: their origin sent them.
type RoomEvents struct {
	s *Shared
	// wakes gives the handler its Applied: the queues the committed batch added to wake.
	*wakes
}

// NewRoomEvents builds the OutputRoomEvent handler.
func NewRoomEvents(s *Shared) *RoomEvents {
	return &RoomEvents{s: s, wakes: newWakes(s.Queues)}
}

// Handle implements eventlog.Consumer.Handle. Within a batch each room's joined servers are
// read once and then followed through the deltas, so a run of messages costs one queue
// insert each.
func (r *RoomEvents) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var woken []string
	joined := map[string][]string{} // room -> joined servers after the batch's events so far
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := decode(rec, &out); err != nil {
			return err
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			r.s.Logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping output of unknown type")
			continue
		}
		dests, err := r.apply(ctx, tx, out.NewRoomEvent, joined)
		if err != nil {
			return err
		}
		woken = append(woken, dests...)
	}
	r.wakes.add(recs, woken)
	return nil
}

// apply updates the room's members and queues the event if it is ours; it returns the
// destinations it was queued for. joined caches each room's joined servers in the batch.
func (r *RoomEvents) apply(ctx context.Context, tx *sql.Tx, out *rsapi.OutputNewRoomEvent, joined map[string][]string) ([]string, error) {
	ev := out.Event.PDU
	roomID := ev.RoomID().String()
	before, known := joined[roomID]
	if !known {
		var err error
		if known, err = r.s.DB.RoomKnown(ctx, tx, roomID); err != nil {
			return nil, eventlog.Retry(err)
		}
		if known {
			if before, err = r.s.DB.JoinedServers(ctx, tx, roomID); err != nil {
				return nil, eventlog.Retry(err)
			}
		} else if err := r.s.ensureRoom(ctx, tx, roomID); err != nil {
			// The current state already holds this event's effect (and maybe later ones,
			// which the deltas still to come repeat).
			return nil, err
		}
	}
	after := before
	changed := !known
	if known {
		var err error
		if changed, err = r.applyDelta(ctx, tx, roomID, out); err != nil {
			return nil, err
		}
	}
	if changed {
		var err error
		if after, err = r.s.DB.JoinedServers(ctx, tx, roomID); err != nil {
			return nil, eventlog.Retry(err)
		}
	}
	joined[roomID] = after
	if !r.s.isLocal(string(ev.SenderID())) {
		return nil, nil
	}
	dests := r.s.remote(union(before, after))
	if len(dests) == 0 {
		return nil, nil
	}
	if err := r.s.DB.Enqueue(ctx, tx, dests, storage.KindPDU, ev.JSON()); err != nil {
		return nil, eventlog.Retry(err)
	}
	r.s.Logger.WithFields(logrus.Fields{"room_id": roomID, "event_id": ev.EventID(), "destinations": len(dests)}).Debug("event queued")
	return dests, nil
}

// applyDelta applies the event's change to current state to the room's joined members:
// removed membership events first, then the added ones (a join stores the member, any other
// membership forgets them). It reports whether the delta touched memberships at all.
func (r *RoomEvents) applyDelta(ctx context.Context, tx *sql.Tx, roomID string, out *rsapi.OutputNewRoomEvent) (bool, error) {
	if len(out.AddsStateEventIDs) == 0 && len(out.RemovesStateEventIDs) == 0 {
		return false, nil
	}
	if err := r.s.DB.RemoveMemberEvents(ctx, tx, roomID, out.RemovesStateEventIDs); err != nil {
		return false, eventlog.Retry(err)
	}
	added, unknown, err := out.AddedState(ctx, r.s.Rooms)
	if err != nil {
		return false, eventlog.Retry(err)
	}
	for _, id := range unknown {
		r.s.Logger.WithFields(logrus.Fields{"room_id": roomID, "event_id": id}).Warn("added state event unknown to the roomserver; skipped")
	}
	for _, ev := range added {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if m, joined := joinedMember(ev); joined {
			err = r.s.DB.SetJoined(ctx, tx, roomID, m)
		} else {
			err = r.s.DB.SetLeft(ctx, tx, roomID, *ev.StateKey())
		}
		if err != nil {
			return false, eventlog.Retry(err)
		}
	}
	return true, nil
}

// union is a and b without repeats.
func union(a, b []string) []string {
	seen := make(map[string]struct{}, len(a)+len(b))
	out := make([]string, 0, len(a)+len(b))
	for _, list := range [][]string{a, b} {
		for _, s := range list {
			if _, ok := seen[s]; !ok {
				seen[s] = struct{}{}
				out = append(out, s)
			}
		}
	}
	return out
}
