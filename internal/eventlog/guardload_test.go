package eventlog_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// TestGuardsShareLogChecks: the Guards of a process's partitions (one per partition, as
// the roomserver and the sync API run them) check the log together, not each on its own:
// 32 guarded partitions cost a few Metadata and ListOffsets requests per interval, not 32
// of each. Before, every partition's watch asked the broker on its own ticker, and the
// tickers' phases (spread by the serialised start-up checks) seldom met: 16 partitions
// asked 6 (SQLite offsets) to 13.5 (PostgreSQL) times per interval, and a roomserver shard
// spent about 6% of its capped CPU on it (issue 17).
func TestGuardsShareLogChecks(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		const partitions, interval, periods = 32, 100 * time.Millisecond, 20
		c := newCluster(t)
		var metadata, listOffsets atomic.Int64
		c.ControlKey(kmsg.Metadata.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			metadata.Add(1)
			return nil, nil, false
		})
		c.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			listOffsets.Add(1)
			return nil, nil, false
		})
		k := newKafka(t, kafkaConfig(c.ListenAddrs(), partitions))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := k.Produce(ctx, "guarded", eventlog.Message{Key: []byte("room"), Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		offsets, err := eventlog.NewOffsetStore(ctx, db, "guarded")
		if err != nil {
			t.Fatal(err)
		}
		run, stop := context.WithCancel(ctx)
		var started, wg sync.WaitGroup
		started.Add(partitions)
		for p := range int32(partitions) {
			g := &eventlog.Guard{Log: k, Offsets: offsets, Topic: "guarded", Interval: interval, Logger: quietLogger()}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = g.Run(run, p, func(ctx context.Context, _ eventlog.Stored, _ func(int64)) error {
					started.Done()
					<-ctx.Done()
					return ctx.Err()
				}) // ends with run
			}()
		}
		started.Wait()
		m0, l0, t0 := metadata.Load(), listOffsets.Load(), time.Now()
		time.Sleep(periods * interval)
		m, l, elapsed := metadata.Load()-m0, listOffsets.Load()-l0, time.Since(t0)
		stop()
		wg.Wait()
		// One check per partition per interval would be partitions*ticks requests of each
		// kind; shared checks need one to three per tick (a request in flight serves only
		// the callers that asked before it started). Allow eight per tick: a loaded machine delays some wake-ups.
		ticks := int64(elapsed/interval) + 1
		t.Logf("%d partitions, %d intervals: %d Metadata, %d ListOffsets requests", partitions, ticks, m, l)
		if m > 8*ticks || l > 8*ticks {
			t.Errorf("%d Metadata and %d ListOffsets requests in %d intervals of %d guarded partitions; want at most %d each", m, l, ticks, partitions, 8*ticks)
		}
	})
}
