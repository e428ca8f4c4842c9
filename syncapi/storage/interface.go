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
// Next 0 saves no offset (records fetched from their owner, not read from the log); Seq, when
// above 0, is the owner's number of the last record written (eventlog.Sequenced).
type Offset struct {
	Topic     string
	Partition int32
	Next      int64
	Seq       int64
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
	// Backfilled is set for history older than every stored event of the room: it takes
	// the next negative position (below everything stored), changes no state, notifies
	// no one and is not in any /sync. Events of a backfill come newest first.
	Backfilled bool
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

// The kinds of change that share the one sequence of positions.
const (
	StreamRoomEvents  = "room_events"
	StreamAccountData = "account_data"
	StreamTyping      = "typing"
	StreamReceipts    = "receipts"
	StreamToDevice    = "to_device"
	StreamPresence    = "presence"
	StreamKeyChanges  = "key_changes"
	// StreamPeeks is the devices' peeks into rooms (MSC2753).
	StreamPeeks = "peeks"
	// StreamNotificationCounts is the pushserver's unread counts.
	StreamNotificationCounts = "notification_counts"
)

// Applied reports what a write changed, for waking clients after it committed.
type Applied struct {
	// Stream is the kind of change the write made.
	Stream string
	// Rooms are the rooms that got a new event.
	Rooms []string
	// Members are the membership changes.
	Members []MemberChange
	// Users got new account data, a private receipt or a to-device message.
	Users []string
	// EphemeralRooms got new typing or receipts: their members are woken.
	EphemeralRooms []string
	// PresenceUsers changed presence: everyone sharing a room with them is woken.
	PresenceUsers []string
	// Peeks are the peeks started: their users are woken by their rooms' events from now on.
	Peeks []Peek
	// KeyUsers changed device keys: they and everyone sharing a room with them are woken.
	KeyUsers []string
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
	// RoomVersion is the room's version, which says how to redact the event.
	RoomVersion string
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

// TypingUser is a user typing in a room until ExpiresTS (Unix ms).
type TypingUser struct {
	UserID    string `json:"user_id"`
	ExpiresTS int64  `json:"expires_ts"`
}

// Typing is a room's complete set of typing users.
type Typing struct {
	RoomID string
	Users  []TypingUser
}

// Receipt is a user's receipt in a room.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string
	EventID  string
	ThreadID string
	TS       int64
}

// ToDeviceMessage is a message for one device, at Position.
type ToDeviceMessage struct {
	MessageID string
	UserID    string
	DeviceID  string
	Sender    string
	Type      string
	Content   []byte
	Position  int64
}

// Presence is a user's presence, announced at Position.
type Presence struct {
	UserID          string
	Presence        string
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	Position        int64
}

// KeyChange is a user's device list after a change: StreamID is the user's device-list
// stream position (from userapi), which only grows. With NotifyOnly the change concerns
// that one user alone (their user-signing key, their signature on UserID's key), and
// StreamID is NotifyOnly's stream position.
type KeyChange struct {
	UserID     string
	StreamID   int64
	NotifyOnly string
	// DeletedDevice is the device of UserID this change deleted: its sliding sync
	// connections are forgotten.
	DeletedDevice string
}

// DeviceLists is /sync's device_lists: users whose devices changed and who share a room
// with the syncing user (or are that user), and users who no longer share any.
type DeviceLists struct {
	Changed []string
	Left    []string
}

// Counts are a user's unread notification and highlight counts in one thread of a room.
type Counts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// NotificationCounts are a user's unread counts in a room per thread ("main" for events
// outside threads), as the pushserver announced them.
type NotificationCounts struct {
	UserID  string
	RoomID  string
	Threads map[string]Counts
}

// DirectoryUser is a user the user directory found, with a profile from one of their member
// events.
type DirectoryUser struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// Relation is a stored event that relates to another (content m.relates_to).
type Relation struct {
	EventID   string
	RelatesTo string
	RelType   string
	EventType string
	Sender    string
	Position  int64
}

// RelationsQuery selects the events relating to any of Parents in a room, of RelType and
// EventType when set, with After < position < Before, newest first when Backward, at
// most Limit.
type RelationsQuery struct {
	RoomID    string
	Parents   []string
	RelType   string
	EventType string
	After     int64
	Before    int64
	Backward  bool
	Limit     int
}

// ThreadSummary is a thread root's m.thread aggregation: how many events are in the
// thread, the latest of them, and whether the user sent one of them.
type ThreadSummary struct {
	Count         int
	LatestEventID string
	Participated  bool
}

// Aggregations are what events relate to a set of parents: thread summaries by root, and
// the m.replace and m.reference relations, oldest first.
type Aggregations struct {
	Threads map[string]ThreadSummary
	Others  []Relation
}

// ThreadRoot is a thread's root and the position of its latest event.
type ThreadRoot struct {
	EventID string
	Latest  int64
}

// Peek is a device's peek into a room (MSC2753), started at Position.
type Peek struct {
	UserID   string
	DeviceID string
	RoomID   string
	Position int64
}

// Database is what the sync API needs from its store.
type Database interface {
	// WritePeek starts the device's peek into a room at a new position (a peek already
	// under way starts again there, so the next /sync sends the room whole) and names the
	// user in Applied.Users and the peek in Applied.Peeks. A peek ends when its user joins,
	// leaves or is banned from the room (in the transaction storing the membership) or by
	// DeletePeek.
	WritePeek(ctx context.Context, userID, deviceID, roomID string) (*Applied, error)
	// DeletePeek ends the device's peek into a room; ended reports whether there was one.
	DeletePeek(ctx context.Context, userID, deviceID, roomID string) (ended bool, err error)
	// Peeks returns the device's peeks.
	Peeks(ctx context.Context, userID, deviceID string) ([]Peek, error)
	// AllPeeks returns every peek, for waking peekers of rooms with new events.
	AllPeeks(ctx context.Context) ([]Peek, error)

	// WriteRoomEvents stores events in order (backfilled ones each below everything
	// stored), skipping any already stored (at-least-once
	// delivery) and saves offset, all in one transaction (the consumer runtime's second
	// phase: eventlog.Step.Commit).
	WriteRoomEvents(ctx context.Context, events []NewRoomEvent, offset Offset) (*Applied, error)
	// WriteAccountData upserts account data (unchanged content keeps its position) like
	// WriteRoomEvents.
	WriteAccountData(ctx context.Context, changes []AccountDataChange, offset Offset) (*Applied, error)
	// WriteTyping replaces rooms' typing sets like WriteRoomEvents.
	WriteTyping(ctx context.Context, typing []Typing, offset Offset) (*Applied, error)
	// WriteReceipts upserts receipts (an unchanged receipt keeps its position) like
	// WriteRoomEvents.
	WriteReceipts(ctx context.Context, receipts []Receipt, offset Offset) (*Applied, error)
	// WriteNotificationCounts replaces the users' counts in the rooms (unchanged counts
	// keep their position) and wakes the users.
	WriteNotificationCounts(ctx context.Context, counts []NotificationCounts, offset Offset) (*Applied, error)
	// WriteToDevice stores messages for local devices, skipping message IDs already
	// stored, like WriteRoomEvents.
	WriteToDevice(ctx context.Context, msgs []ToDeviceMessage, offset Offset) (*Applied, error)
	// WriteKeyChanges records that users' device lists changed, each at a new position,
	// like WriteRoomEvents; a change whose stream ID is not above the user's recorded one
	// (a redelivery) is skipped.
	WriteKeyChanges(ctx context.Context, changes []KeyChange, offset Offset) (*Applied, error)
	// WritePresence replaces users' presence like WriteRoomEvents.
	WritePresence(ctx context.Context, presence []Presence, offset Offset) (*Applied, error)
	// NextOffset is where a consumer resumes.
	NextOffset(ctx context.Context, topic string, partition int32) (int64, error)

	// MaxPosition is the highest committed position: everything at or below it is visible.
	MaxPosition(ctx context.Context) (int64, error)
	// JoinedOrInvited lists, per room, the users whose current membership is join or invite.
	JoinedOrInvited(ctx context.Context) (map[string][]string, error)
	// MembershipsForUser is the user's current membership event in every room.
	MembershipsForUser(ctx context.Context, userID string) ([]StateEvent, error)
	// MembershipHistory is every membership change of the user up to upTo, oldest first,
	// indexed by room.
	MembershipHistory(ctx context.Context, userID string, upTo int64) (Memberships, error)
	// MembershipChanges is the user's membership changes in (after, upTo], oldest first.
	MembershipChanges(ctx context.Context, userID string, after, upTo int64) ([]MemberChange, error)
	// RoomsWithEvents returns the rooms with events in (after, upTo].
	RoomsWithEvents(ctx context.Context, after, upTo int64) ([]string, error)
	// RoomEvents returns a room's events in r, in the order of r. Backfilled events have
	// negative positions.
	RoomEvents(ctx context.Context, roomID string, r Range) ([]Event, error)
	// CurrentState returns the current state of each room.
	CurrentState(ctx context.Context, roomIDs []string) (map[string][]StateEvent, error)
	// StateEventsAfter returns the room's state events with a position above after, newest first.
	StateEventsAfter(ctx context.Context, roomID string, after int64) ([]Event, error)
	// EventsByID returns the stored events among ids.
	EventsByID(ctx context.Context, ids []string) ([]Event, error)
	// Typing returns the typing sets of those of roomIDs changed in (after, upTo].
	Typing(ctx context.Context, roomIDs []string, after, upTo int64) ([]Typing, error)
	// Receipts returns the receipts in roomIDs changed in (after, upTo], private ones only
	// of userID.
	Receipts(ctx context.Context, userID string, roomIDs []string, after, upTo int64) ([]Receipt, error)
	// TypingRooms returns the rooms whose typing set changed in (after, upTo]: an
	// incremental sync picks the user's rooms from them instead of listing every room of
	// the user.
	TypingRooms(ctx context.Context, after, upTo int64) ([]string, error)
	// ReceiptRooms returns the rooms with receipts changed in (after, upTo] (private ones
	// included), for the same use.
	ReceiptRooms(ctx context.Context, after, upTo int64) ([]string, error)
	// ToDevice returns the device's messages not yet acknowledged, up to upTo, oldest first.
	ToDevice(ctx context.Context, userID, deviceID string, upTo int64) ([]ToDeviceMessage, error)
	// AckToDevice marks the device's messages up to upTo delivered: their content is
	// deleted; their IDs are kept until PruneToDevice, so a redelivery is not stored again.
	AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error
	// PruneToDevice forgets delivered messages acknowledged before before (Unix ms).
	PruneToDevice(ctx context.Context, before int64) error
	// Presence returns the presence changed in (after, upTo] of userID and every user
	// who shares a joined room with userID.
	Presence(ctx context.Context, userID string, after, upTo int64) ([]Presence, error)
	// PresenceOf returns the presence, as of upTo, of those of userIDs who have one.
	PresenceOf(ctx context.Context, userIDs []string, upTo int64) ([]Presence, error)
	// NotificationCounts are the user's counts per thread in those of roomIDs that have any.
	NotificationCounts(ctx context.Context, userID string, roomIDs []string) (map[string]map[string]Counts, error)
	// NotificationCountRooms are the rooms whose counts for the user changed in (after, upTo].
	NotificationCountRooms(ctx context.Context, userID string, after, upTo int64) ([]string, error)
	// SearchUserDirectory finds up to limit users, ordered by user ID, who are joined to a
	// room searcher is joined to (searcher excepted) or to a public or world-readable room, and whose user ID or
	// display name contains every word of term (case and accents ignored); limited says
	// that more matched.
	SearchUserDirectory(ctx context.Context, searcher, term string, limit int) ([]DirectoryUser, bool, error)
	// Relations returns the relations q selects.
	Relations(ctx context.Context, q *RelationsQuery) ([]Relation, error)
	// Aggregations returns the thread summaries (Participated for userID) of those of
	// parents that are thread roots, and the edits and references of parents.
	Aggregations(ctx context.Context, userID string, parents []string) (*Aggregations, error)
	// ThreadRoots lists up to limit of the room's threads whose latest event is below before,
	// latest first; with participated, only those userID started or replied to.
	ThreadRoots(ctx context.Context, roomID, userID string, participated bool, before int64, limit int) ([]ThreadRoot, error)
	// DeviceListChanges is what changed in (after, upTo] for userID's device_lists: users
	// sharing a joined room with userID (or userID) whose device keys changed, who joined,
	// were invited to or knocked on a room userID is joined to, or who share a room userID
	// joined; users userID alone is told of (KeyChange.NotifyOnly); and users who left a
	// room userID is in, or whose room userID left, and share no joined room with userID
	// any more.
	DeviceListChanges(ctx context.Context, userID string, after, upTo int64) (*DeviceLists, error)
	// UnsharedRemoteUsers returns the users of servers other than serverName whom changes
	// (applied already) may have left without a joined room shared with a user of
	// serverName, and who indeed share none now: other servers' users whose membership
	// became anything but join, and the members of the rooms a local user left or was
	// banned from.
	UnsharedRemoteUsers(ctx context.Context, serverName string, changes []MemberChange) ([]string, error)
	// AccountData returns the user's account data changed in (after, upTo].
	AccountData(ctx context.Context, userID string, after, upTo int64) ([]AccountData, error)

	// ActivitySince returns the activity of the rooms whose latest event is after after
	// (ActivityIndex keeps it in memory).
	ActivitySince(ctx context.Context, after int64) (map[string]RoomActivity, error)
	// StateRemovals returns the room's state entries removed from its current state (not
	// replaced: state resolution dropped them) in (after, upTo].
	StateRemovals(ctx context.Context, roomID string, after, upTo int64) ([]StateKeyTuple, error)
	// StateOfTypes returns the current state events of roomIDs whose type is among types.
	StateOfTypes(ctx context.Context, roomIDs, types []string) (map[string][]StateEvent, error)
	// SaveSlidingPos stores a new pos of a sliding sync connection and returns its ID
	// (p.ID is ignored). It forgets the device's connections beyond MaxSlidingConnections.
	SaveSlidingPos(ctx context.Context, p *SlidingPos) (int64, error)
	// SlidingPos loads a pos by ID, or ErrNotFound.
	SlidingPos(ctx context.Context, id int64) (*SlidingPos, error)
	// PruneSlidingPos forgets the connection's positions with an ID below below.
	PruneSlidingPos(ctx context.Context, userID, deviceID, connID string, below int64) error
	// GlobalAccountData returns the content of the user's global account data of one type,
	// nil when the user has none.
	GlobalAccountData(ctx context.Context, userID, dataType string) ([]byte, error)
}

// BumpEventTypes are the event types that move a room's bump stamp in sliding sync
// (MSC4186): "proper" activity, as opposed to state changes or reactions. The unstable
// names of polls and beacons are included, as clients still send them.
var BumpEventTypes = []string{
	"m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
	"m.poll.start", "m.beacon_info", "org.matrix.msc3381.poll.start", "org.matrix.msc3672.beacon_info",
}

// StateKeyTuple names a state entry.
type StateKeyTuple struct {
	Type     string
	StateKey string
}

// RoomActivity is where a room's latest event (Last) and latest event of a BumpEventTypes
// type (Bump, 0 when none) are.
type RoomActivity struct {
	Last int64
	Bump int64
}

// MaxSlidingConnections is how many sliding sync connections (conn_id values) one device
// keeps; the least recently used beyond it are forgotten.
const MaxSlidingConnections = 10

// SlidingPos is one pos token handed out on a sliding sync connection: the stream position
// the response covered and the connection's state after it (opaque to storage).
type SlidingPos struct {
	ID       int64
	UserID   string
	DeviceID string
	ConnID   string
	Position int64
	State    []byte
}
