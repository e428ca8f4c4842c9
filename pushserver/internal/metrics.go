package internal

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the push server's own metrics; a nil *Metrics counts nothing.
type Metrics struct {
	evaluations   prometheus.Counter
	notifications prometheus.Counter
}

// NewMetrics registers the push server's metrics on reg (which may be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_evaluations_total",
			Help: "Push rule evaluations: one per event and local member other than the sender."}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_pushserver_notifications_total",
			Help: "Notifications recorded."}),
	}
	if reg != nil {
		reg.MustRegister(m.evaluations, m.notifications)
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
