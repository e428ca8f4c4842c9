package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// outbox serializes the producing of stored output records: one sender at a time reads the
// unproduced rows in the order they were stored and produces them in that order, so the
// records of a partition reach the log in their numbers' order (a row becomes visible only
// after every row numbered below it in its partition: see storage.Output).
type outbox struct {
	mu   sync.Mutex
	wake chan struct{}
}

// outboxRetry bounds the wait between attempts to produce what a failed attempt left.
const outboxRetry = 5 * time.Second

// pruneInterval is how often, at most, produced records past the replay window are deleted.
const pruneInterval = 10 * time.Minute

// maxOutputRecords caps a QueryOutputRecords answer.
const maxOutputRecords = 500

// fullTopic is the configured name of one of the userapi's output topics ("" when it is
// not produced here).
func (u *UserAPI) fullTopic(topic string) string {
	switch topic {
	case api.TopicOutputClientData:
		return u.ClientDataTopic
	case api.TopicOutputKeyChangeEvent:
		return u.KeyChangeTopic
	}
	return ""
}

// output is the outbox record announcing a change on topic under key, made by payload from
// its number; nil (nothing announced) without a log or when the topic is not produced.
func (u *UserAPI) output(topic, key string, payload func(seq int64) ([]byte, error)) *storage.Output {
	full := u.fullTopic(topic)
	if u.Log == nil || full == "" {
		return nil
	}
	return &storage.Output{Topic: topic, Partition: eventlog.PartitionFor([]byte(key), u.Log.Partitions(full)), Key: key, Payload: payload}
}

// Announce produces the stored records not yet produced, after a change was committed (the
// consumer of InputDeviceListUpdate calls it too). A failure is logged and left to
// RunOutbox, which retries: the change and its announcement are stored, so the caller's
// request succeeded.
func (u *UserAPI) Announce(ctx context.Context) {
	if u.Log == nil {
		return
	}
	if err := u.sendOutbox(ctx); err != nil {
		u.Logger.WithError(err).Warn("producing stored announcements failed; retrying in the background")
		select {
		case u.out.wake <- struct{}{}:
		default:
		}
	}
}

// sendOutbox produces every stored record not yet produced and marks them produced. A
// record produced but not marked (the process died in between) is produced again, which
// readers skip by its number.
func (u *UserAPI) sendOutbox(ctx context.Context) error {
	u.out.mu.Lock()
	defer u.out.mu.Unlock()
	rows, err := u.DB.Outbox(ctx)
	if err != nil || len(rows) == 0 {
		return err
	}
	var topics []string
	msgs := map[string][]eventlog.Message{}
	ids := make([]int64, 0, len(rows))
	for _, o := range rows {
		ids = append(ids, o.ID)
		full := u.fullTopic(o.Topic)
		if full == "" {
			continue // no longer produced by this configuration: nobody reads it
		}
		if _, ok := msgs[full]; !ok {
			topics = append(topics, full)
		}
		msgs[full] = append(msgs[full], eventlog.Message{Key: []byte(o.Key), Value: o.Payload})
	}
	for _, t := range topics {
		if _, err := u.Log.Produce(ctx, t, msgs[t]...); err != nil {
			return fmt.Errorf("produce to %s: %w", t, err)
		}
	}
	return u.DB.MarkProduced(ctx, ids)
}

// RunOutbox produces what a crash or a failed produce left in the outbox (at start, and
// whenever announce failed, retrying until it succeeds), and deletes the produced records
// older than OutputWindow (never with a negative window), until ctx ends.
func (u *UserAPI) RunOutbox(ctx context.Context) error {
	if u.Log == nil {
		return nil
	}
	prune := time.NewTicker(min(max(u.OutputWindow/2, time.Second), pruneInterval))
	defer prune.Stop()
	retry := time.NewTimer(0) // at start: what the previous run left
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			if u.OutputWindow < 0 {
				continue
			}
			if err := u.DB.PruneOutbox(ctx, time.Now().Add(-u.OutputWindow)); err != nil && ctx.Err() == nil {
				u.Logger.WithError(err).Warn("pruning the userapi outbox failed")
			}
			continue
		case <-u.out.wake:
		case <-retry.C:
		}
		if err := u.sendOutbox(ctx); err != nil && ctx.Err() == nil {
			u.Logger.WithError(err).Warn("producing stored announcements failed; retrying")
			retry.Reset(outboxRetry)
		}
	}
}

// QueryOutputRecords implements api.ReplayAPI from the outbox. A gap between AfterSeq and
// the first record kept means the records were pruned (older than the replay window).
// AfterSeq 0 asks for the oldest records kept, and is never past the window: it is how a
// reader learns where they start, even when none is kept.
func (u *UserAPI) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	if req.Topic != api.TopicOutputClientData && req.Topic != api.TopicOutputKeyChangeEvent {
		return nil, matrixerr.InvalidParam("not an output topic of the userapi")
	}
	limit := req.Limit
	if limit <= 0 || limit > maxOutputRecords {
		limit = maxOutputRecords
	}
	rows, last, err := u.DB.OutputsAfter(ctx, req.Topic, req.Partition, req.AfterSeq, limit)
	if err != nil {
		return nil, err
	}
	next := req.AfterSeq + 1
	if req.AfterSeq > 0 && ((len(rows) > 0 && rows[0].Seq != next) || (len(rows) == 0 && last >= next)) {
		return nil, matrixerr.NotFound(fmt.Sprintf("output records after %d are past the replay window", req.AfterSeq))
	}
	res := &api.QueryOutputRecordsResponse{Records: make([]json.RawMessage, len(rows)), LastSeq: last}
	for i, o := range rows {
		res.Records[i] = o.Payload
	}
	return res, nil
}

// RemoteChange announces a change of the remote user userID's cached device list, made by
// change from the stream ID this server announces it at (see storage.Announcement).
func (u *UserAPI) RemoteChange(userID string, change func(stream int64) *api.OutputKeyChangeEvent) storage.Announcement[int64] {
	return func(stream int64) ([]*storage.Output, error) {
		return []*storage.Output{u.keyChangeOutput(userID, *change(stream))}, nil
	}
}
