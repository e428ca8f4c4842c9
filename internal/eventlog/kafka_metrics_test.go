package eventlog

import (
	"testing"

	metrics "github.com/rcrowley/go-metrics"
)

// TestSaramaRecordsNoMetrics: sarama's per-request meters and histograms (which nothing
// reads) record nothing, and no meter joins go-metrics' ticker: every metric sarama asks
// the configured registry for, directly or through a lazy constructor as sarama does, is a
// nil metric.
func TestSaramaRecordsNoMetrics(t *testing.T) {
	sc, err := saramaConfig(&KafkaConfig{Brokers: []string{"127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	r := sc.MetricRegistry
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"meter", metrics.GetOrRegisterMeter("request-rate", r), metrics.NilMeter{}},
		{"counter", metrics.GetOrRegisterCounter("requests-in-flight", r), metrics.NilCounter{}},
		{"gauge", metrics.GetOrRegisterGauge("batch-size", r), metrics.NilGauge{}},
		{"histogram", r.GetOrRegister("request-latency-in-ms", func() metrics.Histogram {
			return metrics.NewHistogram(metrics.NewExpDecaySample(1028, 0.015))
		}), metrics.NilHistogram{}},
		{"timer", r.GetOrRegister("t", metrics.NewTimer), metrics.NilTimer{}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: sarama gets %T, want %T", c.name, c.got, c.want)
		}
	}
	if n := len(r.GetAll()); n != 0 {
		t.Errorf("the registry keeps %d metrics, want none", n)
	}
}
