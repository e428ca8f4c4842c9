package eventlog_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TestIdleConsumerFetchesRarely: a process whose consumers have nothing to read (an idle
// roomserver shard) sends the brokers about one fetch a second, not four (a 250 ms
// long-poll: every process pays it per second whatever its traffic, which made each extra
// roomserver shard cost CPU per message, issue 17), and a record produced while the fetch
// long-polls still arrives at once.
func TestIdleConsumerFetchesRarely(t *testing.T) {
	c := newCluster(t)
	var fetches atomic.Int64
	c.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		fetches.Add(1)
		return nil, nil, false
	})
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 4))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan time.Time, 16)
	for p := int32(0); p < 4; p++ {
		go func() {
			_ = k.Consume(ctx, "idle", p, 0, func(context.Context, []eventlog.Record) error { // ends with ctx
				got <- time.Now()
				return nil
			})
		}()
	}
	produce := func(key string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := k.Produce(ctx, "idle", eventlog.Message{Key: []byte(key), Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-got:
			return at.Sub(start)
		case <-time.After(10 * time.Second):
			t.Fatal("the record did not arrive")
			return 0
		}
	}
	produce("warm-up") // every partition consumer has started once a record came through
	time.Sleep(time.Second)

	before := fetches.Load()
	time.Sleep(4 * time.Second)
	if n := fetches.Load() - before; n > 8 {
		t.Fatalf("an idle consumer of 4 partitions sent %d fetches in 4s; want about one a second", n)
	}

	var took []time.Duration
	for _, key := range []string{"a", "b", "c", "d", "e"} {
		took = append(took, produce(key))
		time.Sleep(300 * time.Millisecond) // the next record lands in a fetch that is waiting
	}
	slices.Sort(took)
	if median := took[len(took)/2]; median > 500*time.Millisecond {
		t.Fatalf("a record produced during an idle fetch took %v to arrive (median of %v)", median, took)
	}
}
