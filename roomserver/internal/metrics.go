package internal

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the roomserver input path's instruments. A nil *Metrics records nothing.
type Metrics struct {
	messages prometheus.Counter
	events   prometheus.Counter
	batch    prometheus.Histogram
}

// NewMetrics registers the roomserver metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_roomserver_input_messages_total", Help: "InputRoomEvent messages applied."}),
		events:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_roomserver_input_events_accepted_total", Help: "Events accepted into rooms."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dendrite_roomserver_input_batch_seconds", Help: "Time to apply one input batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.events, m.batch)
	}
	return m
}

func (m *Metrics) observeBatch(messages, events int, d time.Duration) {
	if m == nil {
		return
	}
	m.messages.Add(float64(messages))
	m.events.Add(float64(events))
	m.batch.Observe(d.Seconds())
}
