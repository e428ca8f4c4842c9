// Package storage is the appservice component's store: the members of each room it has
// seen who are in an application service's users namespace (so it knows which rooms a
// service is interested in), the event IDs already queued for each service (the log
// delivers at least once; a service gets each event once), and one persistent queue per
// service, in the order the events were queued.
package storage

import (
	"context"
	"database/sql"
	"time"
)

// Kinds of queued items.
const (
	// KindEvent is a room event in the client format.
	KindEvent = "event"
	// KindEphemeral is an ephemeral event (typing, receipt, presence).
	KindEphemeral = "ephemeral"
	// KindToDevice is a to-device message (MSC2409's format).
	KindToDevice = "to_device"
)

// Transaction is a batch of one service's queued items under a transaction ID. Once
// assigned, the items stay together under that ID until the service acknowledges it, so a
// retry (even after a restart) sends the same transaction ID with the same contents.
type Transaction struct {
	ServiceID string
	// TxnID is numeric and never reused.
	TxnID int64
	// Events, Ephemeral and ToDevice are the items' JSON, each in queue order.
	Events    [][]byte
	Ephemeral [][]byte
	ToDevice  [][]byte
}

// Database is what the appservice component needs from its store. Methods taking a tx run
// in the caller's consumer transaction (nil runs them on their own).
type Database interface {
	// RoomKnown reports whether the room's namespaced members were ever loaded.
	RoomKnown(ctx context.Context, tx *sql.Tx, roomID string) (bool, error)
	// AddRoom marks the room known with members as its joined namespaced users.
	AddRoom(ctx context.Context, tx *sql.Tx, roomID string, members []string) error
	// SetMember stores (joined true) or forgets the user's membership of the room.
	SetMember(ctx context.Context, tx *sql.Tx, roomID, userID string, joined bool) error
	// Members are the room's joined namespaced users.
	Members(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error)

	// MarkQueued records that the event was queued for the service; false when it was
	// already (a redelivered record).
	MarkQueued(ctx context.Context, tx *sql.Tx, serviceID, eventID string) (bool, error)
	// Enqueue appends an item of kind with content to the service's queue.
	Enqueue(ctx context.Context, tx *sql.Tx, serviceID, kind string, content []byte) error
	// NextTransaction is the service's transaction in flight if there is one, else a new
	// one of its oldest items (at most max); nil when the queue is empty.
	NextTransaction(ctx context.Context, serviceID string, max int) (*Transaction, error)
	// DeleteTransaction removes the transaction's items, which the service acknowledged.
	DeleteTransaction(ctx context.Context, serviceID string, txnID int64) error
	// QueueState counts the service's queued items and tells when the oldest was queued
	// (zero when none is, or it was queued before the time was recorded).
	QueueState(ctx context.Context, serviceID string) (int64, time.Time, error)
	// ForgetQueuedBefore drops the records of events queued before t: the log keeps no
	// record longer than its retention, so none can be redelivered.
	ForgetQueuedBefore(ctx context.Context, t time.Time) error
}
