// Package consumer applies the topics the sync API reads (OutputRoomEvent, OutputClientData,
// OutputKeyChangeEvent and the EDU outputs)
// to its storage and wakes waiting clients once each batch has committed. Each batch is
// applied with its next offset in one transaction; handlers dedupe (by event ID, or by
// unchanged content), so redelivery changes nothing a client can see.
package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// Metrics counts consumed records and dead letters per topic; nil counts nothing.
type Metrics struct {
	records     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
}

// NewMetrics registers the consumer metrics on reg (which may be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_syncapi_consumed_records_total",
			Help: "Log records applied by the sync API."}, []string{"topic"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_syncapi_dead_letters_total",
			Help: "Log records the sync API could never apply."}, []string{"topic"}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.deadLetters)
	}
	return m
}

// batchFunc prepares and writes one batch of records, returning what changed. It is called
// again with the same records if it fails.
type batchFunc func(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error)

// Shared is what both consumers are built from.
type Shared struct {
	Log      eventlog.Log
	DB       storage.Database
	Notifier *notifier.Notifier
	Progress *eventlog.Progress
	Logger   *logrus.Entry
	Metrics  *Metrics
}

// partitions consumes every partition of a topic with one batchFunc.
type partitions struct {
	log      eventlog.Log
	topic    string
	db       storage.Database
	notifier *notifier.Notifier
	progress *eventlog.Progress
	logger   *logrus.Entry
	metrics  *Metrics
}

func newPartitions(s Shared, topic string) partitions {
	return partitions{log: s.Log, topic: topic, db: s.DB, notifier: s.Notifier, progress: s.Progress, logger: s.Logger, metrics: s.Metrics}
}

func (p *partitions) run(ctx context.Context, apply batchFunc) error {
	// The offsets are loaded one after the other, not in the partitions' goroutines: that
	// opened a database connection per partition at once.
	next := make([]int64, p.log.Partitions(p.topic))
	for part := range next {
		n, err := p.db.NextOffset(ctx, p.topic, int32(part))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("load offset of %s/%d: %w", p.topic, part, err)
		}
		next[part] = n
	}
	g, ctx := errgroup.WithContext(ctx)
	for part := range next {
		g.Go(func() error { return p.runPartition(ctx, int32(part), next[part], apply) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, eventlog.ErrClosed) {
		return nil
	}
	return err
}

func (p *partitions) runPartition(ctx context.Context, partition int32, next int64, apply batchFunc) error {
	p.progress.Set(p.topic, partition, next)
	return p.log.Consume(ctx, p.topic, partition, next, func(ctx context.Context, recs []eventlog.Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			p.progress.Set(p.topic, partition, next)
			return nil
		}
		end := recs[len(recs)-1].Offset + 1
		applied, err := apply(ctx, recs, storage.Offset{Topic: p.topic, Partition: partition, Next: end})
		if err != nil {
			p.logger.WithError(err).WithFields(logrus.Fields{"topic": p.topic, "partition": partition, "offset": recs[0].Offset}).Warn("applying records failed; retrying")
			return err
		}
		next = end
		if p.metrics != nil {
			p.metrics.records.WithLabelValues(p.topic).Add(float64(len(recs)))
		}
		p.notifier.Notify(applied)
		p.progress.Set(p.topic, partition, end)
		return nil
	})
}

// deadLetter logs and counts a record that can never be applied.
func (p *partitions) deadLetter(rec eventlog.Record, err error) storage.DeadLetter {
	p.logger.WithError(err).WithFields(logrus.Fields{"topic": p.topic, "partition": rec.Partition, "offset": rec.Offset}).Error("record dead-lettered")
	if p.metrics != nil {
		p.metrics.deadLetters.WithLabelValues(p.topic).Inc()
	}
	return storage.DeadLetter{Offset: rec.Offset, Err: err.Error()}
}
