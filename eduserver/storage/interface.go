// Package storage is the eduserver's store: which send-to-device transactions it has
// applied, so that a client retrying a request, or the log redelivering it, sends nothing
// twice. Typing state is kept in memory only.
package storage

import (
	"context"
	"database/sql"
)

// Database is what the eduserver needs from its store.
type Database interface {
	// RecordTransaction records, in tx, that sender's device sent txnID at ts (Unix
	// milliseconds). It reports false when the transaction was recorded before.
	RecordTransaction(ctx context.Context, tx *sql.Tx, sender, device, txnID string, ts int64) (bool, error)
	// PruneTransactions forgets transactions recorded before before; it returns how many.
	PruneTransactions(ctx context.Context, before int64) (int64, error)
}
