package internal

import (
	"context"
	"sync"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/storage"
)

// Waiter answers api.WaitAPI from the recorded transactions: a request is taken once its
// transaction ID is committed, with its messages in the outbox. The send-to-device
// consumer calls Applied after each commit; waiters look again then.
type Waiter struct {
	db      storage.Database
	mu      sync.Mutex
	changed chan struct{}
}

// NewWaiter is the Waiter of db.
func NewWaiter(db storage.Database) *Waiter {
	return &Waiter{db: db, changed: make(chan struct{})}
}

// Applied wakes the waiters: the consumer committed input.
func (w *Waiter) Applied() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
}

// QueryToDeviceTaken implements api.WaitAPI. It takes the channel before it looks, so a
// commit between the look and the wait still wakes it.
func (w *Waiter) QueryToDeviceTaken(ctx context.Context, req *api.QueryToDeviceTakenRequest) (*api.QueryToDeviceTakenResponse, error) {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		taken, err := w.db.HasTransaction(ctx, req.Sender, req.SenderDevice, req.TxnID)
		if err != nil {
			return nil, err
		}
		if taken {
			return &api.QueryToDeviceTakenResponse{}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
