// Package logtest is the contract every eventlog.Log implementation must pass: the embedded
// log runs it on each database engine, the Kafka log on an in-process kfake cluster.
package logtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// collect consumes a partition from offset from until it has n records or the deadline.
func collect(t *testing.T, l eventlog.Log, topic string, p int32, from int64, n int) []eventlog.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []eventlog.Record
	err := l.Consume(ctx, topic, p, from, func(_ context.Context, recs []eventlog.Record) error {
		got = append(got, recs...)
		if len(got) >= n {
			cancel()
		}
		return nil
	})
	if len(got) < n {
		t.Fatalf("partition %d: got %d of %d records (%v)", p, len(got), n, err)
	}
	return got
}

// RunLogContract runs the contract against logs made by newLog.
func RunLogContract(t *testing.T, newLog func(t *testing.T) eventlog.Log) {
	t.Run("ordered dense offsets per key", func(t *testing.T) {
		l := newLog(t)
		ctx := context.Background()
		var pos []eventlog.Position
		for i := 0; i < 20; i++ {
			p, err := l.Produce(ctx, "order", eventlog.Message{Key: []byte("room-a"), Value: []byte(fmt.Sprint(i))})
			if err != nil {
				t.Fatal(err)
			}
			pos = append(pos, p[0])
		}
		want := eventlog.PartitionFor([]byte("room-a"), l.Partitions("order"))
		for i, p := range pos {
			if p.Partition != want || p.Offset != int64(i) {
				t.Fatalf("record %d at %+v, want partition %d offset %d", i, p, want, i)
			}
		}
		ends, err := l.EndOffsets(ctx, "order")
		if err != nil || int32(len(ends)) != l.Partitions("order") {
			t.Fatalf("end offsets %v (%v), want one per partition", ends, err)
		}
		for p, end := range ends {
			if wantEnd := map[bool]int64{true: 20}[int32(p) == want]; end != wantEnd {
				t.Fatalf("end offset of partition %d is %d, want %d", p, end, wantEnd)
			}
		}
		recs := collect(t, l, "order", want, 5, 15)
		for i, r := range recs {
			if string(r.Value) != fmt.Sprint(i+5) || r.Offset != int64(i+5) {
				t.Fatalf("record %d is %q at %d", i, r.Value, r.Offset)
			}
		}
	})
	t.Run("end offsets are never older than the call", func(t *testing.T) {
		l := newLog(t)
		ctx := context.Background()
		topics := []string{"ends-a", "ends-b"}
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					topic := topics[(w+i)%2]
					pos, err := l.Produce(ctx, topic, eventlog.Message{Key: []byte(fmt.Sprint("k", w)), Value: []byte("v")})
					if err != nil {
						errs <- err
						return
					}
					// Answers shared between concurrent callers must still include what
					// each caller produced before asking.
					all, err := l.EndOffsetsOf(ctx, topics)
					if err != nil {
						errs <- err
						return
					}
					ends := all[(w+i)%2]
					if ends[pos[0].Partition] <= pos[0].Offset {
						errs <- fmt.Errorf("end of %s/%d is %d after producing at %d", topic, pos[0].Partition, ends[pos[0].Partition], pos[0].Offset)
						return
					}
					one, err := l.EndOffsets(ctx, topic)
					if err != nil || one[pos[0].Partition] <= pos[0].Offset {
						errs <- fmt.Errorf("EndOffsets of %s: %v %v", topic, one, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("wakes a waiting consumer", func(t *testing.T) {
		l := newLog(t)
		p := eventlog.PartitionFor([]byte("k"), l.Partitions("wake"))
		got := make(chan time.Time, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			_ = l.Consume(ctx, "wake", p, 0, func(context.Context, []eventlog.Record) error { // ends with ctx
				got <- time.Now()
				return nil
			})
		}()
		time.Sleep(50 * time.Millisecond) // let the consumer block; correctness does not depend on it
		sent := time.Now()
		if _, err := l.Produce(ctx, "wake", eventlog.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-got:
			if d := at.Sub(sent); d > 500*time.Millisecond {
				t.Fatalf("consumer woke after %v", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("consumer never woke")
		}
	})
	t.Run("concurrent producers lose and duplicate nothing", func(t *testing.T) {
		l := newLog(t)
		var wg sync.WaitGroup
		const producers, each = 20, 25
		for i := 0; i < producers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for j := 0; j < each; j++ {
					if _, err := l.Produce(context.Background(), "many", eventlog.Message{Key: []byte("same"), Value: []byte(fmt.Sprintf("%d-%d", i, j))}); err != nil {
						t.Error(err)
						return
					}
				}
			}(i)
		}
		wg.Wait()
		p := eventlog.PartitionFor([]byte("same"), l.Partitions("many"))
		recs := collect(t, l, "many", p, 0, producers*each)
		seen := map[string]bool{}
		for _, r := range recs {
			if seen[string(r.Value)] {
				t.Fatalf("duplicate %s", r.Value)
			}
			seen[string(r.Value)] = true
		}
		if len(seen) != producers*each {
			t.Fatalf("got %d distinct records, want %d", len(seen), producers*each)
		}
	})
	t.Run("offset past the end stops the partition", func(t *testing.T) {
		l := newLog(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		produce := func(from, to int) {
			for i := from; i < to; i++ {
				if _, err := l.Produce(ctx, "ahead", eventlog.Message{Key: []byte("k"), Value: []byte(fmt.Sprint(i))}); err != nil {
					t.Fatal(err)
				}
			}
		}
		produce(0, 2)
		p := eventlog.PartitionFor([]byte("k"), l.Partitions("ahead"))
		if err := l.Ready(ctx); err != nil {
			t.Fatalf("Ready before any consumer: %v", err)
		}
		cctx, stop := context.WithCancel(ctx)
		delivered := 0
		done := make(chan error, 1)
		go func() {
			done <- l.Consume(cctx, "ahead", p, 4, func(_ context.Context, recs []eventlog.Record) error {
				delivered += len(recs)
				return nil
			})
		}()
		var err error
		for err = l.Ready(ctx); err == nil; err = l.Ready(ctx) {
			if ctx.Err() != nil {
				t.Fatal("Ready never reported the consumer past the end")
			}
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
		}
		if !errors.Is(err, eventlog.ErrOffsetPastEnd) || !strings.Contains(err.Error(), fmt.Sprintf("ahead/%d", p)) {
			t.Fatalf("Ready: %v, want ErrOffsetPastEnd naming ahead/%d", err, p)
		}
		// The end now passes the consumer's offset: records 2 and 3 were never delivered to
		// it, so it must stay stopped rather than go on from 4.
		produce(2, 6)
		if err := l.Ready(ctx); !errors.Is(err, eventlog.ErrOffsetPastEnd) {
			t.Fatalf("Ready after the end passed the offset: %v", err)
		}
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Consume returned %v, want context.Canceled", err)
		}
		if delivered != 0 {
			t.Fatalf("a stopped partition delivered %d records", delivered)
		}
		if err := l.Ready(ctx); err != nil {
			t.Fatalf("Ready once the stopped consumer ended: %v", err)
		}
	})
	t.Run("failed batch is redelivered", func(t *testing.T) {
		l := newLog(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pos, err := l.Produce(ctx, "redeliver", eventlog.Message{Key: []byte("k"), Value: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		err = l.Consume(ctx, "redeliver", pos[0].Partition, 0, func(context.Context, []eventlog.Record) error {
			calls++
			if calls == 1 {
				return errors.New("transient")
			}
			cancel()
			return nil
		})
		if calls != 2 || !errors.Is(err, context.Canceled) {
			t.Fatalf("handler called %d times, Consume returned %v", calls, err)
		}
	})
}

// BenchmarkProduce measures appends of 512-byte records from 25 concurrent producers per
// core over 64 keys, reporting records/s; every implementation runs the same measurement.
func BenchmarkProduce(b *testing.B, l eventlog.Log) {
	value := make([]byte, 512)
	b.SetParallelism(25)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := l.Produce(context.Background(), "bench", eventlog.Message{Key: []byte(fmt.Sprint(i % 64)), Value: value}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
