// Package storage is the roomserver's database: rooms, events, state snapshots and blocks,
// memberships, client transactions and the output outbox. The SQL in storage/sql runs on
// SQLite and PostgreSQL alike.
package storage

import (
	"context"
	"errors"
	"time"

	"github.com/matrix-org/dendrite/roomserver/types"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// Room is a stored room.
type Room struct {
	NID         types.RoomNID
	RoomID      string
	RoomVersion string
	// Snapshot is the current state; 0 before the create event is stored.
	Snapshot types.SnapshotNID
	// Latest are the forward extremities.
	Latest []types.EventNID
	Depth  int64
}

// Event is a stored event.
type Event struct {
	NID      types.EventNID
	RoomNID  types.RoomNID
	EventID  string
	Type     types.TypeNID
	StateKey types.StateKeyNID // 0 for a message event
	IsState  bool
	Depth    int64
	// Before is the state before the event; 0 for an outlier.
	Before   types.SnapshotNID
	Redacted bool
	// Outlier events are stored for their content and as auth events only: they are not in
	// the room's timeline and have no state before them.
	Outlier bool
	// SoftFailed events passed auth against the state before them but not against the
	// room's current state: they are stored with that state but are neither forward
	// extremities nor sent to readers (spec "Soft failure").
	SoftFailed bool
	// Rejected events from other servers failed the auth rules against their auth events
	// or the state before them. They are kept with the state before them (spec
	// "Rejection"), so that later events naming them as prev_events can be placed, but they
	// change no state, are never forward extremities, auth events or redactions, and
	// neither readers nor other servers ever get them.
	Rejected bool
	// Redacts is the target of a redaction event, kept so that a redaction received before
	// its target (from another server, or by backfill) applies when the target arrives.
	Redacts string
	JSON    []byte
}

// Membership is a user's current membership in a room.
type Membership struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
}

// Transaction is a client transaction ID and the event it produced (EventID is empty in
// a lookup key).
type Transaction struct {
	UserID   string
	DeviceID string
	TxnID    string
	EventID  string
}

// Outbound is an OutputRoomEvent stored with the event and produced after commit.
type Outbound struct {
	// Seq is the row's key; PartitionSeq the record's number in its OutputRoomEvent
	// partition (dense from 1, 0 for rows stored before sequences existed).
	Seq          int64
	RoomID       string
	Partition    int32
	PartitionSeq int64
	Payload      []byte
	// EventNID, when not 0, is the stored event that the stored Payload leaves out (its
	// "event" is null): the event is in roomserver_events already, so the row does not
	// hold it twice, and whoever reads the row back puts it in.
	EventNID types.EventNID
}

// Alias is a local room alias and who created it.
type Alias struct {
	Alias   string
	RoomID  string
	Creator string
}

// Directory is the room aliases and the published room directory. Its writes are their
// own transactions, outside the input path.
type Directory interface {
	// InsertAlias stores a new alias; when the alias exists it changes nothing and returns
	// the stored one.
	InsertAlias(ctx context.Context, a Alias) (existing *Alias, err error)
	// Alias returns ErrNotFound for an unknown alias.
	Alias(ctx context.Context, alias string) (*Alias, error)
	AliasesForRoom(ctx context.Context, roomID string) ([]string, error)
	DeleteAlias(ctx context.Context, alias string) (bool, error)
	SetPublished(ctx context.Context, roomID string, public bool) error
	Published(ctx context.Context, roomID string) (bool, error)
	PublishedRooms(ctx context.Context) ([]string, error)
	// SetNetworkPublished publishes the room in (or withdraws it from) an application
	// service's directory of a third-party network ("<appservice ID>|<network ID>").
	SetNetworkPublished(ctx context.Context, network, roomID string, public bool) error
	// NetworkRooms are the rooms published in the network's directory; network "" lists
	// those of every network.
	NetworkRooms(ctx context.Context, network string) ([]string, error)
	// JoinedCount is the number of users whose current membership in the room is join.
	JoinedCount(ctx context.Context, roomNID types.RoomNID) (int, error)
}

