// Package storage is the eduserver's store: which send-to-device transactions it has
// applied, so that a client retrying a request, or the log redelivering it, sends nothing
// twice, and the outbox of the messages they became (OutputSendToDeviceEvent). Typing state
// is kept in memory only.
package storage

import (
	"context"
	"database/sql"
	"time"
)

// Outbound is a stored OutputSendToDeviceEvent record.
type Outbound struct {
	// ID is the row's key, in the order the records were stored.
	ID        int64
	Partition int32
	Seq       int64
	Key       string
	Payload   []byte
}

// Database is what the eduserver needs from its store.
type Database interface {
	// RecordTransaction records, in tx, that sender's device sent txnID at ts (Unix
	// milliseconds). It reports false when the transaction was recorded before.
	RecordTransaction(ctx context.Context, tx *sql.Tx, sender, device, txnID string, ts int64) (bool, error)
	// HasTransaction reports whether sender's device's txnID is recorded (committed).
	HasTransaction(ctx context.Context, sender, device, txnID string) (bool, error)
	// PruneTransactions forgets transactions recorded before before; it returns how many.
	PruneTransactions(ctx context.Context, before int64) (int64, error)
	// InsertOutput numbers a record in partition (dense from 1) and stores it in the outbox,
	// in tx; payload makes the record from its number.
	InsertOutput(ctx context.Context, tx *sql.Tx, partition int32, key string, payload func(seq int64) ([]byte, error)) error
	// Outbox returns the records stored but not yet produced, in the order they were stored.
	Outbox(ctx context.Context) ([]Outbound, error)
	// MarkProduced records that records were produced; they stay for replay until
	// PruneOutbox deletes them.
	MarkProduced(ctx context.Context, ids []int64) error
	// PruneOutbox deletes the produced records stored before before.
	PruneOutbox(ctx context.Context, before time.Time) error
	// OutputsAfter returns at most limit records of partition numbered above after, in
	// order, and the partition's last number (0: none yet).
	OutputsAfter(ctx context.Context, partition int32, after int64, limit int) ([]Outbound, int64, error)
}
