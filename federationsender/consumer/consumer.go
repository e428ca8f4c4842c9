// Package consumer holds the federationsender's consumers, one type per topic it reads:
// each turns its records into PDUs or EDUs queued for the servers that should get them, in
// the transaction that saves its offset, and wakes those servers' queues once it commits.
package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

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

// wakes holds, per partition, the destinations a Handle queued items for until the
// transaction commits (eventlog.Consumer.Applied): waking a worker before the commit could
// let it read the queue before the items are there.
type wakes struct {
	mu     sync.Mutex
	byPart map[int32]map[string]struct{}
	q      Waker
}

func newWakes(q Waker) *wakes {
	return &wakes{byPart: map[int32]map[string]struct{}{}, q: q}
}

// add remembers the destinations a batch (of one partition) queued for, to wake once it commits.
func (w *wakes) add(recs []eventlog.Record, dests []string) {
	if len(dests) == 0 || len(recs) == 0 {
		return
	}
	partition := recs[0].Partition
	w.mu.Lock()
	defer w.mu.Unlock()
	set := w.byPart[partition]
	if set == nil {
		set = map[string]struct{}{}
		w.byPart[partition] = set
	}
	for _, d := range dests {
		set[d] = struct{}{}
	}
}

// Applied is the eventlog.Consumer's Applied callback.
func (w *wakes) Applied(partition int32, _ int64) {
	w.mu.Lock()
	set := w.byPart[partition]
	delete(w.byPart, partition)
	w.mu.Unlock()
	if len(set) == 0 {
		return
	}
	dests := make([]string, 0, len(set))
	for d := range set {
		dests = append(dests, d)
	}
	w.q.Wake(dests)
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

// ensureRoom loads the room's joined members from the roomserver's current state the first
// time the room is seen; afterwards the OutputRoomEvent deltas keep them current. The query
// runs inside the consumer's transaction: it happens once per room.
func (s *Shared) ensureRoom(ctx context.Context, tx *sql.Tx, roomID string) error {
	known, err := s.DB.RoomKnown(ctx, tx, roomID)
	if err != nil || known {
		return err
	}
	res, err := s.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return eventlog.Retry(fmt.Errorf("query current state of %s: %w", roomID, err))
	}
	var members []storage.Member
	for _, ev := range res.StateEvents {
		if m, joined := joinedMember(ev.PDU); joined {
			members = append(members, m)
		}
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
func (s *Shared) roomDestinations(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	if err := s.ensureRoom(ctx, tx, roomID); err != nil {
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
		return fmt.Errorf("decode %s record: %w", strings.TrimSpace(rec.Topic), err)
	}
	return nil
}
