// Package eventlog is the log abstraction every topic goes through, with Kafka's semantics:
// keyed partitioning, per-partition order, dense offsets, at-least-once delivery and
// consumer-managed offsets. Embedded is the durable SQL-backed implementation the monolith
// runs on, Kafka the one on Apache Kafka for polylith deployments; OffsetStore and Consumer give consumers exactly-once application by saving their
// offsets in the transaction that applies the records.
package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/sirupsen/logrus"
)

// Message is one record to append.
type Message struct {
	Key   []byte
	Value []byte
}

// Position is where a record landed.
type Position struct {
	Partition int32
	Offset    int64
}

// Record is a stored record as delivered to consumers.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Timestamp time.Time
}

// Log is implemented by the embedded log and by Kafka.
type Log interface {
	// Produce durably appends msgs to topic, each to partition PartitionFor(key); it returns
	// their positions in order. Messages of one call to one partition keep their order.
	Produce(ctx context.Context, topic string, msgs ...Message) ([]Position, error)
	// Partitions is the topic's partition count.
	Partitions(topic string) int32
	// Consume hands the partition's records from offset from on, in order and in batches,
	// to handle, as soon as they exist. A batch whose handle fails is offered again after a
	// backoff. It returns ctx.Err() when ctx ends.
	Consume(ctx context.Context, topic string, partition int32, from int64, handle func(ctx context.Context, recs []Record) error) error
	// EndOffsets are, per partition of topic in partition order, the offset the next record
	// appended will get. One call answers for every partition (one broker round trip on
	// Kafka): readers ask it on every request to wait for their own consumers.
	EndOffsets(ctx context.Context, topic string) ([]int64, error)
	// EndOffsetsOf is EndOffsets for several topics at once (one broker round trip on
	// Kafka), in the order of topics.
	EndOffsetsOf(ctx context.Context, topics []string) ([][]int64, error)
	// Incarnation names the partition's current incarnation: it changes when the log is
	// wiped under its readers (a topic deleted and created again, a broker restarted without
	// its data, the embedded log's database replaced or its partition ends deleted), and
	// never otherwise. "" means the log cannot tell yet (the partition was never written).
	// Readers store it with their offsets (Guard) to recognise a log that is not the one
	// their offsets are positions in.
	Incarnation(ctx context.Context, topic string, partition int32) (string, error)
	// Ready reports whether the log can serve this process: the brokers answer (Kafka) and
	// no consumer is stopped past the end of its partition (ErrOffsetPastEnd), recovering
	// from its owner under a Guard (ErrRecovering) or retrying a record it failed to apply
	// (ErrStuck).
	Ready(ctx context.Context) error
	Close() error
}

// PartitionFor is the one partitioner every process uses: FNV-1a 32-bit of key, mod n.
func PartitionFor(key []byte, n int32) int32 {
	h := fnv.New32a()
	_, _ = h.Write(key) // hash writes never fail
	return int32(h.Sum32() % uint32(n))
}

// Config configures topics. Topic names are full names: callers add the prefix.
type Config struct {
	// DefaultPartitions is the partition count of topics not in Partitions (default 16).
	DefaultPartitions int32
	Partitions        map[string]int32
	// Retention is how long records are kept (default 7 days; negative keeps forever): by
	// Kafka whether consumed or not (retention.ms), by the embedded log once every reader of
	// the record's partition has processed it.
	Retention time.Duration
	Metrics   *Metrics
	// Logger receives warnings about unreachable brokers and errors about stopped partitions
	// (default: a new logrus logger on stderr).
	Logger *logrus.Entry
}

func (c *Config) partitions(topic string) int32 {
	if n, ok := c.Partitions[topic]; ok && n > 0 {
		return n
	}
	if c.DefaultPartitions > 0 {
		return c.DefaultPartitions
	}
	return 16
}

// ErrClosed is returned by a closed log.
var ErrClosed = errors.New("event log closed")

// marked is an error marked with how a Consumer treats it: transient (Retry) or permanent
// (Poison).
type marked struct {
	err    error
	poison bool
}

func (m marked) Error() string { return m.err.Error() }
func (m marked) Unwrap() error { return m.err }

// Retry marks err as transient: a Consumer retries it forever instead of dead-lettering.
func Retry(err error) error {
	return marked{err: err}
}

// IsRetry reports whether err was marked with Retry.
func IsRetry(err error) bool {
	var m marked
	return errors.As(err, &m) && !m.poison
}

// Poison marks err as permanent, the record's own fault (it does not decode, or lacks what
// it must carry): a Consumer dead-letters the record at its first failure alone instead of
// retrying it.
func Poison(err error) error {
	return marked{err: err, poison: true}
}

// IsPoison reports whether err was marked with Poison.
func IsPoison(err error) bool {
	var m marked
	return errors.As(err, &m) && m.poison
}

// ProduceJSON appends v, encoded as JSON, to topic under key.
func ProduceJSON(ctx context.Context, log Log, topic, key string, v any) error {
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record for %s: %w", topic, err)
	}
	if _, err = log.Produce(ctx, topic, Message{Key: []byte(key), Value: value}); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	return nil
}

// AllPartitions lists every partition of topic, for a Consumer that reads them all.
func AllPartitions(log Log, topic string) []int32 {
	n := log.Partitions(topic)
	out := make([]int32, n)
	for p := range n {
		out[p] = p
	}
	return out
}
