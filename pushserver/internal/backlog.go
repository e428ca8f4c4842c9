package internal

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/pushserver/storage"
)

// backlogTimeout bounds the reads of one scrape of the backlog.
const backlogTimeout = 5 * time.Second

// Backlog is the push server's outstanding work as metrics read at scrape time: per
// consumer, the records in the log it has not applied yet
// (dendrite_pushserver_consumer_lag_records), and the queued pushes that are due
// (dendrite_pushserver_pushes_due; pushes waiting out a gateway's backoff are not). Both
// are 0 only when everything written so far has been evaluated and pushed, which a CPU
// sample cannot tell: a loaded machine can leave the process without CPU while work
// waits (benchmarks' "is the server idle" checks read these). It is safe for concurrent
// use.
type Backlog struct {
	log    eventlog.Log
	db     storage.Database
	logger *logrus.Entry
	lag    *prometheus.Desc
	due    *prometheus.Desc

	mu      sync.Mutex
	topics  []backlogTopic
	applied map[backlogPartition]int64
}

// backlogTopic is a consumed topic and the name its lag is reported under.
type backlogTopic struct {
	name, topic string
}

type backlogPartition struct {
	topic     string
	partition int32
}

// NewBacklog returns a Backlog of the consumers of log registered with Track, with the
// queue in db; it registers it on reg (which may be nil).
func NewBacklog(log eventlog.Log, db storage.Database, reg prometheus.Registerer, logger *logrus.Entry) *Backlog {
	b := &Backlog{log: log, db: db, logger: logger, applied: map[backlogPartition]int64{},
		lag: prometheus.NewDesc("dendrite_pushserver_consumer_lag_records",
			"Records of a topic the push server has not applied yet (at the log's end when scraped).", []string{"consumer"}, nil),
		due: prometheus.NewDesc("dendrite_pushserver_pushes_due", "Queued pushes due for delivery now (in flight or waiting for a slot).", nil, nil)}
	if reg != nil {
		reg.MustRegister(b)
	}
	return b
}

// Track reports topic's lag under name and returns the function that records a
// partition's next offset to apply: the consumer's Applied (see eventlog.Consumer), which
// it calls before next, if next is set.
func (b *Backlog) Track(name, topic string, next func(partition int32, offset int64)) func(partition int32, offset int64) {
	b.mu.Lock()
	b.topics = append(b.topics, backlogTopic{name: name, topic: topic})
	b.mu.Unlock()
	return func(partition int32, offset int64) {
		b.mu.Lock()
		b.applied[backlogPartition{topic, partition}] = offset
		b.mu.Unlock()
		if next != nil {
			next(partition, offset)
		}
	}
}

// Describe implements prometheus.Collector.
func (b *Backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.lag
	ch <- b.due
}

// Collect implements prometheus.Collector. A partition whose consumer has not started
// counts from offset 0; what cannot be read is left out (and logged).
func (b *Backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), backlogTimeout)
	defer cancel()
	lags, err := b.Lags(ctx)
	if err != nil {
		b.logger.WithError(err).Warn("reading the push server's consumer lag failed")
	}
	for name, n := range lags {
		ch <- prometheus.MustNewConstMetric(b.lag, prometheus.GaugeValue, float64(n), name)
	}
	due, err := b.db.DuePushes(ctx, time.Now().UnixMilli())
	if err != nil {
		b.logger.WithError(err).Warn("counting due pushes failed")
		return
	}
	ch <- prometheus.MustNewConstMetric(b.due, prometheus.GaugeValue, float64(due))
}

// Lags are, per tracked consumer name, the records from its partitions' next offsets
// to the log's end as the log reports it now.
func (b *Backlog) Lags(ctx context.Context) (map[string]int64, error) {
	b.mu.Lock()
	topics := append([]backlogTopic(nil), b.topics...)
	b.mu.Unlock()
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.topic
	}
	ends, err := b.log.EndOffsetsOf(ctx, names)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(topics))
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, t := range topics {
		var lag int64
		for p, end := range ends[i] {
			lag += max(end-b.applied[backlogPartition{t.topic, int32(p)}], 0)
		}
		out[t.name] = lag
	}
	return out, nil
}
