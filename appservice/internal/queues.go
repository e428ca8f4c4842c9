// Package internal is the appservice component's logic: one persistent queue per
// application service, drained by its own worker into PUT /_matrix/app/v1/transactions with
// retries and backoff, and the user, alias and third-party queries other components ask
// the services through it.
package internal

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice/storage"
	"github.com/matrix-org/dendrite/internal/config"
)

// MaxItemsPerTransaction bounds the events and ephemeral events of one transaction.
const MaxItemsPerTransaction = 100

// Options configure Queues.
type Options struct {
	DB       storage.Database
	Client   *Client
	Services []*config.ApplicationService
	// MinBackoff is the wait after a service's first failure; each further failure doubles
	// it, up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *logrus.Entry
	Metrics                *Metrics
}

// Queues are the queues of every service with a URL. Items are stored by the consumers
// (storage.Database.Enqueue, in their transactions); Wake, called once those commit, nudges
// the services' workers. Each service has one worker: it sends one transaction at a time,
// in queue order, and deletes what the service acknowledged; a failing service backs off
// on its own and delays no other service and no consumer.
type Queues struct {
	o     Options
	wakes map[string]chan struct{}
}

// NewQueues builds the queues of o.Services (those with a URL).
func NewQueues(o Options) *Queues {
	q := &Queues{o: o, wakes: map[string]chan struct{}{}}
	for _, as := range o.Services {
		if as.URL != "" {
			q.wakes[as.ID] = make(chan struct{}, 1)
		}
	}
	return q
}

// Wake nudges the workers of the services (by ID) that have new items.
func (q *Queues) Wake(serviceIDs []string) {
	for _, id := range serviceIDs {
		if ch, ok := q.wakes[id]; ok {
			select {
			case ch <- struct{}{}:
			default: // already nudged
			}
		}
	}
}

// Run runs a worker per service until ctx ends.
func (q *Queues) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, as := range q.o.Services {
		if wake, ok := q.wakes[as.ID]; ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q.work(ctx, as, wake)
			}()
		}
	}
	wg.Wait()
	return nil
}

// work drains the service's queue whenever it has items, until ctx ends.
func (q *Queues) work(ctx context.Context, as *config.ApplicationService, wake chan struct{}) {
	logger := q.o.Logger.WithField("appservice_id", as.ID)
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		sent, err := q.sendNext(ctx, as)
		switch {
		case err != nil && ctx.Err() == nil:
			backoff = min(max(2*backoff, q.o.MinBackoff), q.o.MaxBackoff)
			logger.WithError(err).WithField("retry_in", backoff.String()).Warn("sending to the application service failed; retrying")
			if !sleep(ctx, backoff) {
				return
			}
		case err == nil && sent:
			backoff = 0
		case err == nil:
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
		}
	}
}

// sendNext sends the service's next transaction; false when its queue is empty.
func (q *Queues) sendNext(ctx context.Context, as *config.ApplicationService) (bool, error) {
	txn, err := q.o.DB.NextTransaction(ctx, as.ID, MaxItemsPerTransaction)
	if err != nil || txn == nil {
		q.updateDepth(ctx, as.ID)
		return false, err
	}
	start := time.Now()
	err = q.o.Client.SendTransaction(ctx, as, txn)
	q.o.Metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		q.o.Metrics.transactions.WithLabelValues(as.ID, "failed").Inc()
		q.updateDepth(ctx, as.ID)
		return false, err
	}
	q.o.Metrics.transactions.WithLabelValues(as.ID, "sent").Inc()
	q.o.Metrics.events.WithLabelValues(as.ID).Add(float64(len(txn.Events) + len(txn.Ephemeral) + len(txn.ToDevice)))
	q.o.Logger.WithFields(logrus.Fields{"appservice_id": as.ID, "txn_id": txn.TxnID, "events": len(txn.Events)}).Debug("transaction sent")
	if err := q.o.DB.DeleteTransaction(ctx, as.ID, txn.TxnID); err != nil {
		return false, err
	}
	q.updateDepth(ctx, as.ID)
	return true, nil
}

// updateDepth sets the service's queue depth and lag metrics, after each attempt to send.
func (q *Queues) updateDepth(ctx context.Context, serviceID string) {
	n, oldest, err := q.o.DB.QueueState(ctx, serviceID)
	if err != nil {
		return // the metrics keep their last values; the next attempt updates them
	}
	q.o.Metrics.queued.WithLabelValues(serviceID).Set(float64(n))
	q.o.Metrics.lag.set(serviceID, oldest)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
