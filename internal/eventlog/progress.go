package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Progress is how far a reader's consumers have applied each partition. Request handlers use it
// for read-your-writes: a writer answers its client only after its record is in the log, so
// a handler that waits until every partition is applied up to the log's end as it was when
// the request arrived sees everything the client was told had happened.
type Progress struct {
	log Log

	mu      sync.Mutex
	applied map[partitionKey]int64
	changed chan struct{} // closed and replaced whenever applied moves
	topics  []string
}

// ErrBehind is what CatchUp returns (wrapped) when its wait ran out: the caller may go on
// with what is applied, which is consistent, only older.
var ErrBehind = errors.New("consumers still behind the log")

type partitionKey struct {
	topic     string
	partition int32
}

// NewProgress tracks the partitions of topics on log.
func NewProgress(log Log, topics ...string) *Progress {
	return &Progress{log: log, applied: map[partitionKey]int64{}, changed: make(chan struct{}), topics: topics}
}

// Set records that the partition is applied up to (not including) next.
func (p *Progress) Set(topic string, partition int32, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := partitionKey{topic, partition}
	if next <= p.applied[k] {
		return
	}
	p.applied[k] = next
	close(p.changed)
	p.changed = make(chan struct{})
}

// Reset records that the partition is applied up to next, even below what was recorded:
// its consumer restarted at the start of a new log (eventlog.Guard).
func (p *Progress) Reset(topic string, partition int32, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied[partitionKey{topic, partition}] = next
	close(p.changed)
	p.changed = make(chan struct{})
}

// CatchUp waits, at most maxWait, until every tracked partition is applied up to the end
// the log reports now; past maxWait it returns an error wrapping ErrBehind.
func (p *Progress) CatchUp(ctx context.Context, maxWait time.Duration) error {
	var want []partitionKey
	var ends []int64
	all, err := p.log.EndOffsetsOf(ctx, p.topics)
	if err != nil {
		return fmt.Errorf("read the end of the log: %w", err)
	}
	for i, topic := range p.topics {
		for part, end := range all[i] {
			want, ends = append(want, partitionKey{topic, int32(part)}), append(ends, end)
		}
	}
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		p.mu.Lock()
		behind := false
		for i, k := range want {
			if p.applied[k] < ends[i] {
				behind = true
				break
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("%w after %s", ErrBehind, maxWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
