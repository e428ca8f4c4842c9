// Package storage is what the push server stores: pushers, what the push reader keeps of
// rooms (joined members, power levels) and users (push rules) to evaluate events, and the
// notifications it records.
package storage

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/matrix-org/dendrite/pushserver/api"
)

// StoredPusher is a pusher with its owner and the device that registered it.
type StoredPusher struct {
	api.Pusher
	UserID   string
	DeviceID string
	// CreatedTS is when the pusher was registered (Unix ms).
	CreatedTS int64
}

// Member is a user's membership in a room as the push reader keeps it.
type Member struct {
	UserID      string
	Membership  string
	DisplayName string
}

// RoomState is what evaluating an event needs of its room: the joined members (local
// and remote) and the power levels content (nil without one).
type RoomState struct {
	Joined      []Member
	PowerLevels json.RawMessage
}

// Notification is one event that notified one user.
type Notification struct {
	// ID orders a user's notifications (the /notifications pagination token); it is
	// Pos.
	ID       int64
	UserID   string
	RoomID   string
	EventID  string
	ThreadID string
	Actions  json.RawMessage
	// Highlight is whether the actions set the highlight tweak.
	Highlight bool
	// Pos is the event's position in the push reader's order of the room's events.
	Pos int64
	// TS is the event's timestamp (Unix ms).
	TS   int64
	Read bool
}

// PruneCutoffs say which notifications PruneNotifications deletes.
type PruneCutoffs struct {
	// NotifyBefore and HighlightBefore are the oldest timestamps (Unix ms) kept of
	// notifications and of highlights; HighlightBefore is the earlier.
	NotifyBefore, HighlightBefore int64
	// Batch is how many notifications one call reads.
	Batch int
}

// PusherKey names one pusher.
type PusherKey struct {
	UserID  string
	AppID   string
	PushKey string
}

// DuePusher is a pusher with pushes due and the URL of its push gateway (empty when the
// pusher is gone or has none).
type DuePusher struct {
	Key PusherKey
	URL string
}

// QueuedPush is a push waiting for its pusher: a notification's event, or, with EventID
// empty, a badge update (counts only).
type QueuedPush struct {
	ID PusherKey
	// Seq orders a pusher's queue.
	Seq      int64
	EventID  string
	RoomID   string
	Actions  json.RawMessage
	Attempts int
	// EnqueuedTS is when the push was queued (Unix ms).
	EnqueuedTS int64
}

