package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// RoomEvents consumes OutputRoomEvent. Every event's state delta keeps the room's joined
// members current (rooms seen for the first time are loaded from the roomserver's current
// state); events our users sent are queued for every other server joined to the room before
// or after the event (so a server whose last user was kicked or banned learns it), and so
// are third-party invites this server made for another server's user (madeHere). Events
// from other servers are never sent on: their origin sent them.
type RoomEvents struct {
	s *Shared
}

// NewRoomEvents builds the OutputRoomEvent handler.
func NewRoomEvents(s *Shared) *RoomEvents {
	return &RoomEvents{s: s}
}

// Prepare is the consumer's first phase (see Shared.Prepare).
func (r *RoomEvents) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return r.s.Prepare(r.prepare)(ctx, recs)
}

// prepare decodes the batch and fetches, before the transaction opens, the state each
// event adds and the current state of the rooms the sender does not know yet.
func (r *RoomEvents) prepare(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error) {
	var outs []*rsapi.OutputNewRoomEvent
	var roomIDs []string
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := decode(rec, &out); err != nil {
			return nil, err
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			r.s.Logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping output of unknown type")
			continue
		}
		ev := out.NewRoomEvent.Event.PDU
		outs = append(outs, out.NewRoomEvent)
		roomIDs = append(roomIDs, ev.RoomID().String())
		if len(out.NewRoomEvent.AddsStateEventIDs) == 0 {
			continue
		}
		added, unknown, err := out.NewRoomEvent.AddedState(ctx, r.s.Rooms)
		if err != nil {
			return nil, eventlog.Retry(err)
		}
		for _, id := range unknown {
			r.s.Logger.WithFields(logrus.Fields{"room_id": ev.RoomID().String(), "event_id": id}).Warn("added state event unknown to the roomserver; skipped")
		}
		lk.added[ev.EventID()] = added
	}
	if err := r.s.loadRooms(ctx, lk, roomIDs); err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error) {
		return r.queue(ctx, tx, lk, outs)
	}, nil
}

// queue applies the batch's events in the transaction. Within a batch each room's joined
// servers are read once and then followed through the deltas, so a run of messages costs
// one queue insert each.
func (r *RoomEvents) queue(ctx context.Context, tx *sql.Tx, lk *lookups, outs []*rsapi.OutputNewRoomEvent) ([]string, error) {
	var woken []string
	joined := map[string][]string{} // room -> joined servers after the batch's events so far
	for _, out := range outs {
		dests, err := r.apply(ctx, tx, lk, out, joined)
		if err != nil {
			return nil, err
		}
		woken = append(woken, dests...)
	}
	return woken, nil
}

