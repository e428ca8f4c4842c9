package internal

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// Progress follows how far a consumer of one topic has applied each partition, so that
// another consumer can wait for it: the push reader evaluates an event only once every
// push rule change written before the event was applied.
type Progress struct {
	Log   eventlog.Log
	Topic string

	mu      sync.Mutex
	next    map[int32]int64
	changed chan struct{}
}

// NewProgress follows topic of log.
func NewProgress(log eventlog.Log, topic string) *Progress {
	return &Progress{Log: log, Topic: topic, next: map[int32]int64{}, changed: make(chan struct{})}
}

// Applied is the consumer's eventlog.Consumer.Applied callback.
func (p *Progress) Applied(partition int32, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next[partition] = next
	close(p.changed)
	p.changed = make(chan struct{})
}

// CatchUp waits, at most maxWait, until the consumer has applied every record the topic
// held when CatchUp was called. It returns early (nil) when the wait runs out: the
// caller proceeds with what was applied.
func (p *Progress) CatchUp(ctx context.Context, maxWait time.Duration) error {
	ends, err := p.Log.EndOffsets(ctx, p.Topic)
	if err != nil {
		return err
	}
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		p.mu.Lock()
		done, changed := true, p.changed
		for part, end := range ends {
			if p.next[int32(part)] < end {
				done = false
				break
			}
		}
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
