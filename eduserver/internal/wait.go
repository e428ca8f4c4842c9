package internal

import (
	"context"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
)

// Waiter answers api.WaitAPI from the recorded transactions: a request is taken once its
// transaction ID is committed, with its messages in the outbox. The send-to-device
// consumer calls Applied after each commit; waiters look again then.
type Waiter struct {
	db      storage.Database
	changes *eventlog.Waiter
}

// NewWaiter is the Waiter of db.
func NewWaiter(db storage.Database) *Waiter {
	return &Waiter{db: db, changes: eventlog.NewWaiter()}
}

// Applied wakes the waiters: the consumer committed input.
func (w *Waiter) Applied() {
	w.changes.Applied()
}

// QueryToDeviceTaken implements api.WaitAPI.
func (w *Waiter) QueryToDeviceTaken(ctx context.Context, req *api.QueryToDeviceTakenRequest) (*api.QueryToDeviceTakenResponse, error) {
	err := w.changes.Wait(ctx, func(ctx context.Context) (bool, error) {
		return w.db.HasTransaction(ctx, req.Sender, req.SenderDevice, req.TxnID)
	})
	if err != nil {
		return nil, err
	}
	return &api.QueryToDeviceTakenResponse{}, nil
}
