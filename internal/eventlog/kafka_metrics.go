package eventlog

import (
	"reflect"

	metrics "github.com/rcrowley/go-metrics"
)

// nilRegistry is the go-metrics registry given to sarama: it hands out metrics that record
// nothing. Nothing reads sarama's own metrics (the log's metrics are Prometheus ones, see
// metrics.go), yet by default sarama updates about ten meters and histograms on every
// request (an exponentially decaying sample under a lock for each latency and size) and
// every meter joins a ticker goroutine that wakes every 5 s: CPU that every process,
// every roomserver shard included, spends idle and per record for nobody.
type nilRegistry struct{}

var (
	meterType     = reflect.TypeFor[metrics.Meter]()
	histogramType = reflect.TypeFor[metrics.Histogram]()
	counterType   = reflect.TypeFor[metrics.Counter]()
	gaugeType     = reflect.TypeFor[metrics.Gauge]()
	timerType     = reflect.TypeFor[metrics.Timer]()
)

// nilMetric is the recording-nothing metric of the kind m is or, for a constructor (how
// sarama registers lazily), would make; m itself when it is of no kind sarama uses.
func nilMetric(m any) any {
	t := reflect.TypeOf(m)
	if t != nil && t.Kind() == reflect.Func && t.NumIn() == 0 && t.NumOut() == 1 {
		t = t.Out(0)
	}
	switch t {
	case meterType:
		return metrics.NilMeter{}
	case histogramType:
		return metrics.NilHistogram{}
	case counterType:
		return metrics.NilCounter{}
	case gaugeType:
		return metrics.NilGauge{}
	case timerType:
		return metrics.NilTimer{}
	}
	return m
}

// Each implements metrics.Registry: there is nothing to visit.
func (nilRegistry) Each(func(string, any)) {}

// Get implements metrics.Registry: nothing is kept.
func (nilRegistry) Get(string) any { return nil }

// GetAll implements metrics.Registry: nothing is kept.
func (nilRegistry) GetAll() map[string]map[string]any { return nil }

// GetOrRegister implements metrics.Registry: a metric recording nothing, never kept.
func (nilRegistry) GetOrRegister(_ string, m any) any { return nilMetric(m) }

// Register implements metrics.Registry: nothing is kept.
func (nilRegistry) Register(string, any) error { return nil }

// RunHealthchecks implements metrics.Registry: there are none.
func (nilRegistry) RunHealthchecks() {}

// Unregister implements metrics.Registry: nothing is kept.
func (nilRegistry) Unregister(string) {}

// UnregisterAll implements metrics.Registry: nothing is kept.
func (nilRegistry) UnregisterAll() {}
