package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// BenchmarkTakenWait: writers at once, each handing inputs over one after the other to one
// of the partitions' consumers and waiting for each to be taken (QueryInputTaken), while
// each consumer takes at most batch of what is pending in one transaction. Reports the
// look-ups of the taken table per acknowledged input.
// BenchmarkTakenWait: writers at once, each handing inputs over one after the other to one
// of the partitions' consumers and waiting for each to be taken (QueryInputTaken), while
// each consumer takes at most batch of what is pending in one transaction. Reports the
// look-ups of the taken table per acknowledged input.
func BenchmarkTakenWait(b *testing.B) {
	for _, c := range []struct{ writers, partitions, batch int }{{64, 1, 100}, {64, 8, 100}, {256, 8, 100}, {64, 8, 1}} {
		writers, partitions := c.writers, c.partitions
		b.Run(fmt.Sprintf("writers=%d/partitions=%d/batch=%d", writers, partitions, c.batch), func(b *testing.B) {
			benchCountingDatabases(b, func(b *testing.B, db *countingDB) {
				ctx := context.Background()
				taken, err := eventlog.NewTaken(ctx, db.DB, eventlog.TakenOptions{Component: "bench", Keep: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				inputs := make([]chan string, partitions)
				consumed := make(chan error, partitions)
				for p := range inputs {
					inputs[p] = make(chan string, 1024)
					go func() { consumed <- consumeInputs(ctx, db.DB, taken, inputs[p], c.batch) }()
				}
				before := db.Count("SELECT", "bench_taken_inputs")
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < b.N; i += writers {
							id := eventlog.NewInputID()
							inputs[w%partitions] <- id
							if _, err := taken.QueryInputTaken(ctx, &eventlog.QueryInputTakenRequest{InputID: id}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(db.Count("SELECT", "bench_taken_inputs")-before)/float64(b.N), "lookups/op")
				for _, in := range inputs {
					close(in)
				}
				for range inputs {
					if err := <-consumed; err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