// Database is the push server's storage. Methods that take a tx run inside the consumer
// transaction that also saves the offset; a nil tx is allowed where noted.
type Database interface {
	// UpsertPusher stores p, replacing the user's pusher with the same app ID and push
	// key. Unless appendOthers, pushers of other users with that app ID and push key are
	// removed in the same transaction.
	UpsertPusher(ctx context.Context, p *StoredPusher, appendOthers bool) error
	// DeletePusher removes the user's pusher with the app ID and push key, if any.
	DeletePusher(ctx context.Context, userID, appID, pushKey string) error
	// Pushers lists the user's pushers, oldest first.
	Pushers(ctx context.Context, userID string) ([]StoredPusher, error)

	// JoinedCounts are the numbers of joined members (local and remote) of those of
	// roomIDs the push reader has state for; a room it has no state for is absent.
	JoinedCounts(ctx context.Context, roomIDs []string) (map[string]int, error)
	// AddRoom records a room's state as the push reader first sees it; a room already
	// known is left alone.
	AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []Member, powerLevels json.RawMessage) error
	// SetMember records a membership change.
	SetMember(ctx context.Context, tx *sql.Tx, roomID string, m Member) error
	// SetPowerLevels records the room's power levels content.
	SetPowerLevels(ctx context.Context, tx *sql.Tx, roomID string, content json.RawMessage) error
	// RoomState is the room's state as recorded so far.
	RoomState(ctx context.Context, tx *sql.Tx, roomID string) (*RoomState, error)
	// AddEvent gives the event, sent at ts (Unix ms, its origin_server_ts), the next
	// position of the push reader's order; isNew is false (and pos the one given before)
	// when the event was seen already.
	AddEvent(ctx context.Context, tx *sql.Tx, eventID string, ts int64) (pos int64, isNew bool, err error)
	// EventPosition is the position AddEvent gave eventID; ok is false for an event the
	// push reader never saw.
	EventPosition(ctx context.Context, tx *sql.Tx, eventID string) (pos int64, ok bool, err error)
	// SetPushRules stores the user's m.push_rules account data content.
	SetPushRules(ctx context.Context, tx *sql.Tx, userID string, content json.RawMessage) error
	// PushRules returns the stored m.push_rules content of those of userIDs that have one.
	PushRules(ctx context.Context, tx *sql.Tx, userIDs []string) (map[string]json.RawMessage, error)
	// SetIgnoredUsers replaces the users userID ignores (their m.ignored_user_list).
	SetIgnoredUsers(ctx context.Context, tx *sql.Tx, userID string, ignored []string) error
	// IgnoredBy returns those of userIDs who ignore sender.
	IgnoredBy(ctx context.Context, tx *sql.Tx, sender string, userIDs []string) (map[string]bool, error)
	// AddNotifications records notifications; one already recorded for the same user
	// and event is left alone. A notification's TS is its event's, given to AddEvent.
	AddNotifications(ctx context.Context, tx *sql.Tx, ns []Notification) error
	// MarkRead marks the user's unread notifications in the room at or before pos read:
	// all of them for threadID "", else those of that thread. It reports whether any was.
	MarkRead(ctx context.Context, tx *sql.Tx, userID, roomID, threadID string, pos int64) (bool, error)
	// PruneNotifications deletes, in one transaction, notifications older than their
	// retention among up to c.Batch of those with a position after `after` (and all of
	// an event's, should one event have more); their unread ones stay counted (a receipt
	// at or after the newest of them clears them). It reports the last position it passed
	// (the next call's `after`), how many it deleted, and done when it reached the
	// notifications still kept.
	PruneNotifications(ctx context.Context, after int64, c PruneCutoffs) (last int64, deleted int, done bool, err error)
	// UnreadCounts are, per user among userIDs, the unread counts in the room per thread.
	UnreadCounts(ctx context.Context, tx *sql.Tx, roomID string, userIDs []string) (map[string]map[string]api.Counts, error)
	// Notifications lists up to limit of the user's notifications with an ID below
	// before (0: from the newest), newest first; only highlights when onlyHighlight.
	Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error)

	// EnqueuePushes queues a push for every pusher of each notification's user, and with
	// badges, a badge update for every pusher of those users.
	EnqueuePushes(ctx context.Context, tx *sql.Tx, ns []Notification, badges []string) error
	// DuePushers are the pushers whose queue head is due at now (Unix ms).
	DuePushers(ctx context.Context, now int64) ([]DuePusher, error)
	// QueueHeads are the pusher's oldest queued pushes after seq `after` (0: from the
	// head), at most limit, in queue order, and the pusher; nothing when either is gone (a
	// queue without its pusher is removed) or the queue is not due at now.
	QueueHeads(ctx context.Context, key PusherKey, now, after int64, limit int) ([]QueuedPush, *StoredPusher, error)
	// Delivered removes pushes, by their seq, from the queues, in one transaction.
	Delivered(ctx context.Context, seqs []int64) error
	// Postpone records a failed attempt at the pusher's head and makes its queue due
	// again at next (Unix ms).
	Postpone(ctx context.Context, key PusherKey, seq int64, next int64) error
	// RemovePusher deletes the pusher and its queue (its gateway rejected the push key).
	RemovePusher(ctx context.Context, key PusherKey) error
	// DeleteDevicePushers deletes the pushers (and queues) a deleted device registered.
	DeleteDevicePushers(ctx context.Context, tx *sql.Tx, userID, deviceID string) error
	// UnreadTotal is the user's unread notifications in every room (the badge).
	UnreadTotal(ctx context.Context, userID string) (int, error)
	// QueueDepth is the number of queued pushes.
	QueueDepth(ctx context.Context) (int, error)
	// DuePushes is the number of queued pushes whose pusher is due at now (ms): not
	// waiting out a backoff.
	DuePushes(ctx context.Context, now int64) (int, error)
}
