// Package storage is the sync API's store: every room event the roomserver output, each at a
// stream position the database assigns from one sequence shared with account data; the
// current state of each room; the history of memberships; and account data. Client tokens
// are these positions.
package storage

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
)

// ErrNotFound is returned when a requested event is not stored.
var ErrNotFound = errors.New("not found")

// Offset is the log position a write accounts for; it is saved in the write's transaction.
type Offset struct {
	Topic     string
	Partition int32
	Next      int64
}

// DeadLetter is a record that can never be applied; it is recorded with the batch that
// skips it.
type DeadLetter struct {
	Offset int64
	Err    string
}

// Txn is the sending device's transaction for a local event.
type Txn struct {
	UserID   string
	DeviceID string
	TxnID    string
}

// NewRoomEvent is one OutputRoomEvent to store, with every added state event at hand.
type NewRoomEvent struct {
	Event gomatrixserverlib.PDU
	// AddsState are the events that became current state (Event itself among them when it did).
	AddsState            []gomatrixserverlib.PDU
	RemovesStateEventIDs []string
	HistoryVisibility    string
	Txn                  *Txn
	RedactsEventID       string
}

// AccountDataChange is one account data upsert; RoomID is "" for global account data.
type AccountDataChange struct {
	UserID  string
	RoomID  string
	Type    string
	Content []byte
}

// MemberChange is a membership that changed at Position.
type MemberChange struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
	Position   int64
}

// Applied reports what a write changed, for waking clients after it committed.
type Applied struct {
	// Rooms are the rooms that got a new event.
	Rooms []string
	// Members are the membership changes.
	Members []MemberChange
	// Users got new account data.
	Users []string
	// Position is the highest position assigned.
	Position int64
}

// Event is a stored room event.
type Event struct {
	Position          int64
	RoomID            string
	EventID           string
	Type              string
	Sender            string
	StateKey          *string
	JSON              []byte
	HistoryVisibility string
	// Replaces is the event this state event replaced in the current state, if any.
	Replaces string
	Txn      Txn
}

// StateEvent is an entry of a room's current state.
type StateEvent struct {
	RoomID     string
	Type       string
	StateKey   string
	EventID    string
	Position   int64
	Membership string
	JSON       []byte
}

// AccountData is one stored piece of account data.
type AccountData struct {
	RoomID   string
	Type     string
	Content  []byte
	Position int64
}

// Range selects a room's events by position: After < position <= UpTo, newest first when
// Backward, at most Limit of them.
type Range struct {
	After    int64
	UpTo     int64
	Backward bool
	Limit    int
}

// Database is what the sync API needs from its store.
type Database interface {
	// WriteRoomEvents stores events in order, skipping any already stored (at-least-once
	// delivery), records dead letters and saves offset, all in one transaction.
	WriteRoomEvents(ctx context.Context, events []NewRoomEvent, dead []DeadLetter, offset Offset) (*Applied, error)
	// WriteAccountData upserts account data (unchanged content keeps its position) like
	// WriteRoomEvents.
	WriteAccountData(ctx context.Context, changes []AccountDataChange, dead []DeadLetter, offset Offset) (*Applied, error)
	// NextOffset is where a consumer resumes.
	NextOffset(ctx context.Context, topic string, partition int32) (int64, error)

	// MaxPosition is the highest committed position: everything at or below it is visible.
	MaxPosition(ctx context.Context) (int64, error)
	// JoinedOrInvited lists, per room, the users whose current membership is join or invite.
	JoinedOrInvited(ctx context.Context) (map[string][]string, error)
	// MembershipsForUser is the user's current membership event in every room.
	MembershipsForUser(ctx context.Context, userID string) ([]StateEvent, error)
	// MembershipHistory is every membership change of the user, oldest first.
	MembershipHistory(ctx context.Context, userID string, upTo int64) ([]MemberChange, error)
	// RoomsWithEvents returns those of roomIDs with events in (after, upTo].
	RoomsWithEvents(ctx context.Context, roomIDs []string, after, upTo int64) ([]string, error)
	// RoomEvents returns a room's events in r, in the order of r.
	RoomEvents(ctx context.Context, roomID string, r Range) ([]Event, error)
	// CurrentState returns the current state of each room.
	CurrentState(ctx context.Context, roomIDs []string) (map[string][]StateEvent, error)
	// StateEventsAfter returns the room's state events with a position above after, newest first.
	StateEventsAfter(ctx context.Context, roomID string, after int64) ([]Event, error)
	// EventsByID returns the stored events among ids.
	EventsByID(ctx context.Context, ids []string) ([]Event, error)
	// AccountData returns the user's account data changed in (after, upTo].
	AccountData(ctx context.Context, userID string, after, upTo int64) ([]AccountData, error)
}
