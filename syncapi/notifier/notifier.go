// Package notifier wakes long-polling /sync requests. It keeps, in memory, which local users
// are joined to or invited to each room, and per user the highest position that concerns
// them, so that a committed write wakes exactly the affected users with no polling delay and
// in time proportional to the room's local members.
package notifier

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/syncapi/storage"
)

// Notifier is safe for concurrent use.
type Notifier struct {
	serverSuffix string
	waiting      prometheus.Gauge

	mu    sync.Mutex
	rooms map[string]map[string]struct{}
	// userRooms are the rooms each user, local or not, is joined to or invited to.
	userRooms map[string]map[string]struct{}
	users     map[string]*userStream
	// peekers are the local users peeking into each room (MSC2753), woken like its
	// members. A peek that ended leaves its user here until restart: a needless wake-up
	// costs one empty look at the user's rooms.
	peekers map[string]map[string]struct{}
	// streams is the highest position each kind of change reached since Load, and floor
	// the position at Load: a kind may have changed anywhere up to floor.
	streams map[string]int64
	floor   int64
	// writing counts, per kind of change, the writes under way: a write can make its
	// changes visible to a sync (commit them) before Notify hears of them.
	writing map[string]int
	// pending are users to wake for presence changes, at the highest position concerning
	// them, once presenceDelay has passed (flushing is set meanwhile).
	pending  map[string]int64
	flushing bool
}

// PresenceDelay is how long wake-ups for presence changes are gathered before they are
// sent: presence is not urgent, and a busy server changes it many times a second, each
// change concerning everyone who shares a room with the user. Wake-ups for anything else
// are immediate and carry pending presence along.
const PresenceDelay = 500 * time.Millisecond

// userStream is a user's highest notified position and the channel closed to wake them.
type userStream struct {
	pos  int64
	wake chan struct{}
}

// New makes a notifier for the local users of serverName. waiting, if not nil, counts
// requests currently waiting.
func New(serverName string, waiting prometheus.Gauge) *Notifier {
	return &Notifier{
		serverSuffix: ":" + serverName, waiting: waiting,
		rooms: map[string]map[string]struct{}{}, userRooms: map[string]map[string]struct{}{}, users: map[string]*userStream{},
		peekers: map[string]map[string]struct{}{}, streams: map[string]int64{}, writing: map[string]int{}, pending: map[string]int64{},
	}
}

// Load fills the room membership map from storage; call it before consumers start.
func (n *Notifier) Load(ctx context.Context, db storage.Database) error {
	floor, err := db.MaxPosition(ctx)
	if err != nil {
		return err
	}
	members, err := db.JoinedOrInvited(ctx)
	if err != nil {
		return err
	}
	peeks, err := db.AllPeeks(ctx)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.floor = floor
	for _, p := range peeks {
		addTo(n.peekers, p.RoomID, p.UserID)
	}
	for roomID, users := range members {
		for _, u := range users {
			n.setMember(roomID, u, spec.Join)
		}
	}
	return nil
}

// setMember records a membership: rooms keeps local users only (they are the ones woken),
// userRooms every user (a remote user's presence change wakes their local room-mates).
func (n *Notifier) setMember(roomID, userID, membership string) {
	local := strings.HasSuffix(userID, n.serverSuffix)
	if membership == spec.Join || membership == spec.Invite {
		if local {
			addTo(n.rooms, roomID, userID)
		}
		addTo(n.userRooms, userID, roomID)
		return
	}
	removeFrom(n.rooms, roomID, userID)
	removeFrom(n.userRooms, userID, roomID)
}

func addTo(m map[string]map[string]struct{}, key, v string) {
	set := m[key]
	if set == nil {
		set = map[string]struct{}{}
		m[key] = set
	}
	set[v] = struct{}{}
}

func removeFrom(m map[string]map[string]struct{}, key, v string) {
	delete(m[key], v)
	if len(m[key]) == 0 {
		delete(m, key)
	}
}

