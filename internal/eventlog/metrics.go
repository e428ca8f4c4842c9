package eventlog

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the log's instruments; a nil *Metrics records nothing.
type Metrics struct {
	consumedTotal *prometheus.CounterVec
	failures      *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	produce       *prometheus.HistogramVec
	trimFailures  prometheus.Counter
	stoppedParts  *prometheus.GaugeVec
	recoveries    *prometheus.HistogramVec
	replayLosses  *prometheus.CounterVec
	kafkaRequests *prometheus.CounterVec
}

// NewMetrics registers the log metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		consumedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_eventlog_consumed_total", Help: "Records applied by consumers."}, []string{"topic", "consumer"}),
		failures:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_eventlog_consumer_failures_total", Help: "Failed attempts to apply records."}, []string{"topic", "consumer"}),
		deadLetters:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_eventlog_dead_letters_total", Help: "Records given up on and dead-lettered."}, []string{"topic", "consumer"}),
		produce: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dendrite_eventlog_produce_seconds", Help: "Time to durably append.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}, []string{"topic"}),
		trimFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_eventlog_retention_failures_total", Help: "Failed retention runs."}),
		stoppedParts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dendrite_eventlog_stopped_consumers",
			Help: "Consumers stopped because their offset is past the end of the partition (topic recreated or records lost)."}, []string{"topic", "partition"}),
		recoveries: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dendrite_eventlog_recovery_seconds",
			Help:    "Time a consumer took to recover from the owner after its log was wiped (Guard).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"topic"}),
		replayLosses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_eventlog_replay_lost_records_total",
			Help: "Owner records a reader skipped because it was further behind than the owner's replay window (Sequenced)."}, []string{"topic"}),
		kafkaRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_eventlog_kafka_requests_total",
			Help: "Requests the Kafka log sent to the brokers, by API."}, []string{"api"}),
	}
	if reg != nil {
		reg.MustRegister(m.consumedTotal, m.failures, m.deadLetters, m.produce, m.trimFailures, m.stoppedParts, m.recoveries, m.replayLosses, m.kafkaRequests)
	}
	return m
}

// saramaRegistry is the go-metrics registry for sarama: it counts requests in m.
func (m *Metrics) saramaRegistry() nilRegistry {
	if m == nil {
		return nilRegistry{}
	}
	return nilRegistry{requests: m.kafkaRequests}
}

func (m *Metrics) consumed(topic, consumer string, n int) {
	if m != nil {
		m.consumedTotal.WithLabelValues(topic, consumer).Add(float64(n))
	}
}

func (m *Metrics) failed(topic, consumer string) {
	if m != nil {
		m.failures.WithLabelValues(topic, consumer).Inc()
	}
}

func (m *Metrics) deadLettered(topic, consumer string) {
	if m != nil {
		m.deadLetters.WithLabelValues(topic, consumer).Inc()
	}
}

func (m *Metrics) produced(topic string, d time.Duration) {
	if m != nil {
		m.produce.WithLabelValues(topic).Observe(d.Seconds())
	}
}

func (m *Metrics) trimFailed() {
	if m != nil {
		m.trimFailures.Inc()
	}
}

func (m *Metrics) stopped(topic string, partition int32, delta float64) {
	if m != nil {
		m.stoppedParts.WithLabelValues(topic, strconv.Itoa(int(partition))).Add(delta)
	}
}

func (m *Metrics) recovered(topic string, d time.Duration) {
	if m != nil {
		m.recoveries.WithLabelValues(topic).Observe(d.Seconds())
	}
}

func (m *Metrics) replayLost(topic string, n int64) {
	if m != nil {
		m.replayLosses.WithLabelValues(topic).Add(float64(n))
	}
}
