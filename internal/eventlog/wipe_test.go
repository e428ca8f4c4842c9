package eventlog_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtesthook "github.com/sirupsen/logrus/hooks/test"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// stoppedGauge is dendrite_eventlog_stopped_consumers{topic, partition} in reg.
func stoppedGauge(t *testing.T, reg *prometheus.Registry, topic string, partition int32) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dendrite_eventlog_stopped_consumers" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["topic"] == topic && labels["partition"] == fmt.Sprint(partition) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// waitNotReady polls l.Ready until it reports ErrOffsetPastEnd.
func waitNotReady(ctx context.Context, t *testing.T, l eventlog.Log) error {
	t.Helper()
	for {
		err := l.Ready(ctx)
		if errors.Is(err, eventlog.ErrOffsetPastEnd) {
			return err
		}
		if ctx.Err() != nil {
			t.Fatalf("Ready never reported a stopped partition (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond) // polling with the test's deadline
	}
}

func newAdmin(t *testing.T, addrs []string) sarama.ClusterAdmin {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(addrs, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() }) // closing the test's admin connection
	return admin
}

// TestKafkaRecreatedTopicStopsConsumer deletes and recreates a topic under a running
// consumer: the consumer's offset is past the new topic's end, so the partition stops
// instead of skipping the new topic's first records, with an error log naming topic and
// partition, the stopped-consumers metric and Ready reporting it.
func TestKafkaRecreatedTopicStopsConsumer(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger, hook := logtesthook.NewNullLogger()
	reg := prometheus.NewRegistry()
	cfg := kafkaConfig(c.ListenAddrs(), 1)
	cfg.Logger = logrus.NewEntry(logger)
	cfg.Metrics = eventlog.NewMetrics(reg)
	k := newKafka(t, cfg)
	produce := func(l eventlog.Log, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := l.Produce(ctx, "wiped", eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(k, 0, 3)
	got := make(chan eventlog.Record, 10)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- k.Consume(cctx, "wiped", 0, 0, func(_ context.Context, recs []eventlog.Record) error {
			for _, r := range recs {
				got <- r
			}
			return nil
		})
	}()
	for i := 0; i < 3; i++ {
		<-got
	}
	admin := newAdmin(t, c.ListenAddrs())
	if err := admin.DeleteTopic("wiped"); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateTopic("wiped", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	err := waitNotReady(ctx, t, k)
	if want := "wiped/0"; !errors.Is(err, eventlog.ErrOffsetPastEnd) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Ready: %v, want it to name %s", err, want)
	}
	if v := stoppedGauge(t, reg, "wiped", 0); v != 1 {
		t.Fatalf("stopped consumers metric is %v, want 1", v)
	}
	logged := false
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel && e.Data["topic"] == "wiped" && e.Data["partition"] == int32(0) {
			logged = true
		}
	}
	if !logged {
		t.Fatal("no error log naming the topic and partition")
	}
	// The new topic's records 0-2 were never delivered: the consumer stays stopped.
	produce(newKafka(t, cfg), 0, 5)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v", err)
	}
	select {
	case r := <-got:
		t.Fatalf("a stopped partition delivered offset %d", r.Offset)
	default:
	}
	if v := stoppedGauge(t, reg, "wiped", 0); v != 0 {
		t.Fatalf("stopped consumers metric is %v after the consumer ended, want 0", v)
	}
	if err := k.Ready(ctx); err != nil {
		t.Fatalf("Ready after the consumer ended: %v", err)
	}
}

