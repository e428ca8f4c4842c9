package internal

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// keepResults bounds how many processed messages' results a partition remembers for
// waiting writers. Writers wait right after producing, so only the newest matter.
const keepResults = 4096

// defaultResultWindow is how long results are kept without a configured window: twice the
// writers' default wait (room_server.input_wait_timeout, 30 s).
const defaultResultWindow = time.Minute

// results lets writers wait for the outcome of the input message at a log position. A
// message's results are kept for window after it was processed (at most keepResults per
// partition): a writer waits at most its input_wait_timeout from producing, so after that
// nobody asks for them; an idle partition forgets them too.
type results struct {
	mu     sync.Mutex
	window time.Duration
	parts  map[int32]*partitionResults
}

// published is the outcome of the message at an offset, with the writer's ID for it.
type published struct {
	messageID string
	res       []api.Result
}

// recorded is when the result at an offset was recorded.
type recorded struct {
	offset int64
	at     time.Time
}

type partitionResults struct {
	// next is the first offset not yet processed; -1 until the consumer has started.
	next    int64
	byOff   map[int64]published
	order   []recorded
	changed chan struct{}
	// expiry forgets the oldest results when they are past the window; nil when none is kept.
	expiry *time.Timer
}

// newResults keeps results for window (defaultResultWindow when not positive).
func newResults(partitions []int32, window time.Duration) *results {
	if window <= 0 {
		window = defaultResultWindow
	}
	r := &results{window: window, parts: make(map[int32]*partitionResults, len(partitions))}
	for _, p := range partitions {
		r.parts[p] = &partitionResults{next: -1, byOff: map[int64]published{}, changed: make(chan struct{})}
	}
	return r
}

// advance records the partition's first offset not yet processed (where its consumer
// starts, or how far it has applied) and wakes the waiters: the consumer runtime's Applied.
// The results of the messages it passes were recorded before.
func (r *results) advance(partition int32, next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.parts[partition]
	pr.next = next
	close(pr.changed)
	pr.changed = make(chan struct{})
}

// record keeps the results of processed messages for their waiters, who see them once
// advance passes their offsets. offsets, ids (the messages' MessageID) and res are parallel.
func (r *results) record(partition int32, offsets []int64, ids []string, res [][]api.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.parts[partition]
	now := time.Now()
	for i, off := range offsets {
		pr.byOff[off] = published{messageID: ids[i], res: res[i]}
		pr.order = append(pr.order, recorded{offset: off, at: now})
	}
	r.trim(partition, pr, now)
}

// trim forgets the partition's results past the window or beyond keepResults, and sets
// the timer that forgets the rest when they pass the window.
func (r *results) trim(partition int32, pr *partitionResults, now time.Time) {
	drop := 0
	for drop < len(pr.order) && (len(pr.order)-drop > keepResults || now.Sub(pr.order[drop].at) >= r.window) {
		delete(pr.byOff, pr.order[drop].offset)
		drop++
	}
	pr.order = pr.order[drop:]
	if len(pr.order) == 0 {
		// A map keeps its buckets when emptied: a fresh one releases them.
		pr.byOff, pr.order = map[int64]published{}, nil
		return
	}
	if pr.expiry == nil {
		pr.expiry = time.AfterFunc(pr.order[0].at.Add(r.window).Sub(now), func() { r.expire(partition) })
	}
}

// expire is the expiry timer's: it forgets what passed the window.
func (r *results) expire(partition int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.parts[partition]
	pr.expiry = nil
	r.trim(partition, pr, time.Now())
}

// wait blocks until the message at offset has been processed and returns its results.
// With a messageID, a result of another message at that offset (the log was reset and
// its offsets were given again while this shard's consumer is stopped past them) is 503:
// the writer's client retries with its transaction ID instead of taking another event's
// ID for its own.
func (r *results) wait(ctx context.Context, partition int32, offset int64, messageID string) ([]api.Result, error) {
	for {
		r.mu.Lock()
		pr, ok := r.parts[partition]
		if !ok {
			r.mu.Unlock()
			return nil, matrixerr.Unknown("partition not served by this roomserver")
		}
		if pr.next > offset {
			p, ok := pr.byOff[offset]
			r.mu.Unlock()
			if !ok {
				return nil, matrixerr.Unknown("outcome of the event is no longer known")
			}
			if messageID != "" && p.messageID != messageID {
				return nil, matrixerr.Unavailable(time.Second)
			}
			return p.res, nil
		}
		ch := pr.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
