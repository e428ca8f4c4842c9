// Package consumer holds the appservice component's consumers: each turns its records into
// items queued for the application services interested in them, in the transaction that
// saves its offset, and wakes those services' queues once it commits.
package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice/storage"
	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Waker nudges services' queues (internal.Queues).
type Waker interface {
	Wake(serviceIDs []string)
}

// Rooms is what the consumer asks the roomserver: rooms' current state (members, the
// first time a room is seen), added state events the output did not carry, and rooms'
// aliases.
type Rooms interface {
	rsapi.QueryAPI
	QueryAliasesForRoom(ctx context.Context, req *rsapi.QueryAliasesForRoomRequest) (*rsapi.QueryAliasesForRoomResponse, error)
}

// RoomEvents consumes OutputRoomEvent and queues each new event for every service with a
// URL interested in it (spec, application service API, "Registration"): its sender or,
// for a membership event, its subject is a local user in the service's users namespace;
// the room ID is in its rooms namespace; one of the room's aliases is in its aliases
// namespace; or a local user in its users namespace is joined to the room. Joined
// namespaced users are tracked from the events' state deltas (loaded from the room's
// current state the first time a room is seen). An event is queued at most once per
// service however often the log delivers it.
type RoomEvents struct {
	ServerName spec.ServerName
	DB         storage.Database
	Rooms      Rooms
	Services   []*config.ApplicationService
	Logger     *logrus.Entry
	q          Waker
}

// NewRoomEvents builds the OutputRoomEvent handler; fill in its other fields.
func NewRoomEvents(q Waker) *RoomEvents {
	return &RoomEvents{q: q}
}

// Prepare implements eventlog.Consumer.Prepare (see queueing).
func (r *RoomEvents) Prepare(_ context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return queueing(r.q, recs, r.queue), nil
}

// queue queues the batch's events for the interested services, noting them in woken.
func (r *RoomEvents) queue(ctx context.Context, tx *sql.Tx, recs []eventlog.Record, woken map[string]bool) error {
	aliases := map[string][]string{} // room -> aliases, asked once per batch
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return eventlog.Poison(fmt.Errorf("decode %s record: %w", rec.Topic, err))
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			r.Logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping output of another type")
			continue
		}
		if err := r.apply(ctx, tx, out.NewRoomEvent, aliases, woken); err != nil {
			return err
		}
	}
	return nil
}

// queueing is the Step of a batch that queue queues inside the consumer's transaction: the
// services it queued for are woken once the transaction committed (waking a worker before
// the commit could let it read the queue before the items are there).
func queueing(q Waker, recs []eventlog.Record, queue func(ctx context.Context, tx *sql.Tx, recs []eventlog.Record, woken map[string]bool) error) eventlog.Step {
	woken := map[string]bool{}
	return eventlog.Step{
		Apply: func(ctx context.Context, tx *sql.Tx) error {
			clear(woken)
			return queue(ctx, tx, recs, woken)
		},
		After: func(context.Context) {
			ids := make([]string, 0, len(woken))
			for id := range woken {
				ids = append(ids, id)
			}
			q.Wake(ids)
		},
	}
}

// apply tracks the event's membership changes and queues it for the interested services.
func (r *RoomEvents) apply(ctx context.Context, tx *sql.Tx, out *rsapi.OutputNewRoomEvent, aliases map[string][]string, woken map[string]bool) error {
	ev := out.Event.PDU
	roomID := ev.RoomID().String()
	if err := r.trackMembers(ctx, tx, roomID, out); err != nil {
		return err
	}
	members, err := r.DB.Members(ctx, tx, roomID)
	if err != nil {
		return eventlog.Retry(err)
	}
	var content []byte
	for _, as := range r.Services {
		if as.URL == "" {
			continue
		}
		interested, err := r.interested(ctx, as, ev, members, aliases)
		if err != nil {
			return err
		}
		if !interested {
			continue
		}
		fresh, err := r.DB.MarkQueued(ctx, tx, as.ID, ev.EventID())
		if err != nil {
			return eventlog.Retry(err)
		}
		if !fresh {
			continue
		}
		if content == nil {
			ce, err := clientevent.New(ev.EventID(), ev.JSON())
			if err != nil {
				return err
			}
			if content, err = json.Marshal(ce); err != nil {
				return fmt.Errorf("encode event %s: %w", ev.EventID(), err)
			}
		}
		if err := r.DB.Enqueue(ctx, tx, as.ID, storage.KindEvent, content); err != nil {
			return eventlog.Retry(err)
		}
		woken[as.ID] = true
		r.Logger.WithFields(logrus.Fields{"room_id": roomID, "event_id": ev.EventID(), "appservice_id": as.ID}).Debug("event queued")
	}
	return nil
}

