package inthttp

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	sideServer = "server"
	sideClient = "client"
)

// Metrics records internal API call latency by component, method, side (client or server)
// and outcome. One Metrics serves every Client and Server of a process; a nil *Metrics records
// nothing.
type Metrics struct {
	latency *prometheus.HistogramVec
}

// NewMetrics registers dendrite_internal_api_call_duration_seconds on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dendrite_internal_api_call_duration_seconds",
		Help:    "Time to answer internal API calls, by component, method, side and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"component", "method", "side", "outcome"})}
	if reg != nil {
		reg.MustRegister(m.latency)
	}
	return m
}

func (m *Metrics) observe(component, method, side, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.latency.WithLabelValues(component, method, side, outcome).Observe(d.Seconds())
}