// TestEmbeddedWipedLogStopsConsumer replaces the monolith's log database under a Consumer
// whose offsets live in the component's database (both engines): the stored offset is past
// the new log's end, so the partition stops, logged with its topic and partition, counted
// in the metric and in Ready, and the new log's records are not applied.
func TestEmbeddedWipedLogStopsConsumer(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		logger, hook := logtesthook.NewNullLogger()
		reg := prometheus.NewRegistry()
		cfg := eventlog.Config{DefaultPartitions: 1, Logger: logrus.NewEntry(logger), Metrics: eventlog.NewMetrics(reg)}
		open := func() *eventlog.Embedded {
			logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = logDB.Close() }) // the test's own database file
			l, err := eventlog.NewEmbedded(ctx, logDB, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() }) // Close never fails
			return l
		}
		offsets, err := eventlog.NewOffsetStore(ctx, db, "wipe")
		if err != nil {
			t.Fatal(err)
		}
		applied := 0
		consumer := func(l eventlog.Log, onApplied func(next int64)) *eventlog.Consumer {
			return &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "in", Partitions: []int32{0}, Logger: logrus.NewEntry(logger),
				Handle:  func(context.Context, *sql.Tx, []eventlog.Record) error { applied++; return nil },
				Applied: func(_ int32, next int64) { onApplied(next) }}
		}
		produce := func(l eventlog.Log, n int) {
			for i := 0; i < n; i++ {
				if _, err := l.Produce(ctx, "in", eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
					t.Fatal(err)
				}
			}
		}
		old := open()
		produce(old, 3)
		first, stopFirst := context.WithCancel(ctx)
		if err := consumer(old, func(next int64) {
			if next >= 3 {
				stopFirst()
			}
		}).Run(first); err != nil {
			t.Fatal(err)
		}
		applied = 0
		wiped := open()
		done := make(chan error, 1)
		cctx, stop := context.WithCancel(ctx)
		go func() { done <- consumer(wiped, func(int64) {}).Run(cctx) }()
		err = waitNotReady(ctx, t, wiped)
		if !strings.Contains(err.Error(), "in/0") {
			t.Fatalf("Ready: %v, want it to name in/0", err)
		}
		if v := stoppedGauge(t, reg, "in", 0); v != 1 {
			t.Fatalf("stopped consumers metric is %v, want 1", v)
		}
		logged := false
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.ErrorLevel && e.Data["topic"] == "in" && e.Data["partition"] == int32(0) {
				logged = true
			}
		}
		if !logged {
			t.Fatal("no error log naming the topic and partition")
		}
		produce(wiped, 5)
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if applied != 0 {
			t.Fatalf("the stopped consumer applied %d records of the new log", applied)
		}
	})
}