// apply updates the room's members and queues the event if it is ours; it returns the
// destinations it was queued for. joined caches each room's joined servers in the batch.
func (r *RoomEvents) apply(ctx context.Context, tx *sql.Tx, lk *lookups, out *rsapi.OutputNewRoomEvent, joined map[string][]string) ([]string, error) {
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
		} else if err := r.s.ensureRoom(ctx, tx, lk, roomID); err != nil {
			// The current state already holds this event's effect (and maybe later ones,
			// which the deltas still to come repeat).
			return nil, err
		}
	}
	after := before
	changed := !known
	var newLocal []string
	if known {
		var err error
		if changed, newLocal, err = r.applyDelta(ctx, tx, roomID, out, lk.added[ev.EventID()]); err != nil {
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
	var dests []string
	if r.s.madeHere(ev) {
		dests = r.s.remote(union(before, after))
		if len(dests) > 0 {
			if err := r.s.DB.Enqueue(ctx, tx, dests, storage.KindPDU, ev.JSON()); err != nil {
				return nil, eventlog.Retry(err)
			}
			r.s.Logger.WithFields(logrus.Fields{"room_id": roomID, "event_id": ev.EventID(), "destinations": len(dests)}).Debug("event queued")
		}
	}
	if !changed {
		return dests, nil
	}
	shared, err := r.sharePresence(ctx, tx, roomID, before, after, newLocal)
	if err != nil {
		return nil, err
	}
	return append(dests, shared...), nil
}

// sharePresence tells the servers that newly share the room with our users of their
// presence, as the join makes them room mates (this is how both sides of a new federated
// chat see each other's presence without waiting for a change): every server that joined the
// room (in after, not in before) gets the presence of all our users joined to it, and the
// other servers get the presence of newLocal, our users who just joined. Offline users are
// left out: offline is what a server assumes of a user it never heard of. It returns the
// destinations it queued an m.presence EDU for.
func (r *RoomEvents) sharePresence(ctx context.Context, tx *sql.Tx, roomID string, before, after, newLocal []string) ([]string, error) {
	if r.s.Presence == nil {
		return nil, nil
	}
	var gained, others []string
	for _, srv := range r.s.remote(after) {
		if slices.Contains(before, srv) {
			others = append(others, srv)
		} else {
			gained = append(gained, srv)
		}
	}
	var woken []string
	if len(gained) > 0 {
		local, err := r.s.DB.JoinedUsers(ctx, tx, roomID, string(r.s.ServerName))
		if err != nil {
			return nil, eventlog.Retry(err)
		}
		queued, err := r.s.queuePresence(ctx, tx, gained, local)
		if err != nil {
			return nil, err
		}
		woken = append(woken, queued...)
	}
	if len(others) > 0 && len(newLocal) > 0 {
		queued, err := r.s.queuePresence(ctx, tx, others, newLocal)
		if err != nil {
			return nil, err
		}
		woken = append(woken, queued...)
	}
	return woken, nil
}

// applyDelta applies the event's change to current state to the room's joined members:
// removed membership events first, then the added ones (a join stores the member, any other
// membership forgets them). It reports whether the delta touched memberships at all, and
// which of our users it made joined who were not before. added are the state events it
// adds, resolved in the first phase.
func (r *RoomEvents) applyDelta(ctx context.Context, tx *sql.Tx, roomID string, out *rsapi.OutputNewRoomEvent, added []gomatrixserverlib.PDU) (changed bool, newLocal []string, err error) {
	if len(out.AddsStateEventIDs) == 0 && len(out.RemovesStateEventIDs) == 0 {
		return false, nil, nil
	}
	var localBefore []string
	if slices.ContainsFunc(added, func(ev gomatrixserverlib.PDU) bool {
		m, joined := joinedMember(ev)
		return joined && m.ServerName == string(r.s.ServerName)
	}) {
		if localBefore, err = r.s.DB.JoinedUsers(ctx, tx, roomID, string(r.s.ServerName)); err != nil {
			return false, nil, eventlog.Retry(err)
		}
	}
	if err = r.s.DB.RemoveMemberEvents(ctx, tx, roomID, out.RemovesStateEventIDs); err != nil {
		return false, nil, eventlog.Retry(err)
	}
	for _, ev := range added {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if m, joined := joinedMember(ev); joined {
			err = r.s.DB.SetJoined(ctx, tx, roomID, m)
			if m.ServerName == string(r.s.ServerName) && !slices.Contains(localBefore, m.UserID) {
				newLocal = append(newLocal, m.UserID)
			}
		} else {
			err = r.s.DB.SetLeft(ctx, tx, roomID, *ev.StateKey())
		}
		if err != nil {
			return false, nil, eventlog.Retry(err)
		}
	}
	return true, newLocal, nil
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

// madeHere reports whether this server made ev, and so sends it to the room's other
// servers. An event is made by its sender's server, which signs it; but the invitee's
// server may make a third-party invite for its sender and sign it alone (spec server-server
// API, "Third-party invites"), and that is the only event the federationapi accepts
// without its sender's server's signature. Third-party invites are told apart by
// eventcontent.ThirdPartySigned, the test the federationapi and the auth rules use, and
// only their signatures are read. An invite the sender's server made and the invitee's
// server countersigned (invite v2) is the sender's server's.
func (s *Shared) madeHere(ev gomatrixserverlib.PDU) bool {
	sender := serverOf(string(ev.SenderID()))
	if eventcontent.ThirdPartySigned(ev) != nil && !signedBy(ev, sender) {
		return serverOf(*ev.StateKey()) == string(s.ServerName)
	}
	return sender == string(s.ServerName)
}

// signedBy reports whether ev carries a signature of server (checked when the event was
// received or made, not here).
func signedBy(ev gomatrixserverlib.PDU, server string) bool {
	var e struct {
		Signatures map[string]json.RawMessage `json:"signatures"`
	}
	if json.Unmarshal(ev.JSON(), &e) != nil {
		return false
	}
	_, ok := e.Signatures[server]
	return ok
}
