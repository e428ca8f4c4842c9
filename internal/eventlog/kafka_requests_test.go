package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// kafkaRequests is dendrite_eventlog_kafka_requests_total{api} in reg.
func kafkaRequests(t *testing.T, reg *prometheus.Registry, api string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dendrite_eventlog_kafka_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "api" && l.GetValue() == api {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestKafkaRequestsCounted: dendrite_eventlog_kafka_requests_total counts the requests the
// log sends, by API, as the broker receives them (how issue 17 counts the Kafka requests a
// roomserver shard spends per message).
func TestKafkaRequestsCounted(t *testing.T) {
	c := newCluster(t)
	var mu sync.Mutex
	seen := map[string]float64{}
	for key, api := range map[int16]string{kmsg.Metadata.Int16(): "Metadata", kmsg.Produce.Int16(): "Produce", kmsg.ListOffsets.Int16(): "ListOffsets"} {
		c.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			mu.Lock()
			seen[api]++
			mu.Unlock()
			return nil, nil, false
		})
	}
	reg := prometheus.NewRegistry()
	cfg := kafkaConfig(c.ListenAddrs(), 2)
	cfg.Metrics = eventlog.NewMetrics(reg)
	k := newKafka(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		if _, err := k.Produce(ctx, "counted", eventlog.Message{Key: []byte(fmt.Sprint(i)), Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.EndOffsets(ctx, "counted"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Incarnation(ctx, "counted", 0); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for api, want := range seen {
		got := kafkaRequests(t, reg, api)
		if got != want {
			t.Errorf("%s requests counted %v, the broker received %v", api, got, want)
		}
		if got == 0 {
			t.Errorf("no %s request counted", api)
		}
	}
}