// Database is what the roomserver stores.
type Database interface {
	Directory
	// TypeNIDs and StateKeyNIDs return numeric IDs, assigning new ones in their own
	// committed transaction (so they stay valid whatever happens to the caller's).
	TypeNIDs(ctx context.Context, names []string) (map[string]types.TypeNID, error)
	StateKeyNIDs(ctx context.Context, keys []string) (map[string]types.StateKeyNID, error)
	// KnownTypeNIDs and KnownStateKeyNIDs only look up: names without a NID are left out.
	// They are safe inside a Write callback.
	KnownTypeNIDs(ctx context.Context, names []string) (map[string]types.TypeNID, error)
	KnownStateKeyNIDs(ctx context.Context, keys []string) (map[string]types.StateKeyNID, error)
	Room(ctx context.Context, roomID string) (*Room, error)
	RoomByNID(ctx context.Context, nid types.RoomNID) (*Room, error)
	// Rooms lists up to limit room IDs above after, in room ID order.
	Rooms(ctx context.Context, after string, limit int) ([]string, error)
	// Timeline returns up to limit of the room's timeline events (outliers left out) whose
	// NID is below before (every one when before is 0), highest NID first.
	Timeline(ctx context.Context, roomNID types.RoomNID, before types.EventNID, limit int) ([]Event, error)
	EventsByNID(ctx context.Context, nids []types.EventNID) ([]Event, error)
	EventsByID(ctx context.Context, ids []string) ([]Event, error)
	Snapshot(ctx context.Context, nid types.SnapshotNID) ([types.Buckets]types.BlockNID, error)
	Blocks(ctx context.Context, nids []types.BlockNID) (map[types.BlockNID][]types.StateEntry, error)
	// Transactions returns the stored client transactions of the room among keys (one
	// query for a whole batch).
	Transactions(ctx context.Context, roomNID types.RoomNID, keys []Transaction) ([]Transaction, error)
	Membership(ctx context.Context, roomNID types.RoomNID, userID string) (*Membership, error)
	RoomsForUser(ctx context.Context, userID, membership string) ([]string, error)
	// UsersOfServer lists the users of server (the part of their ID after the first colon)
	// that ever had a membership in the room, whatever it is now.
	UsersOfServer(ctx context.Context, roomNID types.RoomNID, server string) ([]string, error)
	// Outbox returns the outputs stored but not yet produced, in the order they were stored.
	Outbox(ctx context.Context) ([]Outbound, error)
	// MarkProduced records that outputs were produced; they stay for replay until PruneOutbox.
	MarkProduced(ctx context.Context, seqs []int64) error
	// PruneOutbox deletes the produced outputs stored before before.
	PruneOutbox(ctx context.Context, before time.Time) error
	// OutputsAfter returns up to limit outputs of an OutputRoomEvent partition whose
	// PartitionSeq is above after, in order, and the partition's last assigned sequence.
	OutputsAfter(ctx context.Context, partition int32, after int64, limit int) ([]Outbound, int64, error)
	// Write runs fn in one transaction.
	Write(ctx context.Context, fn func(w Writer) error) error
}

// Writer makes changes inside one transaction.
type Writer interface {
	InsertRoom(roomID, roomVersion string) (types.RoomNID, error)
	UpdateRoom(r *Room) error
	InsertEvent(e *Event) (types.EventNID, error)
	InsertBlock(entries []types.StateEntry) (types.BlockNID, error)
	InsertSnapshot(roomNID types.RoomNID, blocks [types.Buckets]types.BlockNID) (types.SnapshotNID, error)
	RedactEvent(nid types.EventNID, redactedJSON []byte) error
	// RedactionsOf returns the room's placed, not soft-failed redactions of eventID, those
	// stored earlier in this transaction included.
	RedactionsOf(roomNID types.RoomNID, eventID string) ([]Event, error)
	// HasRedactions reports whether the room has any stored redaction.
	HasRedactions(roomNID types.RoomNID) (bool, error)
	// PlaceEvent turns a stored outlier into a timeline event with the state before it.
	PlaceEvent(nid types.EventNID, before types.SnapshotNID, softFailed bool) error
	// RejectEvent turns a stored outlier into a rejected event with the state before it.
	RejectEvent(nid types.EventNID, before types.SnapshotNID) error
	InsertTransaction(roomNID types.RoomNID, t Transaction) error
	SetMembership(roomNID types.RoomNID, m Membership) error
	// NextOutputSeq assigns the next sequence number of an OutputRoomEvent partition.
	NextOutputSeq(partition int32) (int64, error)
	// InsertOutbox stores an output (o.Seq is ignored) and returns its row key.
	InsertOutbox(o Outbound) (int64, error)
	// MarkProduced records, in the same transaction, that outputs were produced.
	MarkProduced(seqs []int64) error
	// SaveOffset records the input log position in the same transaction.
	SaveOffset(topic string, partition int32, next int64) error
}
