// Package storage is the federationsender's store: who is joined to each room it has seen
// (so it knows which servers to send to) and one persistent outbound queue per destination
// server, PDUs and EDUs in the order they were queued.
package storage

import (
	"context"
	"database/sql"
)

// Kind says whether a queued item is a PDU or an EDU.
type Kind string

// Kinds of queued items.
const (
	KindPDU Kind = "pdu"
	KindEDU Kind = "edu"
)

// Member is a joined member of a room.
type Member struct {
	UserID     string
	ServerName string
	// EventID is the member's current m.room.member event.
	EventID string
}

// Transaction is a batch of queued items for one destination, assigned a transaction ID.
// Once assigned, its items stay together under that ID until the destination acknowledges
// it, so a retry (even after a restart) sends exactly the same transaction again.
type Transaction struct {
	Destination string
	TxnID       string
	// PDUs and EDUs are the items' JSON, each list in queue order.
	PDUs [][]byte
	EDUs [][]byte
}

// Depth is the size of the queues.
type Depth struct {
	PDUs, EDUs, Destinations int64
}

// Database is what the federationsender needs from its store. Methods taking a tx run in
// the caller's consumer transaction (nil runs them on their own).
type Database interface {
	// RoomKnown reports whether the room's members were ever loaded.
	RoomKnown(ctx context.Context, tx *sql.Tx, roomID string) (bool, error)
	// UnknownRooms are those of roomIDs whose members were never loaded.
	UnknownRooms(ctx context.Context, tx *sql.Tx, roomIDs []string) ([]string, error)
	// AddRoom marks the room known and stores members as joined (replacing any stored
	// membership of the same users).
	AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []Member) error
	// SetJoined stores the member as joined to the room.
	SetJoined(ctx context.Context, tx *sql.Tx, roomID string, m Member) error
	// SetLeft forgets the user's membership of the room.
	SetLeft(ctx context.Context, tx *sql.Tx, roomID, userID string) error
	// RemoveMemberEvents forgets the memberships whose current event is one of eventIDs.
	RemoveMemberEvents(ctx context.Context, tx *sql.Tx, roomID string, eventIDs []string) error
	// JoinedServers are the distinct servers of the room's joined members.
	JoinedServers(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error)
	// JoinedUsers are the room's joined members of serverName.
	JoinedUsers(ctx context.Context, tx *sql.Tx, roomID, serverName string) ([]string, error)
	// ServersSharingRooms are the distinct servers with a member joined to one of the
	// rooms where userID is joined.
	ServersSharingRooms(ctx context.Context, tx *sql.Tx, userID string) ([]string, error)

	// Enqueue appends one item with content to the queue of each destination.
	Enqueue(ctx context.Context, tx *sql.Tx, destinations []string, kind Kind, content []byte) error
	// NextTransaction is the destination's transaction in flight if there is one, else a
	// new one of its oldest items (at most maxPDUs PDUs and maxEDUs EDUs) under the ID
	// newTxnID gives; nil when the queue is empty.
	NextTransaction(ctx context.Context, destination string, maxPDUs, maxEDUs int, newTxnID func() string) (*Transaction, error)
	// DeleteTransaction removes the transaction's items, which the destination acknowledged.
	DeleteTransaction(ctx context.Context, destination, txnID string) error
	// QueuedDestinations are the destinations with queued items.
	QueuedDestinations(ctx context.Context) ([]string, error)
	// QueueDepth counts the queued items.
	QueueDepth(ctx context.Context) (Depth, error)
}