// TestKafkaTopicsComeBack deletes a topic the log uses: Ready recreates it with the
// configured partitions and recovers, Produce succeeds, a running consumer whose offset is
// still valid (partition 1 at 0) goes on with the new topic's records without a restart,
// and the one whose offset is past the new end (partition 0 at 3) stops.
func TestKafkaTopicsComeBack(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := kafkaConfig(c.ListenAddrs(), 2)
	cfg.Topics = []string{"back"}
	k := newKafka(t, cfg)
	// keyFor finds a key for partition p.
	keyFor := func(p int32) []byte {
		for i := 0; ; i++ {
			if key := []byte(fmt.Sprint("k", i)); eventlog.PartitionFor(key, 2) == p {
				return key
			}
		}
	}
	for i := 0; i < 3; i++ {
		if _, err := k.Produce(ctx, "back", eventlog.Message{Key: keyFor(0), Value: []byte("old")}); err != nil {
			t.Fatal(err)
		}
	}
	got := [2]chan eventlog.Record{make(chan eventlog.Record, 10), make(chan eventlog.Record, 10)}
	for p := range int32(2) {
		go func() {
			_ = k.Consume(ctx, "back", p, 0, func(_ context.Context, recs []eventlog.Record) error { // ends with ctx
				for _, r := range recs {
					got[p] <- r
				}
				return nil
			})
		}()
	}
	for i := 0; i < 3; i++ {
		<-got[0]
	}
	if err := newAdmin(t, c.ListenAddrs()).DeleteTopic("back"); err != nil {
		t.Fatal(err)
	}
	for {
		err := k.Ready(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, eventlog.ErrOffsetPastEnd) {
			break // partition 0's consumer stopped: the topic is back
		}
		if ctx.Err() != nil {
			t.Fatalf("Ready never recovered: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling with the test's deadline
	}
	parts, err := newAdmin(t, c.ListenAddrs()).DescribeTopics([]string{"back"})
	if err != nil || len(parts) != 1 || len(parts[0].Partitions) != 2 {
		t.Fatalf("recreated topic: %+v (%v), want 2 partitions", parts, err)
	}
	pos, err := k.Produce(ctx, "back", eventlog.Message{Key: keyFor(1), Value: []byte("new")})
	if err != nil {
		t.Fatalf("Produce after the topic was deleted: %v", err)
	}
	if pos[0].Partition != 1 || pos[0].Offset != 0 {
		t.Fatalf("produced at %+v, want 1/0 in the new topic", pos[0])
	}
	select {
	case r := <-got[1]:
		if string(r.Value) != "new" {
			t.Fatalf("partition 1 delivered %q", r.Value)
		}
	case <-ctx.Done():
		t.Fatal("the running consumer of partition 1 never saw the new topic's record")
	}
	err = waitNotReady(ctx, t, k)
	if !strings.Contains(err.Error(), "back/0") || strings.Contains(err.Error(), "back/1") {
		t.Fatalf("Ready: %v, want back/0 stopped and back/1 running", err)
	}
}

// TestKafkaProduceRecreatesTopic deletes a topic between two Produce calls, with no
// consumer or readiness check to notice: the second call creates it again and succeeds.
func TestKafkaProduceRecreatesTopic(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := newKafka(t, kafkaConfig(c.ListenAddrs(), 1))
	if _, err := k.Produce(ctx, "again", eventlog.Message{Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	if err := newAdmin(t, c.ListenAddrs()).DeleteTopic("again"); err != nil {
		t.Fatal(err)
	}
	pos, err := k.Produce(ctx, "again", eventlog.Message{Value: []byte("1")})
	if err != nil {
		t.Fatalf("Produce after the topic was deleted: %v", err)
	}
	if pos[0].Offset != 0 {
		t.Fatalf("produced at offset %d, want 0 in the new topic", pos[0].Offset)
	}
}

// TestKafkaInMemoryBrokerRestart restarts a broker that keeps nothing: Produce recreates
// the topic by itself, and the consumer whose offset was past the new topic's first record
// stops (the topic ID changed) instead of handing over the records after it.
func TestKafkaInMemoryBrokerRestart(t *testing.T) {
	port := freePort(t)
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := kafkaConfig(c.ListenAddrs(), 1)
	cfg.Topics = []string{"mem"}
	k := newKafka(t, cfg)
	if _, err := k.Produce(ctx, "mem", eventlog.Message{Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	got := make(chan eventlog.Record, 10)
	go func() {
		_ = k.Consume(ctx, "mem", 0, 0, func(_ context.Context, recs []eventlog.Record) error { // ends with ctx
			for _, r := range recs {
				got <- r
			}
			return nil
		})
	}()
	<-got
	c.Close()
	c = start()
	defer c.Close()
	for {
		_, err := k.Produce(ctx, "mem", eventlog.Message{Value: []byte("new")})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Produce never recovered: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the broker restarts: polling with the test's deadline
	}
	// The consumer waits at offset 1 of the new topic; the next record there is the first
	// it could be handed, past the new record 0 it never saw.
	if _, err := k.Produce(ctx, "mem", eventlog.Message{Value: []byte("newer")}); err != nil {
		t.Fatal(err)
	}
	if err := waitNotReady(ctx, t, k); !strings.Contains(err.Error(), "mem/0") {
		t.Fatalf("Ready: %v", err)
	}
	select {
	case r := <-got:
		t.Fatalf("the consumer past the new end delivered offset %d (%q)", r.Offset, r.Value)
	default:
	}
}
