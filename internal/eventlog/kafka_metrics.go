package eventlog

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	metrics "github.com/rcrowley/go-metrics"
)

// nilRegistry is the go-metrics registry given to sarama: it hands out metrics that record
// nothing, but for the count of requests of each kind, which it adds to requests
// (dendrite_eventlog_kafka_requests_total; nil: not counted). Nothing reads sarama's own
// metrics (the log's metrics are Prometheus ones, see metrics.go), yet by default sarama
// updates about ten meters and histograms on every request (an exponentially decaying
// sample under a lock for each latency and size) and every meter joins a ticker goroutine
// that wakes every 5 s: CPU that every process, every roomserver shard included, spends
// idle and per record for nobody.
type nilRegistry struct {
	requests *prometheus.CounterVec
}

// requestsMeter is the name prefix of sarama's meter of the requests of one API key, sent
// to any broker ("protocol-requests-rate-3"; the same per broker ends in "-for-broker-N").
const requestsMeter = "protocol-requests-rate-"

// apiNames name the API keys a Kafka log sends; others are counted under their number.
var apiNames = map[int]string{0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 10: "FindCoordinator",
	18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId", 32: "DescribeConfigs"}

// countingMeter is a meter that counts its marks in a Prometheus counter and records
// nothing else.
type countingMeter struct {
	metrics.NilMeter
	c prometheus.Counter
}

// Mark implements metrics.Meter.
func (m countingMeter) Mark(n int64) { m.c.Add(float64(n)) }

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

// GetOrRegister implements metrics.Registry: a metric recording nothing, never kept, or
// for the requests of one API key a meter counting them.
func (r nilRegistry) GetOrRegister(name string, m any) any {
	if r.requests != nil && strings.HasPrefix(name, requestsMeter) {
		if key, err := strconv.Atoi(strings.TrimPrefix(name, requestsMeter)); err == nil {
			api, ok := apiNames[key]
			if !ok {
				api = strconv.Itoa(key)
			}
			return countingMeter{c: r.requests.WithLabelValues(api)}
		}
	}
	return nilMetric(m)
}

// Register implements metrics.Registry: nothing is kept.
func (nilRegistry) Register(string, any) error { return nil }

// RunHealthchecks implements metrics.Registry: there are none.
func (nilRegistry) RunHealthchecks() {}

// Unregister implements metrics.Registry: nothing is kept.
func (nilRegistry) Unregister(string) {}

// UnregisterAll implements metrics.Registry: nothing is kept.
func (nilRegistry) UnregisterAll() {}
