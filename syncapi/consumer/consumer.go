// Package consumer applies the topics the sync API reads (OutputRoomEvent, OutputClientData,
// OutputKeyChangeEvent and the EDU outputs)
// to its storage and wakes waiting clients once each batch has committed. Every topic is read
// by an eventlog.Consumer, the one consumer runtime: a batch is decoded (and what it needs
// from other components fetched) before the write transaction opens, written with its
// checkpoint in one transaction, and announced to the notifier once that committed.
// Handlers dedupe (by event ID, or by unchanged content), so redelivery changes nothing a
// client can see.
package consumer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Shared is what every consumer is built from.
type Shared struct {
	Log eventlog.Log
	// SQL is the database DB writes to, for what the consumer runtime writes itself: dead
	// letters, and checkpoints past records that change nothing.
	SQL      *sqlutil.DB
	Offsets  *eventlog.OffsetStore
	DB       storage.Database
	Notifier *notifier.Notifier
	Progress *eventlog.Progress
	Logger   *logrus.Entry
	// LogMetrics, if set, counts the records consumed and dead-lettered, and records the
	// guards' recoveries and the records lost past the owner's replay window.
	LogMetrics *eventlog.Metrics
}

// reader is what every consumer type holds: its consumer runtime, the storage it writes
// to and the logger.
type reader struct {
	c      *eventlog.Consumer
	db     storage.Database
	logger *logrus.Entry
}

// Run consumes every partition until ctx ends.
func (r *reader) Run(ctx context.Context) error {
	return r.c.Run(ctx)
}

// newReader is the reader of topic whose first phase is prepare (see newConsumer).
func newReader(s Shared, topic, stream string, sequenced *eventlog.Sequenced, prepare func(ctx context.Context, r *reader, recs []eventlog.Record) (writeFunc, error)) reader {
	r := &reader{db: s.DB, logger: s.Logger}
	r.c = newConsumer(s, topic, stream, sequenced, func(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
		return prepare(ctx, r, recs)
	}, nil)
	return *r
}

// userSequence applies a userapi topic's records by their numbers and recovers what a wiped
// log lost from the userapi (uapi.OutputSequence); nil (no replay) applies them as they come.
func userSequence(replay uapi.ReplayAPI, topic string) *eventlog.Sequenced {
	if replay == nil {
		return nil
	}
	return uapi.OutputSequence(replay, topic)
}

// writeFunc writes a prepared batch and saves offset with it in one transaction, returning
// what changed.
type writeFunc func(ctx context.Context, offset storage.Offset) (*storage.Applied, error)

// prepareFunc is a consumer's first phase: it decodes a batch, failing with an error marked
// eventlog.Poison for a record that never will, and fetches what the write needs from other
// components.
type prepareFunc func(ctx context.Context, recs []eventlog.Record) (writeFunc, error)

// newConsumer is the guarded consumer of every partition of topic: prepare makes each
// batch's write, and once the write committed, after (if set) runs and the notifier wakes
// the clients waiting for what changed. With sequenced set the records are applied by
// their owner's numbers, and what a wiped log lost is recovered from the owner.
func newConsumer(s Shared, topic, stream string, sequenced *eventlog.Sequenced, prepare prepareFunc,
	after func(ctx context.Context, applied *storage.Applied)) *eventlog.Consumer {
	return &eventlog.Consumer{Log: s.Log, DB: s.SQL, Offsets: s.Offsets, Topic: topic, Partitions: eventlog.AllPartitions(s.Log, topic),
		Name: "syncapi", Progress: s.Progress, Sequenced: sequenced, Guarded: true, Logger: s.Logger, Metrics: s.LogMetrics,
		Prepare: func(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
			write, err := prepare(ctx, recs)
			if err != nil {
				return eventlog.Step{}, err
			}
			var applied *storage.Applied
			end := func() {}
			return eventlog.Step{
				Commit: func(ctx context.Context, cp eventlog.Checkpoint) error {
					// From its commit until Notify, a sync may see what the write stored but
					// not know of it: the notifier reports stream as changed meanwhile.
					end = s.Notifier.Writing(stream)
					applied, err = write(ctx, storage.Offset{Topic: cp.Topic, Partition: cp.Partition, Next: cp.Next, Seq: cp.Seq})
					if err != nil {
						end()
					}
					return err
				},
				After: func(ctx context.Context) {
					if after != nil {
						after(ctx, applied)
					}
					s.Notifier.Notify(applied)
					end()
				},
			}, nil
		}}
}

// decodeAll decodes every record into T, failing (marked eventlog.Poison) on the first that
// does not decode or that valid rejects.
func decodeAll[T any](recs []eventlog.Record, valid func(*T) error) ([]T, error) {
	out := make([]T, 0, len(recs))
	for _, rec := range recs {
		var v T
		err := json.Unmarshal(rec.Value, &v)
		if err == nil {
			err = valid(&v)
		}
		if err != nil {
			return nil, eventlog.Poison(fmt.Errorf("decode %s: %w", rec.Topic, err))
		}
		out = append(out, v)
	}
	return out, nil
}
