package internal

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
)

// Waiter answers api.WaitAPI from the recorded transactions: a request is taken once its
// transaction ID is committed, with its messages in the outbox. The send-to-device
// consumer's handler, run through Prepare, notes each transaction it records (Took); once
// the batch committed, only the waiters of those transactions are woken.
type Waiter struct {
	db      storage.Database
	changes *eventlog.Waiter
}

// NewWaiter is the Waiter of db.
func NewWaiter(db storage.Database) *Waiter {
	return &Waiter{db: db, changes: eventlog.NewWaiter()}
}

// Prepare is the send-to-device consumer's Prepare of handle (eventlog.Waiter.Prepare).
func (w *Waiter) Prepare(handle func(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error) func(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return w.changes.Prepare(handle)
}

// Took notes that sender's device's transaction txnID is recorded in tx: its waiters are
// woken once tx committed.
func (w *Waiter) Took(tx *sql.Tx, sender, device, txnID string) {
	w.changes.Took(tx, txnKey(sender, device, txnID))
}

// QueryToDeviceTaken implements api.WaitAPI. It looks the transaction up once; from then
// on the commit that records it wakes it.
func (w *Waiter) QueryToDeviceTaken(ctx context.Context, req *api.QueryToDeviceTakenRequest) (*api.QueryToDeviceTakenResponse, error) {
	err := w.changes.Wait(ctx, txnKey(req.Sender, req.SenderDevice, req.TxnID), func(ctx context.Context) (bool, error) {
		return w.db.HasTransaction(ctx, req.Sender, req.SenderDevice, req.TxnID)
	})
	if err != nil {
		return nil, err
	}
	return &api.QueryToDeviceTakenResponse{}, nil
}

// txnKey names a transaction for the eventlog.Waiter; quoting keeps two transactions from
// sharing a key, whatever their parts hold.
func txnKey(sender, device, txnID string) string {
	return fmt.Sprintf("%q %q %q", sender, device, txnID)
}
