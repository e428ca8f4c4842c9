package internal

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the appservice component's. The service label's values are the registered
// services' IDs: a small set fixed by the config.
type Metrics struct {
	transactions *prometheus.CounterVec
	events       *prometheus.CounterVec
	queued       *prometheus.GaugeVec
	duration     prometheus.Histogram
	lag          *lagCollector
}

// NewMetrics registers the metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_appservice_transactions_total",
			Help: "Transactions sent to application services, by service and outcome (sent, failed)."}, []string{"service", "outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_appservice_events_sent_total",
			Help: "Events and ephemeral events application services acknowledged, by service."}, []string{"service"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dendrite_appservice_queued_items",
			Help: "Items waiting in each application service's queue."}, []string{"service"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dendrite_appservice_transaction_duration_seconds",
			Help: "Time to send one transaction, failures included.", Buckets: prometheus.DefBuckets}),
		lag: &lagCollector{oldest: map[string]time.Time{}, desc: prometheus.NewDesc("dendrite_appservice_lag_seconds",
			"Age of the oldest item waiting in each application service's queue (0 when it is empty).", []string{"service"}, nil)},
	}
	if reg != nil {
		reg.MustRegister(m.transactions, m.events, m.queued, m.duration, m.lag)
	}
	return m
}

// lagCollector reports each service's lag when /metrics is scraped, from the time its
// oldest queued item was queued: the figure keeps growing while a service is down and its
// worker waits out a backoff.
type lagCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	oldest map[string]time.Time // service ID -> oldest queued item's time; zero: empty
}

// set records the service's oldest queued item's time (zero: none).
func (l *lagCollector) set(serviceID string, oldest time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.oldest[serviceID] = oldest
}

// Describe implements prometheus.Collector.
func (l *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.desc
}

// Collect implements prometheus.Collector.
func (l *lagCollector) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, oldest := range l.oldest {
		age := 0.0
		if !oldest.IsZero() {
			age = max(time.Since(oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, age, id)
	}
}
