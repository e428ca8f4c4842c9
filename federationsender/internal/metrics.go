package internal

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the federationsender's. Labels come from fixed sets, never server names.
type Metrics struct {
	transactions *prometheus.CounterVec
	pdus, edus   prometheus.Counter
	duration     prometheus.Histogram
	queued       *prometheus.GaugeVec
	destinations *prometheus.GaugeVec
}

// NewMetrics registers the metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dendrite_federationsender_transactions_total",
			Help: "Transactions sent to other servers, by outcome (sent, failed, rejected)."}, []string{"outcome"}),
		pdus: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_federationsender_pdus_sent_total",
			Help: "PDUs other servers acknowledged."}),
		edus: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_federationsender_edus_sent_total",
			Help: "EDUs other servers acknowledged."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dendrite_federationsender_transaction_duration_seconds",
			Help: "Time to send one transaction, failures included.", Buckets: prometheus.DefBuckets}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dendrite_federationsender_queued_items",
			Help: "Items waiting in the outbound queues, by kind (pdu, edu)."}, []string{"kind"}),
		destinations: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dendrite_federationsender_destinations",
			Help: "Destinations by state: queued (items waiting), backoff (retrying after failures), blacklisted."}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.transactions, m.pdus, m.edus, m.duration, m.queued, m.destinations)
	}
	return m
}
