// Package consumer applies the topics the sync API reads (OutputRoomEvent, OutputClientData,
// OutputKeyChangeEvent and the EDU outputs)
// to its storage and wakes waiting clients once each batch has committed. Each batch is
// applied with its next offset in one transaction; handlers dedupe (by event ID, or by
// unchanged content), so redelivery changes nothing a client can see.
package consumer

import (
	"context"
	"errors"

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
	Offsets  *eventlog.OffsetStore
	DB       storage.Database
	Notifier *notifier.Notifier
	Progress *eventlog.Progress
	Logger   *logrus.Entry
	Metrics  *Metrics
	// LogMetrics, if set, records the guards' recoveries and records lost past the
	// owner's replay window.
	LogMetrics *eventlog.Metrics
}

// partitions consumes every partition of a topic with one batchFunc.
type partitions struct {
	log     eventlog.Log
	offsets *eventlog.OffsetStore
	topic   string
	// sequenced, if set, applies the records by their owner's numbers and guards the
	// partitions against a wiped log (eventlog.Guard), recovering from the owner.
	sequenced  *eventlog.Sequenced
	db         storage.Database
	notifier   *notifier.Notifier
	progress   *eventlog.Progress
	logger     *logrus.Entry
	metrics    *Metrics
	logMetrics *eventlog.Metrics
}

func newPartitions(s Shared, topic string) partitions {
	return partitions{log: s.Log, offsets: s.Offsets, topic: topic, db: s.DB, notifier: s.Notifier, progress: s.Progress, logger: s.Logger, metrics: s.Metrics, logMetrics: s.LogMetrics}
}

// run consumes every partition of the topic until ctx ends (see runGuarded).
func (p *partitions) run(ctx context.Context, apply batchFunc) error {
	return p.runGuarded(ctx, apply)
}

func (p *partitions) runPartition(ctx context.Context, partition int32, next int64, apply batchFunc, advanced func(int64)) error {
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
		advanced(end)
		p.progress.Set(p.topic, partition, end)
		return nil
	})
}

// runGuarded runs every partition under an eventlog.Guard: after a wiped log, a sequenced
// topic (OutputRoomEvent) catches up from its owner, the others restart at the new log's
// start (their owners have no replay; the guard logs the loss as an error).
func (p *partitions) runGuarded(ctx context.Context, apply batchFunc) error {
	g := &eventlog.Guard{Log: p.log, Offsets: p.offsets, Topic: p.topic, Logger: p.logger, Metrics: p.logMetrics}
	if p.sequenced != nil {
		g.Recover = func(ctx context.Context, partition int32) error {
			st, err := p.offsets.Position(ctx, p.topic, partition)
			if err != nil {
				return err
			}
			_, err = p.sequenced.CatchUp(ctx, p.topic, partition, st.Seq, 0, p.seqApply(partition, apply))
			return err
		}
	}
	eg, ctx := errgroup.WithContext(ctx)
	for part := range p.log.Partitions(p.topic) {
		eg.Go(func() error {
			return g.Run(ctx, part, func(ctx context.Context, st eventlog.Stored, advanced func(int64)) error {
				if p.sequenced == nil {
					p.progress.Reset(p.topic, part, st.Next)
					return p.runPartition(ctx, part, st.Next, apply, advanced)
				}
				return p.runSequenced(ctx, part, st, advanced, apply)
			})
		})
	}
	err := eg.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, eventlog.ErrClosed) {
		return nil
	}
	return err
}

// seqApply writes a run of numbered records with apply (see eventlog.SeqApply).
func (p *partitions) seqApply(partition int32, apply batchFunc) eventlog.SeqApply {
	return func(ctx context.Context, recs []eventlog.Record, seq, next int64) error {
		applied, err := apply(ctx, recs, storage.Offset{Topic: p.topic, Partition: partition, Next: max(next, 0), Seq: seq})
		if err != nil {
			return err
		}
		if p.metrics != nil {
			p.metrics.records.WithLabelValues(p.topic).Add(float64(len(recs)))
		}
		p.notifier.Notify(applied)
		return nil
	}
}

// runSequenced consumes a partition from st, applying records by their numbers.
func (p *partitions) runSequenced(ctx context.Context, partition int32, st eventlog.Stored, advanced func(int64), apply batchFunc) error {
	next, last := st.Next, st.Seq
	p.progress.Reset(p.topic, partition, next)
	return p.log.Consume(ctx, p.topic, partition, next, func(ctx context.Context, recs []eventlog.Record) error {
		for len(recs) > 0 && recs[0].Offset < next {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			p.progress.Set(p.topic, partition, next)
			return nil
		}
		var err error
		last, err = p.sequenced.Apply(ctx, p.topic, partition, last, recs, p.seqApply(partition, apply))
		if err != nil {
			p.logger.WithError(err).WithFields(logrus.Fields{"topic": p.topic, "partition": partition, "offset": recs[0].Offset}).Warn("applying records failed; retrying")
			return err
		}
		next = recs[len(recs)-1].Offset + 1
		advanced(next)
		p.progress.Set(p.topic, partition, next)
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
