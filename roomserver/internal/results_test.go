package internal

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestResultsAreReleased: a writer gets its message's results while they are in the
// window; an idle partition forgets them once they pass it, with no later message to
// trigger that, and never keeps more than keepResults.
func TestResultsAreReleased(t *testing.T) {
	const window = 200 * time.Millisecond
	r := newResults([]int32{0}, window)
	r.advance(0, 0)
	const n = keepResults + 500
	offsets := make([]int64, n)
	ids := make([]string, n)
	res := make([][]api.Result, n)
	for i := range offsets {
		offsets[i], ids[i] = int64(i), fmt.Sprintf("m%d", i)
		res[i] = []api.Result{{EventID: fmt.Sprintf("$e%d", i)}}
	}
	r.record(0, offsets, ids, res)
	r.advance(0, n)
	held := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.parts[0].byOff)
	}
	if h := held(); h != keepResults {
		t.Fatalf("partition holds %d results, want the newest %d", h, keepResults)
	}
	ctx := context.Background()
	got, err := r.wait(ctx, 0, n-1, ids[n-1])
	if err != nil || len(got) != 1 || got[0].EventID != res[n-1][0].EventID {
		t.Fatalf("wait within the window: %v, %v", got, err)
	}
	if _, err := r.wait(ctx, 0, 0, ids[0]); err == nil {
		t.Fatal("a result beyond keepResults is still known")
	}
	deadline := time.Now().Add(10 * window)
	for held() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("an idle partition still holds %d results %v after the window", held(), 10*window)
		}
		time.Sleep(window / 4)
	}
	if _, err := r.wait(ctx, 0, n-1, ids[n-1]); err == nil {
		t.Fatal("a result past the window is still known")
	}
	r.record(0, []int64{n}, []string{"late"}, [][]api.Result{{{EventID: "$late"}}})
	r.advance(0, n+1)
	if got, err := r.wait(ctx, 0, n, "late"); err != nil || got[0].EventID != "$late" {
		t.Fatalf("a result recorded after the partition emptied: %v, %v", got, err)
	}
}