// interested reports whether the service wants the event.
func (r *RoomEvents) interested(ctx context.Context, as *config.ApplicationService, ev gomatrixserverlib.PDU, members []string, aliases map[string][]string) (bool, error) {
	if r.ownsLocal(as, string(ev.SenderID())) || as.OwnsRoomID(ev.RoomID().String()) {
		return true, nil
	}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil && r.ownsLocal(as, *ev.StateKey()) {
		return true, nil
	}
	for _, m := range members {
		if as.OwnsUserID(m) {
			return true, nil
		}
	}
	if len(as.Namespaces.Aliases) == 0 {
		return false, nil
	}
	roomID := ev.RoomID().String()
	list, ok := aliases[roomID]
	if !ok {
		res, err := r.Rooms.QueryAliasesForRoom(ctx, &rsapi.QueryAliasesForRoomRequest{RoomID: roomID})
		if err != nil {
			return false, eventlog.Retry(fmt.Errorf("query aliases of %s: %w", roomID, err))
		}
		list = res.Aliases
		aliases[roomID] = list
	}
	for _, a := range list {
		if as.OwnsAlias(a) {
			return true, nil
		}
	}
	return false, nil
}

// ownsLocal reports whether userID is a user of this server in the service's namespace:
// users namespaces only ever cover local users.
func (r *RoomEvents) ownsLocal(as *config.ApplicationService, userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == r.ServerName && as.OwnsUserID(userID)
}

// namespaced reports whether userID is a local user in some service's users namespace.
func (r *RoomEvents) namespaced(userID string) bool {
	for _, as := range r.Services {
		if r.ownsLocal(as, userID) {
			return true
		}
	}
	return false
}

// trackMembers keeps the room's joined namespaced users current: loaded from the current
// state the first time the room is seen (which already holds this event's effect), then
// followed through the state deltas.
func (r *RoomEvents) trackMembers(ctx context.Context, tx *sql.Tx, roomID string, out *rsapi.OutputNewRoomEvent) error {
	known, err := r.DB.RoomKnown(ctx, tx, roomID)
	if err != nil {
		return eventlog.Retry(err)
	}
	if !known {
		res, err := r.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
		if err != nil {
			return eventlog.Retry(fmt.Errorf("query current state of %s: %w", roomID, err))
		}
		var members []string
		for _, ev := range res.StateEvents {
			if uid, joined := r.joinedNamespaced(ev.PDU); joined {
				members = append(members, uid)
			}
		}
		return r.DB.AddRoom(ctx, tx, roomID, members)
	}
	if len(out.AddsStateEventIDs) == 0 {
		return nil
	}
	added, _, err := out.AddedState(ctx, r.Rooms)
	if err != nil {
		return eventlog.Retry(err)
	}
	for _, ev := range added {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || !r.namespaced(*ev.StateKey()) {
			continue
		}
		_, joined := r.joinedNamespaced(ev)
		if err := r.DB.SetMember(ctx, tx, roomID, *ev.StateKey(), joined); err != nil {
			return eventlog.Retry(err)
		}
	}
	return nil
}

// joinedNamespaced is the namespaced user an m.room.member event makes joined, if it does.
func (r *RoomEvents) joinedNamespaced(ev gomatrixserverlib.PDU) (string, bool) {
	if ev == nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil || !r.namespaced(*ev.StateKey()) {
		return "", false
	}
	m, err := ev.Membership()
	return *ev.StateKey(), err == nil && m == spec.Join
}
