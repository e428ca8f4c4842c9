package eventlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/sirupsen/logrus"
	logtesthook "github.com/sirupsen/logrus/hooks/test"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/eventlog/logtest"
	"github.com/matrix-org/dendrite/internal/freeport"
)

// newCluster starts an in-process Kafka-protocol cluster with one broker.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func kafkaConfig(addrs []string, partitions int32) eventlog.KafkaConfig {
	return eventlog.KafkaConfig{
		Config:  eventlog.Config{DefaultPartitions: partitions, Logger: quietLogger()},
		Brokers: addrs, ClientID: "test",
	}
}

func newKafka(t *testing.T, cfg eventlog.KafkaConfig) *eventlog.Kafka {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, err := eventlog.NewKafka(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() }) // Close never fails
	return k
}

func TestKafkaContract(t *testing.T) {
	c := newCluster(t)
	logtest.RunLogContract(t, func(t *testing.T) eventlog.Log {
		// Each subtest uses its own topics, so sharing the cluster is safe.
		return newKafka(t, kafkaConfig(c.ListenAddrs(), 4))
	})
}

// consumeUntil collects a partition's records from from until one at offset last or later.
func consumeUntil(t *testing.T, l eventlog.Log, topic string, p int32, from, last int64) []eventlog.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []eventlog.Record
	err := l.Consume(ctx, topic, p, from, func(_ context.Context, recs []eventlog.Record) error {
		got = append(got, recs...)
		if recs[len(recs)-1].Offset >= last {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("consume %s/%d: %v (got %d records)", topic, p, err, len(got))
	}
	return got
}

func TestKafkaPartitioner(t *testing.T) {
	c := newCluster(t)
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 7))
	ctx := context.Background()
	var msgs []eventlog.Message
	for i := 0; i < 50; i++ {
		msgs = append(msgs, eventlog.Message{Key: []byte(fmt.Sprintf("!room%d:example.org", i)), Value: []byte(fmt.Sprint(i))})
	}
	pos, err := k.Produce(ctx, "keys", msgs...)
	if err != nil {
		t.Fatal(err)
	}
	last := map[int32]int64{}
	for i, p := range pos {
		if want := eventlog.PartitionFor(msgs[i].Key, 7); p.Partition != want {
			t.Fatalf("key %s went to partition %d, PartitionFor says %d", msgs[i].Key, p.Partition, want)
		}
		last[p.Partition] = p.Offset
	}
	// The brokers agree: every partition holds exactly the keys PartitionFor gives it.
	t.Run("consume", func(t *testing.T) {
		for p, off := range last {
			t.Run(fmt.Sprint(p), func(t *testing.T) {
				t.Parallel()
				for _, r := range consumeUntil(t, k, "keys", p, 0, off) {
					if r.Partition != p || eventlog.PartitionFor(r.Key, 7) != p {
						t.Fatalf("record %s found in partition %d", r.Key, r.Partition)
					}
				}
			})
		}
	})
}

func TestKafkaMaxMessageBytes(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	cfg := kafkaConfig(c.ListenAddrs(), 2)
	cfg.MaxMessageBytes = 10_000
	small := newKafka(t, cfg)
	big := eventlog.Message{Key: []byte("k"), Value: bytes.Repeat([]byte("x"), 20_000)}
	if _, err := small.Produce(ctx, "sized", big); !errors.Is(err, eventlog.ErrMessageTooLarge) {
		t.Fatalf("oversized record: %v, want ErrMessageTooLarge", err)
	}
	if _, err := small.Produce(ctx, "sized", eventlog.Message{Key: []byte("k"), Value: []byte("fits")}); err != nil {
		t.Fatal(err)
	}
	// The topic was created with max.message.bytes too: a producer with a larger limit is
	// refused by the broker.
	cfg.MaxMessageBytes = 100_000
	large := newKafka(t, cfg)
	if _, err := large.Produce(ctx, "sized", big); !errors.Is(err, eventlog.ErrMessageTooLarge) {
		t.Fatalf("oversized record against the topic limit: %v, want ErrMessageTooLarge", err)
	}
	p := eventlog.PartitionFor([]byte("k"), 2)
	if ends, err := small.EndOffsets(ctx, "sized"); err != nil || ends[p] != 1 {
		t.Fatalf("end offsets %v (%v), want 1 in partition %d: only the small record is stored", ends, err, p)
	}
}

