package internal

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/pushserver/storage"
)

// pruneBatch is how many notifications one pruning transaction reads: short enough that
// the reader's transactions interleave.
const pruneBatch = 1000

// Pruner deletes notifications older than their retention (push_server.
// notification_retention and highlight_retention) so that the push database stays the
// size of the retention, not of the history; the unread counts live in a summary and
// do not change.
type Pruner struct {
	DB storage.Database
	// Notify and Highlight are the retentions; a zero Highlight keeps highlights forever.
	Notify, Highlight time.Duration
	Logger            *logrus.Entry
}

// Interval is how often Run prunes: a quarter of the retention, between a second and an
// hour.
func (p *Pruner) Interval() time.Duration {
	return min(max(p.Notify/4, time.Second), time.Hour)
}

// Run prunes at once and then every Interval until ctx ends. A failed run is logged and
// retried at the next.
func (p *Pruner) Run(ctx context.Context) error {
	tick := time.NewTicker(p.Interval())
	defer tick.Stop()
	for {
		n, err := p.Prune(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			p.Logger.WithError(err).Warn("prune notifications")
		case n > 0:
			p.Logger.WithField("deleted", n).Debug("pruned notifications")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Prune deletes, batch by batch, the notifications older than their retention at now,
// and reports how many it deleted.
func (p *Pruner) Prune(ctx context.Context, now time.Time) (int, error) {
	c := storage.PruneCutoffs{NotifyBefore: now.Add(-p.Notify).UnixMilli(), Batch: pruneBatch}
	if p.Highlight > 0 {
		c.HighlightBefore = now.Add(-p.Highlight).UnixMilli()
	}
	var after int64
	total := 0
	for {
		last, n, done, err := p.DB.PruneNotifications(ctx, after, c)
		if err != nil {
			return total, err
		}
		total += n
		if done || ctx.Err() != nil {
			return total, ctx.Err()
		}
		after = last
	}
}