// stream returns the user's stream, creating it; n.mu must be held. Wake-ups for a user
// without a stream are not recorded, so a new stream starts at the highest position
// notified so far: whatever was committed since the caller last read the database may
// concern the user, and the caller looks again instead of sleeping through it.
func (n *Notifier) stream(userID string) *userStream {
	s := n.users[userID]
	if s == nil {
		s = &userStream{wake: make(chan struct{})}
		for _, pos := range n.streams {
			s.pos = max(s.pos, pos)
		}
		n.users[userID] = s
	}
	return s
}

// wakeUser records pos for the user and wakes their waiting requests; n.mu must be held.
func (n *Notifier) wakeUser(userID string, pos int64) {
	s := n.users[userID]
	if s == nil {
		return // nobody waits: a later request reads the database first
	}
	if pos > s.pos {
		s.pos = pos
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

// Notify wakes everyone a committed write concerns: the members of rooms with new events
// (before and after membership changes) or new typing and receipts, the subjects of
// membership changes, the users named in a.Users, and everyone sharing a room with a user
// whose presence changed.
func (n *Notifier) Notify(a *storage.Applied) {
	if a == nil || a.Position == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams[a.Stream] = max(n.streams[a.Stream], a.Position)
	woken := map[string]bool{}
	wake := func(u string) {
		if !woken[u] {
			woken[u] = true
			n.wakeUser(u, a.Position)
		}
	}
	for _, p := range a.Peeks {
		addTo(n.peekers, p.RoomID, p.UserID)
	}
	for _, roomID := range a.Rooms {
		for u := range n.rooms[roomID] {
			wake(u)
		}
		for u := range n.peekers[roomID] {
			wake(u)
		}
	}
	for _, m := range a.Members {
		n.setMember(m.RoomID, m.UserID, m.Membership)
		wake(m.UserID)
	}
	for _, roomID := range a.Rooms {
		for u := range n.rooms[roomID] {
			wake(u)
		}
	}
	for _, u := range a.Users {
		wake(u)
	}
	for _, roomID := range a.EphemeralRooms {
		for u := range n.rooms[roomID] {
			wake(u)
		}
	}
	for _, subject := range a.KeyUsers {
		wake(subject)
		for roomID := range n.userRooms[subject] {
			for u := range n.rooms[roomID] {
				wake(u)
			}
		}
	}
	for _, subject := range a.PresenceUsers {
		n.pending[subject] = a.Position
		for roomID := range n.userRooms[subject] {
			for u := range n.rooms[roomID] {
				n.pending[u] = a.Position
			}
		}
	}
	if len(n.pending) > 0 && !n.flushing {
		n.flushing = true
		time.AfterFunc(PresenceDelay, n.flush)
	}
}

// flush wakes the users gathered for presence changes.
func (n *Notifier) flush() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u, pos := range n.pending {
		n.wakeUser(u, pos)
	}
	clear(n.pending)
	n.flushing = false
}

// Wait blocks until something for userID is committed past position since, ctx ends or
// timeout passes. It reports whether it was woken.
func (n *Notifier) Wait(ctx context.Context, userID string, since int64, timeout time.Duration) bool {
	n.mu.Lock()
	s := n.stream(userID)
	if s.pos > since {
		n.mu.Unlock()
		return true
	}
	wake := s.wake
	n.mu.Unlock()
	if n.waiting != nil {
		n.waiting.Inc()
		defer n.waiting.Dec()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-wake:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Changed reports whether changes of the kind stream (storage.Stream*) may exist after
// position since, so that a sync can skip looking for those that cannot. While a write of
// that kind is under way (Writing) they may: it can have committed them already.
func (n *Notifier) Changed(stream string, since int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.writing[stream] > 0 || max(n.streams[stream], n.floor) > since
}

// Writing marks a write of changes of the kind stream as under way until end is called:
// after Notify was told what it committed, or when it failed.
func (n *Notifier) Writing(stream string) (end func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.writing[stream]++
	var ended bool
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if !ended {
			ended = true
			n.writing[stream]--
		}
	}
}

// Members returns the local users joined to or invited to roomID.
func (n *Notifier) Members(roomID string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.rooms[roomID]))
	for u := range n.rooms[roomID] {
		out = append(out, u)
	}
	return out
}