func TestKafkaPartitionMismatch(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(3, "seeded"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := kafkaConfig(c.ListenAddrs(), 4)
	cfg.Topics = []string{"seeded"}
	if _, err := eventlog.NewKafka(ctx, cfg); !errors.Is(err, eventlog.ErrPartitionMismatch) {
		t.Fatalf("NewKafka with a topic of another partition count: %v", err)
	}
	cfg.Topics = nil
	k := newKafka(t, cfg)
	if _, err := k.Produce(ctx, "seeded", eventlog.Message{Key: []byte("k")}); !errors.Is(err, eventlog.ErrPartitionMismatch) {
		t.Fatalf("Produce to a topic of another partition count: %v", err)
	}
	cfg.Partitions = map[string]int32{"seeded": 3}
	k = newKafka(t, cfg)
	if _, err := k.Produce(ctx, "seeded", eventlog.Message{Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
}

// TestKafkaResume checks that a new client consuming from the offset a previous one
// stopped at gets every later record once.
func TestKafkaResume(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	cfg := kafkaConfig(c.ListenAddrs(), 1)
	produce := func(l eventlog.Log, from, to int) {
		for i := from; i < to; i++ {
			if _, err := l.Produce(ctx, "resume", eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	k, err := eventlog.NewKafka(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	produce(k, 0, 10)
	// Apply records one at a time up to offset 4, as a consumer saving offsets would.
	var next int64
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = k.Consume(cctx, "resume", 0, 0, func(_ context.Context, recs []eventlog.Record) error {
		for _, r := range recs {
			if r.Offset != next {
				t.Errorf("got offset %d, want %d", r.Offset, next)
			}
			next = r.Offset + 1
			if next == 5 {
				cancel()
				break
			}
		}
		return nil
	})
	cancel()
	if !errors.Is(err, context.Canceled) || next != 5 {
		t.Fatalf("first run stopped at %d: %v", next, err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Produce(ctx, "resume", eventlog.Message{}); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Produce after Close: %v", err)
	}
	k = newKafka(t, cfg)
	produce(k, 10, 15)
	recs := consumeUntil(t, k, "resume", 0, next, 14)
	for i, r := range recs {
		if want := int64(i) + 5; r.Offset != want || string(r.Value) != fmt.Sprint(want) {
			t.Fatalf("record %d: %q at offset %d, want offset %d", i, r.Value, r.Offset, want)
		}
	}
	if len(recs) != 10 {
		t.Fatalf("got %d records after restart, want 10", len(recs))
	}
}

func TestKafkaCloseEndsConsume(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	k, err := eventlog.NewKafka(ctx, kafkaConfig(c.ListenAddrs(), 1))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- k.Consume(ctx, "closing", 0, 0, func(context.Context, []eventlog.Record) error { return nil })
	}()
	if _, err := k.Produce(ctx, "closing", eventlog.Message{Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, eventlog.ErrClosed) {
			t.Fatalf("Consume after Close returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not end on Close")
	}
}

// freePort returns a loopback port nothing listens on, reserved for the test process:
// brokers are restarted on it, and a port from the kernel's ephemeral range could be taken
// in between by an outgoing connection.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestKafkaUnreachableAtStart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	k, err := eventlog.NewKafka(ctx, kafkaConfig([]string{addr}, 1))
	if err == nil {
		_ = k.Close()
		t.Fatal("NewKafka succeeded with no broker")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewKafka without a broker: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("NewKafka took %v past its context", d)
	}
}

// TestKafkaBrokerRestart stops the broker mid-run: Ready reports it, a running consumer
// waits, and both recover when the broker is back.
func TestKafkaBrokerRestart(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	defer func() { c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := kafkaConfig(c.ListenAddrs(), 1)
	cfg.Topics = []string{"restart"}
	k := newKafka(t, cfg)
	if err := k.Ready(ctx); err != nil {
		t.Fatalf("Ready with the broker up: %v", err)
	}
	if _, err := k.Produce(ctx, "restart", eventlog.Message{Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	go func() {
		_ = k.Consume(ctx, "restart", 0, 0, func(_ context.Context, recs []eventlog.Record) error { // ends with ctx
			for _, r := range recs {
				got <- string(r.Value)
			}
			return nil
		})
	}()
	if v := <-got; v != "0" {
		t.Fatalf("got %q", v)
	}
	c.Close()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	err := k.Ready(rctx)
	rcancel()
	if err == nil {
		t.Fatal("Ready with the broker down reported ready")
	}
	c = start()
	for k.Ready(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatal("never ready again")
		}
		time.Sleep(50 * time.Millisecond) // polling with the test's deadline
	}
	if _, err := k.Produce(ctx, "restart", eventlog.Message{Value: []byte("1")}); err != nil {
		t.Fatalf("Produce after the broker came back: %v", err)
	}
	select {
	case v := <-got:
		if v != "1" {
			t.Fatalf("after restart got %q, want 1", v)
		}
	case <-ctx.Done():
		t.Fatal("consumer did not recover")
	}
}

// TestKafkaBrokerLate starts the log before its broker: NewKafka retries, warning, and
// succeeds once the broker listens.
func TestKafkaBrokerLate(t *testing.T) {
	port := freePort(t)
	logger, hook := logtesthook.NewNullLogger()
	cfg := kafkaConfig([]string{fmt.Sprintf("127.0.0.1:%d", port)}, 1)
	cfg.Logger = logrus.NewEntry(logger)
	cfg.Topics = []string{"late"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		k   *eventlog.Kafka
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := eventlog.NewKafka(ctx, cfg)
		done <- result{k, err}
	}()
	for len(hook.AllEntries()) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no warning while the broker is missing")
		}
		time.Sleep(20 * time.Millisecond) // polling with the test's deadline
	}
	newCluster(t, kfake.Ports(port))
	r := <-done
	if r.err != nil {
		t.Fatalf("NewKafka once the broker is up: %v", r.err)
	}
	defer r.k.Close()
	if err := r.k.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if e := hook.AllEntries()[0]; e.Level != logrus.WarnLevel {
		t.Fatalf("logged %q at %v, want a warning", e.Message, e.Level)
	}
}

// TestKafkaTrimmedOffset consumes from an offset whose records were deleted: delivery
// starts at the oldest kept record.
func TestKafkaTrimmedOffset(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 1))
	for i := 0; i < 10; i++ {
		if _, err := k.Produce(ctx, "trimmed", eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(c.ListenAddrs(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.DeleteRecords("trimmed", map[int32]int64{0: 6}); err != nil {
		t.Fatal(err)
	}
	recs := consumeUntil(t, k, "trimmed", 0, 2, 9)
	if len(recs) != 4 || recs[0].Offset != 6 || string(recs[0].Value) != "6" {
		t.Fatalf("got %d records from offset %d, want 4 from 6", len(recs), recs[0].Offset)
	}
}

// BenchmarkKafkaProduce measures 25 concurrent producers sharing the idempotent producer.
func BenchmarkKafkaProduce(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	k, err := eventlog.NewKafka(context.Background(), kafkaConfig(c.ListenAddrs(), 16))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	logtest.BenchmarkProduce(b, k)
}

// TestKafkaProduceWhileConsuming: a process that consumes (the roomserver) produces at once,
// not behind its consumer's long-polling fetch (fetchWait).
func TestKafkaProduceWhileConsuming(t *testing.T) {
	c := newCluster(t)
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, 2)
	for p := int32(0); p < 2; p++ {
		go func() {
			_ = k.Consume(ctx, "idle", p, 0, func(context.Context, []eventlog.Record) error { // ends with ctx
				got <- struct{}{}
				return nil
			})
		}()
	}
	// Once a record came through, the consumers' fetches run, waiting on the idle topic.
	if _, err := k.Produce(ctx, "idle", eventlog.Message{Key: []byte("a"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the record did not arrive")
	}
	if _, err := k.Produce(ctx, "busy", eventlog.Message{Key: []byte("warm-up"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for i := range 7 {
		start := time.Now()
		if _, err := k.Produce(ctx, "busy", eventlog.Message{Key: []byte{byte(i)}, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if median := took[len(took)/2]; median > 100*time.Millisecond {
		t.Fatalf("produce while consuming takes %v (median of %v)", median, took)
	}
}

// TestKafkaTwoReadersInOneProcess: two components of one process (the monolith on Kafka)
// read every partition of the same topics; a record reaches both promptly. (Each second
// reader of a partition used to get a sarama consumer of its own, every one holding a
// long-poll on the one fetch connection: with dozens of partitions records took seconds.)
func TestKafkaTwoReadersInOneProcess(t *testing.T) {
	c := newCluster(t)
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 16))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	topics := []string{"t1", "t2", "t3", "t4", "t5"}
	type key struct {
		reader int
		value  string
	}
	var mu sync.Mutex
	seen := map[key]bool{}
	for reader := range 2 {
		for _, topic := range topics {
			for p := int32(0); p < 16; p++ {
				go func() {
					_ = k.Consume(ctx, topic, p, 0, func(_ context.Context, recs []eventlog.Record) error { // ends with ctx
						mu.Lock()
						defer mu.Unlock()
						for _, r := range recs {
							seen[key{reader, string(r.Value)}] = true
						}
						return nil
					})
				}()
			}
		}
	}
	round := func(name string, within time.Duration) {
		t.Helper()
		var want []string
		for _, topic := range topics {
			for i := range 32 {
				v := fmt.Sprintf("%s-%s-%d", name, topic, i)
				want = append(want, v)
				if _, err := k.Produce(ctx, topic, eventlog.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		deadline := time.Now().Add(within)
		for {
			mu.Lock()
			missing := 0
			for _, v := range want {
				for reader := range 2 {
					if !seen[key{reader, v}] {
						missing++
					}
				}
			}
			mu.Unlock()
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %s: %d deliveries missing after %s", name, missing, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	round("first", 5*time.Second) // includes the readers starting
	round("second", 2*time.Second)
}
