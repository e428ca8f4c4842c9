package internal

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the push server's own metrics; a nil *Metrics counts nothing.
type Metrics struct {
	evaluations   prometheus.Counter
	notifications prometheus.Counter
	deliveries    prometheus.Counter
	failures      prometheus.Counter
	queued        prometheus.Gauge
}

// NewMetrics registers the push server's metrics on reg (which may be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_evaluations_total",
			Help: "Push rule evaluations: one per event and local member other than the sender."}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_notifications_total",
			Help: "Notifications recorded."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_deliveries_total",
			Help: "Pushes push gateways accepted."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_delivery_failures_total",
			Help: "Push attempts that failed (retried later, or dropped after a day)."}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dendrite_pushserver_queue_depth",
			Help: "Pushes queued for delivery."}),
	}
	if reg != nil {
		reg.MustRegister(m.evaluations, m.notifications, m.deliveries, m.failures, m.queued)
	}
	return m
}

func (m *Metrics) evaluated() {
	if m != nil {
		m.evaluations.Inc()
	}
}

func (m *Metrics) notified(n int) {
	if m != nil {
		m.notifications.Add(float64(n))
	}
}

func (m *Metrics) delivered() {
	if m != nil {
		m.deliveries.Inc()
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

func (m *Metrics) queueDepth(n int) {
	if m != nil {
		m.queued.Set(float64(n))
	}
}
