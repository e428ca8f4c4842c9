package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// outboxRetry bounds the wait between attempts to produce what a failed attempt left.
const outboxRetry = 5 * time.Second

// pruneInterval is how often, at most, produced records past the replay window are deleted.
const pruneInterval = 10 * time.Minute

// maxOutputRecords caps a QueryOutputRecords answer.
const maxOutputRecords = 500

// Outbox produces the stored OutputSendToDeviceEvent records, one sender at a time, in the
// order they were stored, so the records of a partition reach the log in their numbers'
// order; it serves them to readers that lost them with the log (api.ReplayAPI).
type Outbox struct {
	DB    storage.Database
	Log   eventlog.Log
	Topic string
	// Window is how long produced records are kept for replay
	// (edu_server.output_replay_window); negative keeps them forever.
	Window time.Duration
	Logger *logrus.Entry
	mu     sync.Mutex
	wake   chan struct{}
}

// NewOutbox is the outbox of db producing to topic, keeping produced records for window.
func NewOutbox(db storage.Database, log eventlog.Log, topic string, window time.Duration, logger *logrus.Entry) *Outbox {
	return &Outbox{DB: db, Log: log, Topic: topic, Window: window, Logger: logger, wake: make(chan struct{}, 1)}
}

// Wake asks Run to produce what was stored; it never blocks.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// send produces every stored record not yet produced and marks them produced. A record
// produced but not marked (the process died in between) is produced again, which readers
// skip by its number.
func (o *Outbox) send(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	rows, err := o.DB.Outbox(ctx)
	if err != nil || len(rows) == 0 {
		return err
	}
	msgs := make([]eventlog.Message, 0, len(rows))
	ids := make([]int64, 0, len(rows))
	for _, r := range rows {
		ids = append(ids, r.ID)
		msgs = append(msgs, eventlog.Message{Key: []byte(r.Key), Value: r.Payload})
	}
	if _, err = o.Log.Produce(ctx, o.Topic, msgs...); err != nil {
		return fmt.Errorf("produce to %s: %w", o.Topic, err)
	}
	return o.DB.MarkProduced(ctx, ids)
}

// Run produces what was stored whenever woken (and at start: what a crash left), retrying
// a failed produce, and deletes produced records older than Window (never with a negative
// Window), until ctx ends.
func (o *Outbox) Run(ctx context.Context) error {
	prune := time.NewTicker(min(max(o.Window/2, time.Second), pruneInterval))
	defer prune.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			if o.Window < 0 {
				continue
			}
			if err := o.DB.PruneOutbox(ctx, time.Now().Add(-o.Window)); err != nil && ctx.Err() == nil {
				o.Logger.WithError(err).Warn("pruning the eduserver outbox failed")
			}
			continue
		case <-o.wake:
		case <-retry.C:
		}
		if err := o.send(ctx); err != nil && ctx.Err() == nil {
			o.Logger.WithError(err).Warn("producing stored to-device messages failed; retrying")
			retry.Reset(outboxRetry)
		}
	}
}

// QueryOutputRecords implements api.ReplayAPI from the outbox. A gap between AfterSeq and
// the first record kept means the records were pruned (older than the replay window).
// AfterSeq 0 asks for the oldest records kept, and is never past the window.
func (o *Outbox) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	limit := req.Limit
	if limit <= 0 || limit > maxOutputRecords {
		limit = maxOutputRecords
	}
	rows, last, err := o.DB.OutputsAfter(ctx, req.Partition, req.AfterSeq, limit)
	if err != nil {
		return nil, err
	}
	next := req.AfterSeq + 1
	if req.AfterSeq > 0 && ((len(rows) > 0 && rows[0].Seq != next) || (len(rows) == 0 && last >= next)) {
		return nil, matrixerr.NotFound(fmt.Sprintf("output records after %d are past the replay window", req.AfterSeq))
	}
	res := &api.QueryOutputRecordsResponse{Records: make([]json.RawMessage, len(rows)), LastSeq: last}
	for i, r := range rows {
		res.Records[i] = r.Payload
	}
	return res, nil
}
