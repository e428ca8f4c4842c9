// Package consumer holds the federationsender's consumers, one type per topic it reads,
// each in the three phases of the eventlog.Consumer runtime: it decodes its records and
// fetches what it needs from the roomserver before the transaction opens, turns them into
// PDUs or EDUs queued for the servers that should get them in the transaction that saves
// its offset, and wakes those servers' queues once it commits.
package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Waker starts or nudges destinations' queues (internal.Queues).
type Waker interface {
	Wake(destinations []string)
}

// Shared is what every consumer is built from.
type Shared struct {
	ServerName spec.ServerName
	DB         storage.Database
	// Rooms answers the current state of rooms seen for the first time.
	Rooms rsapi.QueryAPI
	// Presence answers our users' current presence, which servers newly sharing a room with
	// them are sent; nil sends none (federation_sender.send_presence off).
	Presence presenceapi.QueryAPI
	Queues   Waker
	Logger   *logrus.Entry
}

// applyFunc is the second phase of a batch: inside the transaction that saves the offset
// it queues the batch's items, and returns the destinations it queued for.
type applyFunc func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error)

// lookups are the answers of the roomserver a batch needs, fetched in the consumer's first
// phase, so that no query to another component holds the write transaction open.
type lookups struct {
	// members are the joined members of the rooms the sender did not know (from the
	// roomserver's current state).
	members map[string][]storage.Member
	// userRooms are our users' joined rooms.
	userRooms map[string][]string
	// added are the state events each event (by ID) adds, resolved.
	added map[string][]gomatrixserverlib.PDU
}

// Prepare returns the first phase of a federationsender consumer (eventlog.Consumer.Prepare):
// prepare decodes a batch and fetches what it needs into lookups; the items are queued in
// the transaction, and the destinations' queues woken once it committed (waking a worker
// before the commit could let it read the queue before the items are there).
func (s *Shared) Prepare(prepare func(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error)) func(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return func(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
		lk := &lookups{members: map[string][]storage.Member{}, userRooms: map[string][]string{}, added: map[string][]gomatrixserverlib.PDU{}}
		apply, err := prepare(ctx, recs, lk)
		if err != nil {
			return eventlog.Step{}, err
		}
		var woken []string
		return eventlog.Step{
			Apply: func(ctx context.Context, tx *sql.Tx) error {
				woken, err = apply(ctx, tx, lk)
				return err
			},
			After: func(context.Context) {
				if len(woken) > 0 {
					slices.Sort(woken)
					s.Queues.Wake(slices.Compact(woken))
				}
			},
		}, nil
	}
}

// loadRooms fetches the current state of those of roomIDs the sender does not know yet.
func (s *Shared) loadRooms(ctx context.Context, lk *lookups, roomIDs []string) error {
	unknown, err := s.DB.UnknownRooms(ctx, nil, roomIDs)
	if err != nil {
		return eventlog.Retry(err)
	}
	for _, roomID := range unknown {
		if _, ok := lk.members[roomID]; ok {
			continue
		}
		res, err := s.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
		if err != nil {
			return eventlog.Retry(fmt.Errorf("query current state of %s: %w", roomID, err))
		}
		members := []storage.Member{}
		for _, ev := range res.StateEvents {
			if m, joined := joinedMember(ev.PDU); joined {
				members = append(members, m)
			}
		}
		lk.members[roomID] = members
	}
	return nil
}

// loadUserRooms fetches our user's joined rooms, and the current state of those the sender
// does not know yet. The rooms come from the roomserver (QueryRoomsForUser), so a room the
// sender never saw an event of still counts.
func (s *Shared) loadUserRooms(ctx context.Context, lk *lookups, userID string) error {
	if _, ok := lk.userRooms[userID]; ok {
		return nil
	}
	rooms, err := s.Rooms.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: userID, Membership: "join"})
	if err != nil {
		return eventlog.Retry(err)
	}
	lk.userRooms[userID] = rooms.RoomIDs
	return s.loadRooms(ctx, lk, rooms.RoomIDs)
}

// serverOf is the server part of a user ID, "" when it is not one.
func serverOf(userID string) string {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return ""
	}
	return string(u.Domain())
}

func (s *Shared) isLocal(userID string) bool {
	return serverOf(userID) == string(s.ServerName)
}

// ensureRoom stores the room's joined members, from the roomserver's current state fetched
// in the first phase (loadRooms), the first time the room is seen; afterwards the
// OutputRoomEvent deltas keep them current.
func (s *Shared) ensureRoom(ctx context.Context, tx *sql.Tx, lk *lookups, roomID string) error {
	known, err := s.DB.RoomKnown(ctx, tx, roomID)
	if err != nil || known {
		return err
	}
	members, ok := lk.members[roomID]
	if !ok {
		// Known when the batch was prepared, forgotten since: prepared again, it is fetched.
		return eventlog.Retry(fmt.Errorf("room %s unknown to the federation sender and not fetched", roomID))
	}
	return s.DB.AddRoom(ctx, tx, roomID, members)
}

// joinedMember is the member an m.room.member event makes joined, if it does.
func joinedMember(ev gomatrixserverlib.PDU) (storage.Member, bool) {
	if ev == nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return storage.Member{}, false
	}
	membership, err := ev.Membership()
	if err != nil || membership != spec.Join {
		return storage.Member{}, false
	}
	server := serverOf(*ev.StateKey())
	if server == "" {
		return storage.Member{}, false
	}
	return storage.Member{UserID: *ev.StateKey(), ServerName: server, EventID: ev.EventID()}, true
}

// remote drops our own server from servers.
func (s *Shared) remote(servers []string) []string {
	out := servers[:0:0]
	for _, srv := range servers {
		if srv != string(s.ServerName) && srv != "" {
			out = append(out, srv)
		}
	}
	return out
}

// roomDestinations are the other servers with members joined to the room.
func (s *Shared) roomDestinations(ctx context.Context, tx *sql.Tx, lk *lookups, roomID string) ([]string, error) {
	if err := s.ensureRoom(ctx, tx, lk, roomID); err != nil {
		return nil, err
	}
	servers, err := s.DB.JoinedServers(ctx, tx, roomID)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	return s.remote(servers), nil
}

// queueEDU queues an EDU of eduType with content for dests.
func (s *Shared) queueEDU(ctx context.Context, tx *sql.Tx, dests []string, eduType string, content any) error {
	if len(dests) == 0 {
		return nil
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("encode %s: %w", eduType, err)
	}
	edu, err := json.Marshal(gomatrixserverlib.EDU{Type: eduType, Content: raw})
	if err != nil {
		return fmt.Errorf("encode %s: %w", eduType, err)
	}
	if err := s.DB.Enqueue(ctx, tx, dests, storage.KindEDU, edu); err != nil {
		return eventlog.Retry(err)
	}
	return nil
}

// decode parses a record's JSON into v.
func decode(rec eventlog.Record, v any) error {
	if err := json.Unmarshal(rec.Value, v); err != nil {
		return eventlog.Poison(fmt.Errorf("decode %s record: %w", strings.TrimSpace(rec.Topic), err))
	}
	return nil
}
