package internal

import (
	"context"
	"sync"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// keepResults bounds how many processed messages' results a partition remembers for
// waiting writers. Writers wait right after producing, so only the newest matter.
const keepResults = 4096

// results lets writers wait for the outcome of the input message at a log position.
type results struct {
	mu    sync.Mutex
	parts map[int32]*partitionResults
}

type partitionResults struct {
	// next is the first offset not yet processed; -1 until the consumer has started.
	next    int64
	byOff   map[int64][]api.Result
	order   []int64
	changed chan struct{}
}

func newResults(partitions []int32) *results {
	r := &results{parts: make(map[int32]*partitionResults, len(partitions))}
	for _, p := range partitions {
		r.parts[p] = &partitionResults{next: -1, byOff: map[int64][]api.Result{}, changed: make(chan struct{})}
	}
	return r
}

// start records where the partition's consumer begins.
func (r *results) start(partition int32, next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.parts[partition]
	pr.next = next
	close(pr.changed)
	pr.changed = make(chan struct{})
}

// publish records the results of processed messages and wakes their waiters. offsets and
// res are parallel; next is the partition's new first unprocessed offset.
func (r *results) publish(partition int32, offsets []int64, res [][]api.Result, next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.parts[partition]
	for i, off := range offsets {
		pr.byOff[off] = res[i]
		pr.order = append(pr.order, off)
	}
	for len(pr.order) > keepResults {
		delete(pr.byOff, pr.order[0])
		pr.order = pr.order[1:]
	}
	pr.next = next
	close(pr.changed)
	pr.changed = make(chan struct{})
}

// wait blocks until the message at offset has been processed and returns its results.
func (r *results) wait(ctx context.Context, partition int32, offset int64) ([]api.Result, error) {
	for {
		r.mu.Lock()
		pr, ok := r.parts[partition]
		if !ok {
			r.mu.Unlock()
			return nil, matrixerr.Unknown("partition not served by this roomserver")
		}
		if pr.next > offset {
			res, ok := pr.byOff[offset]
			r.mu.Unlock()
			if !ok {
				return nil, matrixerr.Unknown("outcome of the event is no longer known")
			}
			return res, nil
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
