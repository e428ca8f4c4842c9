package internal

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the appservice component's. The service label's values are the registered
// services' IDs: a small set fixed by the config.
type Metrics struct {
	transactions *prometheus.CounterVec
	events       *prometheus.CounterVec
	queued       *prometheus.GaugeVec
	duration     prometheus.Histogram
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
	}
	if reg != nil {
		reg.MustRegister(m.transactions, m.events, m.queued, m.duration)
	}
	return m
}
